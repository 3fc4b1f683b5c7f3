#!/usr/bin/env bash
# Everything this project checks and measures on the GPU machine, in stages, so one device
# call can run several and a later call reuses the build (build-gpu/ stays while warm).
#   tools/gpu_check.sh build test golden bench-forward
# Writes logs and results under $OUT (default /tmp/elastic-gpu-out); small files only.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/elastic-gpu-out}
mkdir -p "$OUT"
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
BUILD=build-gpu
status=0
stage() { echo "=== $1 ($(date +%T))"; }

for s in "$@"; do
  case "$s" in
    build)
      stage build
      TORCH_ROOT=$(python3 -c 'import torch, os; print(os.path.dirname(torch.__file__))')
      nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
      cmake -S . -B $BUILD -G Ninja -DELASTIC_CUDA=ON -DTORCH_ROOT="$TORCH_ROOT" -DCMAKE_BUILD_TYPE=Release \
        > "$OUT/cmake.log" 2>&1 || { tail -40 "$OUT/cmake.log"; exit 1; }
      grep -i "warning" -A3 "$OUT/cmake.log" | head -20
      (time ninja -C $BUILD -j 16 elastic elastic_tests) > "$OUT/build.log" 2>&1 || { grep -E "error|FAILED" "$OUT/build.log" | head -40; exit 1; }
      tail -4 "$OUT/build.log" ;;
    test)
      stage test
      $BUILD/elastic_tests > "$OUT/tests.log" 2>&1
      rc=$?
      grep -E "^\[  (FAILED|PASSED|SKIPPED) |Failure|Expected|actual|Segmentation" "$OUT/tests.log" | head -40
      [ $rc -eq 0 ] || { echo "elastic_tests exit $rc; last lines:"; tail -15 "$OUT/tests.log"; status=1; } ;;
    golden)
      stage golden
      rm -rf /tmp/golden && python3 tools/gen_model_golden.py --out /tmp/golden --elastic $BUILD/elastic || status=1
      tar -C /tmp/golden -czf "$OUT/golden.tar.gz" qwen3 llama qwen2 golden_report.json ;;
    bench-forward)
      stage bench-forward
      M=/tmp/qwen3-8b-random
      [ -f $M/config.json ] || (time $BUILD/elastic make-tiny-model --arch qwen3 --out $M --vocab 151936 --hidden 4096 \
        --layers 36 --heads 32 --kv-heads 8 --head-dim 128 --mlp 12288 --dtype bfloat16 --device cuda --shard-mb 4096) 2>&1 | tail -4
      du -sh $M
      $BUILD/elastic bench-forward --model $M --tokens 8192,32768 --samples 3 --repeat 3 --out "$OUT/bench_forward.json" \
        2>&1 | grep -v '^ ' | tail -8 || status=1 ;;
    bench-train)
      stage bench-train
      M=/tmp/qwen3-4b-random
      [ -f $M/config.json ] || $BUILD/elastic make-tiny-model --arch qwen3 --out $M --vocab 151936 --hidden 2560 \
        --layers 36 --heads 32 --kv-heads 8 --head-dim 128 --mlp 9728 --tie --dtype bfloat16 --device cuda --shard-mb 4096 2>&1 | tail -1
      $BUILD/elastic bench-train --model $M --tokens ${BENCH_TOKENS:-32768,65536} --samples 3 --steps 3 \
        --out "$OUT/bench_train_qwen3-4b.json" 2>&1 | grep -E "info|error" | tail -6 || status=1 ;;
    *) echo "unknown stage $s"; exit 2 ;;
  esac
done
exit $status
