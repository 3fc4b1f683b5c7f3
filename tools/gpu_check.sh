#!/usr/bin/env bash
# Everything this project checks and measures on the GPU machine, in stages, so one device
# call can run several and a later call reuses the build (build-gpu/ stays while warm).
#   tools/gpu_check.sh build test golden bench-forward
# Writes logs and results under $OUT (default /tmp/elastic-gpu-out); small files only.
# The build finds the cuDNN frontend headers (cuDNN's band, attention/cudnn_band.h) in .venv: carry
# .venv/lib/python3.11/site-packages/include to the GPU machine, which cannot install them.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
OUT=${OUT:-/tmp/elastic-gpu-out}
mkdir -p "$OUT"
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
BUILD=build-gpu
status=0
# Where the routers start: streaming about this fraction of the heads, the paper's target, in both
# this trainer's benchmarks and the port's (routing stays live; each measures its Ω_MSR).
OMEGA=${OMEGA:-0.7}
stage() { echo "=== $1 ($(date +%T))"; }
# Random-weight bf16 models of the real shapes (ELASTIC.md §2), made once per machine.
model_dir() {
  local M=/tmp/$1-random shape
  case "$1" in
    qwen3-4b) shape="--arch qwen3 --vocab 151936 --hidden 2560 --layers 36 --heads 32 --kv-heads 8 --head-dim 128 --mlp 9728 --tie" ;;
    qwen3-8b) shape="--arch qwen3 --vocab 151936 --hidden 4096 --layers 36 --heads 32 --kv-heads 8 --head-dim 128 --mlp 12288" ;;
    llama3.1-8b) shape="--arch llama --vocab 128256 --hidden 4096 --layers 32 --heads 32 --kv-heads 8 --head-dim 128 --mlp 14336 --rope-theta 500000" ;;
    *) echo "unknown shape $1" >&2; return 1 ;;
  esac
  [ -f $M/config.json ] || $BUILD/elastic make-tiny-model $shape --out $M --dtype bfloat16 --device cuda --shard-mb 4096 >/dev/null 2>&1
  echo $M
}

for s in "$@"; do
  case "$s" in
    build)
      stage build
      TORCH_ROOT=$(python3 -c 'import torch, os; print(os.path.dirname(torch.__file__))')
      nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
      cmake -S . -B $BUILD -G Ninja -DELASTIC_CUDA=ON -DTORCH_ROOT="$TORCH_ROOT" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
        > "$OUT/cmake.log" 2>&1 || { tail -40 "$OUT/cmake.log"; exit 1; }
      grep -i "warning" -A3 "$OUT/cmake.log" | head -20
      (time ninja -C $BUILD -j 16 ${BUILD_TARGETS:-elastic elastic_tests}) > "$OUT/build.log" 2>&1 || { grep -E "error|FAILED" "$OUT/build.log" | head -40; exit 1; }
      tail -4 "$OUT/build.log" ;;
    test)
      stage test
      $BUILD/elastic_tests --gtest_filter="${TEST_FILTER:-*}" > "$OUT/tests.log" 2>&1
      rc=$?
      grep -E "^\[  (FAILED|PASSED|SKIPPED) |Failure|Expected|actual|Segmentation" "$OUT/tests.log" | head -40
      [ $rc -eq 0 ] || { echo "elastic_tests exit $rc; last lines:"; tail -15 "$OUT/tests.log"; status=1; } ;;
    golden)
      stage golden
      rm -rf /tmp/golden && python3 tools/gen_model_golden.py --out /tmp/golden --elastic $BUILD/elastic || status=1
      tar -C /tmp/golden -czf "$OUT/golden.tar.gz" qwen3 llama qwen2 golden_report.json ;;
    bench-forward)
      stage bench-forward
      M=$(model_dir qwen3-8b)
      du -sh $M
      $BUILD/elastic bench-forward --model $M --tokens 8192,32768 --samples 3 --repeat 3 --out "$OUT/bench_forward.json" \
        2>&1 | grep -v '^ ' | tail -8 || status=1 ;;
    bench-train)
      # Every shape of ELASTIC.md §2 at BENCH_TOKENS, samples split by BENCH_MIX (1,1,1: thirds, as
      # the reference runs; 1,1,2: 16K + 16K + 32K at 64K).
      stage bench-train
      for shape in ${BENCH_MODELS:-qwen3-4b qwen3-8b llama3.1-8b}; do
        M=$(model_dir $shape)
        $BUILD/elastic bench-train --model $M --tokens ${BENCH_TOKENS:-16384,32768,65536} --mix ${BENCH_MIX:-1,1,1} --steps 3 \
          --omega $OMEGA ${BENCH_FLAGS:-} --out "$OUT/bench_train_$shape.json" 2>&1 | grep -E "info|warn|error" | grep -v "model init" | tail -8 || status=1
      done ;;
    bench-gather)
      # The routing-aware backward (and no-grad forward) over the selected heads only, against every head
      # with dO masked: --gather-min-len for each of GATHER_LENS (0: selected everywhere; 1000000: every head).
      stage bench-gather
      for shape in ${BENCH_MODELS:-qwen3-8b}; do
        M=$(model_dir $shape)
        for g in ${GATHER_LENS:-0 1000000}; do
          $BUILD/elastic bench-train --model $M --tokens ${GATHER_TOKENS:-16384} --mix 1,1,1 --steps 3 --keep-layers auto \
            --no-breakdown --gather-min-len $g ${BENCH_FLAGS:-} --out "$OUT/bench_gather_${shape}_$g.json" 2>&1 |
            grep -E "T=|error" | tail -4 || status=1
        done
      done ;;
    bench-vary)
      # Packs of real data bring new sample lengths every step, and cuDNN builds a plan for each new
      # (padded) shape: the same packs with fixed lengths and with new lengths every step (VARY_STEPS
      # steps, so the plans' fading shows in step_ms_each and cudnn_new_shapes_each), per full-attention
      # backend (FA_BACKENDS) and head split (HEAD_SPLITS: "off", or the --head-split-min-len from which
      # subsets of heads run one KV head a call), and the PyTorch port both ways (unless NO_REFERENCE=1).
      stage bench-vary
      for shape in ${BENCH_MODELS:-qwen3-8b}; do
        M=$(model_dir $shape)
        for fa in ${FA_BACKENDS:-cudnn flash}; do
          for split in ${HEAD_SPLITS:-off}; do
            sf=""; [ "$split" = off ] || sf="--head-split-min-len $split"
            for v in "" --vary-lengths; do
              $BUILD/elastic bench-train --model $M --tokens ${BENCH_TOKENS:-65536} --mix ${BENCH_MIX:-1,1,1} --steps ${VARY_STEPS:-8} \
                --no-breakdown --fa-backend $fa $sf $v --omega $OMEGA ${BENCH_FLAGS:---keep-layers auto} \
                --out "$OUT/bench_vary_${shape}_${fa}_split-${split}${v}.json" 2>&1 | grep -E "step |error" | tail -2 || status=1
            done
          done
        done
        # The PyTorch port as the reference runs it (every layer checkpointed), the same two ways.
        [ -n "${NO_REFERENCE:-}" ] && continue
        for v in "" --vary-lengths; do
          timeout ${REF_TIMEOUT:-300} python3 tools/bench_reference.py --preset $shape --tokens ${BENCH_TOKENS:-65536} \
            --warmup 1 --steps 3 $v --omega $OMEGA --out "$OUT/bench_vary_reference_${shape}${v}.json" 2>&1 | tail -1 || status=1
        done
      done ;;
    bench-longest)
      # The longest pack that trains, with checkpointed layer inputs on the GPU and offloaded to the host.
      stage bench-longest
      for shape in ${BENCH_MODELS:-qwen3-8b}; do
        M=$(model_dir $shape)
        for f in "" --offload; do
          $BUILD/elastic bench-train --model $M --tokens ${LONG_TOKENS:-98304,131072} --mix ${BENCH_MIX:-1,1,1} --steps 2 --no-breakdown ${BENCH_FLAGS:-} $f \
            --out "$OUT/bench_longest_$shape${f/--/_}.json" 2>&1 | grep -E "info|warn|error" | grep -v "model init" | tail -4 || status=1
        done
      done ;;
    bench-keep)
      # Layers kept without recompute (train.keep_layers): step time and peak memory, pack by pack.
      # KEEP_SWEEP: "TOKENS:k1,k2 ..." for this trainer; KEEP_REF: the same for the PyTorch port.
      stage bench-keep
      M=$(model_dir ${KEEP_MODEL:-qwen3-8b})
      rm -rf /tmp/keep && mkdir -p /tmp/keep
      for spec in ${KEEP_SWEEP:-16384:0,10,16,22,28 32768:0,5,10 65536:0,3}; do
        T=${spec%%:*}; ks=${spec#*:}
        for k in ${ks//,/ }; do
          $BUILD/elastic bench-train --model $M --tokens $T --mix ${BENCH_MIX:-1,1,1} --steps 3 --no-breakdown --keep-layers $k \
            ${BENCH_FLAGS:-} --out /tmp/keep/elastic_${T}_$k.json 2>&1 | grep -E "T=|error" | tail -2 || status=1
        done
      done
      for spec in ${KEEP_REF:-}; do
        T=${spec%%:*}; ks=${spec#*:}
        for k in ${ks//,/ }; do
          timeout ${REF_TIMEOUT:-300} python3 tools/bench_reference.py --preset ${KEEP_MODEL:-qwen3-8b} --tokens $T --keep-layers $k \
            --warmup 1 --steps ${REF_STEPS:-2} --out /tmp/keep/reference_${T}_$k.json 2>&1 | tail -2 || status=1
        done
      done
      tar -czf "$OUT/bench_keep.tgz" -C /tmp keep ;;
    train-keep)
      # The trainer's train.keep_layers: auto on the GPU: the measured step, then what each step kept.
      stage train-keep
      D=/tmp/train-keep; rm -rf $D; mkdir -p $D
      $BUILD/elastic make-tiny-model --arch qwen3 --out $D/model --vocab 512 --hidden 256 --layers 8 --heads 8 --kv-heads 4 \
        --head-dim 32 --mlp 512 --seed 0 >/dev/null 2>&1 || status=1
      $BUILD/elastic make-synthetic-data --out $D/data.bin --vocab 512 --samples 200 --min-len 512 --max-len 2048 \
        --pack-tokens 8192 --seed 0 >/dev/null 2>&1 || status=1
      $BUILD/elastic train configs/tiny-cpu.yaml --set model.path=$D/model --set data.path=$D/data.bin --set output.dir=$D/run \
        --set model.device=cuda --set train.steps=4 --set train.keep_layers=auto 2>&1 | grep -E "keep_layers|error" || status=1
      python3 -c "import json; print('keep_layers per step:', [json.loads(l)['keep_layers'] for l in open('$D/run/metrics.jsonl')])" || status=1
      cp $D/run/metrics.jsonl "$OUT/train_keep_metrics.jsonl" ;;
    bench-reference)
      # The PyTorch port of the same step (tools/bench_reference.py), side by side.
      stage bench-reference
      for shape in ${REF_MODELS:-qwen3-4b qwen3-8b llama3.1-8b}; do
        timeout ${REF_TIMEOUT:-300} python3 tools/bench_reference.py --preset $shape --tokens ${REF_TOKENS:-16384,32768,65536} \
          --warmup 1 --steps ${REF_STEPS:-2} --omega $OMEGA ${REF_FLAGS:-} --out "$OUT/bench_reference_$shape.json" 2>&1 | tail -6 || status=1
      done ;;
    warm-reference)
      # The port's torch.compile work (inductor, Triton autotuning) for every shape and pack, on one layer,
      # so the measured runs hit a warm cache: a fresh machine's first port run took 465 s before its first
      # step. Meant to run in the background of the build.
      stage warm-reference
      for shape in ${REF_MODELS:-qwen3-4b qwen3-8b llama3.1-8b}; do
        timeout ${REF_TIMEOUT:-300} python3 tools/bench_reference.py --preset $shape --layers 1 --tokens ${REF_TOKENS:-16384,32768,65536} \
          --warmup 1 --steps 1 ${REF_FLAGS:-} 2>&1 | tail -2 || status=1
      done ;;
    bench-reference-same)
      # The port keeping the layers this trainer kept, read from bench-train's $OUT/bench_train_<shape>.json
      # (bench/reference_keep_layers.sh runs the cells; its log is $OUT/reference_keep.log).
      stage bench-reference-same
      cells=$(for shape in ${REF_MODELS:-qwen3-4b qwen3-8b llama3.1-8b}; do
        python3 -c "import json,sys; [print(f\"{sys.argv[2]}:{r['tokens']}:{r['keep_layers']}\") for r in json.load(open(sys.argv[1]))['runs']]" \
          "$OUT/bench_train_$shape.json" "$shape"
      done) || status=1
      CELLS="$cells" OUT="$OUT" bash bench/reference_keep_layers.sh || status=1
      tail -20 "$OUT/reference_keep.log" ;;
    attn-backends)
      stage attn-backends
      python3 bench/attention_backends.py --out "$OUT/attention_backends.json" 2>&1 | tail -8 || status=1 ;;
    profile)
      # Device time by kernel category of one Qwen3-8B step, this trainer and (unless NO_REFERENCE=1)
      # the PyTorch port.
      stage profile
      M=$(model_dir qwen3-8b)
      rm -f /tmp/trace_elastic_*.json  # a warm machine keeps the last call's traces
      $BUILD/elastic bench-train --model $M --tokens ${PROFILE_TOKENS:-16384,65536} --mix 1,1,1 --steps 2 --no-breakdown \
        --profile --trace /tmp/trace_elastic ${BENCH_FLAGS:-} --out "$OUT/profile_elastic_qwen3-8b.json" 2>&1 | grep -E "info|warn|error" | tail -4 || status=1
      # Where the GPU idled: the host operators open at each gap (tools/trace_gaps.py).
      for t in /tmp/trace_elastic_*.json; do python3 tools/trace_gaps.py $t --top 12 || status=1; done
      [ -n "${NO_REFERENCE:-}" ] && continue
      timeout ${REF_TIMEOUT:-300} python3 tools/bench_reference.py --preset qwen3-8b --tokens ${PROFILE_TOKENS:-16384,65536} \
        --warmup 1 --steps 2 --profile --out "$OUT/profile_reference_qwen3-8b.json" 2>&1 | tail -3 || status=1
      python3 tools/compare_profiles.py "$OUT/profile_elastic_qwen3-8b.json" "$OUT/profile_reference_qwen3-8b.json" || status=1 ;;
    bench-kernels)
      stage bench-kernels
      $BUILD/elastic bench-kernels --tokens ${KERNEL_TOKENS:-65536} --out "$OUT/bench_kernels.json" 2>&1 | grep -E "info|error" | cut -c1-220 || status=1 ;;
    bench-prefill)
      stage bench-prefill
      M=$(model_dir qwen3-8b)
      $BUILD/elastic bench-prefill --model $M --tokens ${PREFILL_TOKENS:-32768,65536,131072} --omega 0.7 --repeat 2 ${PREFILL_FLAGS:-} \
        --out "$OUT/bench_prefill_qwen3-8b.json" 2>&1 | grep -E "info|error" | tail -5 || status=1 ;;
    bench-prefill-router)
      # The same with a trained, exported router deciding per input (its time counts, Ω_MSR measured).
      # No trained Qwen3-8B router exists here: routers train on the random Qwen3-8B itself for
      # PREFILL_ROUTER_STEPS steps at target 0.7 on short synthetic samples, so they decide on its keys
      # (40 steps left the router undecided, argmax streaming everywhere; 300 take about 2 minutes).
      stage bench-prefill-router
      M=$(model_dir qwen3-8b) R=/tmp/prefill-router
      rm -rf $R && mkdir -p $R
      $BUILD/elastic make-synthetic-data --out $R/data.bin --vocab 151936 --samples 160 --min-len 128 --max-len 512 \
        --pack-tokens 2048 --seed 0 > $R/log 2>&1 &&
      $BUILD/elastic train configs/tiny-cpu.yaml --set model.path=$M --set model.dtype=bfloat16 --set model.device=cuda \
        --set data.path=$R/data.bin --set output.dir=$R/train --set train.steps=${PREFILL_ROUTER_STEPS:-300} \
        --set ssa.sink=128 --set ssa.window=2048 --set router.pool_tokens=100 --set tasks.summarization.target=0.7 \
        --set tasks.code.target=0.7 --set tasks.icl.target=0.7 >> $R/log 2>&1 &&
      $BUILD/elastic export $R/train --out $R/exported >> $R/log 2>&1 || { tail -20 $R/log; status=1; }
      tail -1 $R/train/metrics.jsonl | cut -c1-300
      $BUILD/elastic bench-prefill --model $M --router $R/exported --tokens ${PREFILL_TOKENS:-32768,65536,131072} --repeat 2 \
        ${PREFILL_FLAGS:-} --out "$OUT/bench_prefill_router_qwen3-8b.json" 2>&1 | grep -E "info|error" | tail -5 || status=1 ;;
    crash)
      stage crash
      for t in ${CRASH_TESTS:-Safetensors.RoundTripAllDtypes}; do
        cuda-gdb -q -batch -ex run -ex bt --args $BUILD/elastic_tests --gtest_filter=$t 2>&1 | grep -E "^#|signal|Program" | head -30
      done ;;
    nccl)
      stage nccl
      M=$(model_dir qwen3-4b)
      D=/tmp/synth-32k.bin
      [ -f $D ] || $BUILD/elastic make-synthetic-data --out $D --vocab 151936 --samples 24 --min-len 6000 --max-len 16000 \
        --pack-tokens 32768 --answer-len 32 2>&1 | tail -1
      C="--set model.path=$M --set data.path=$D --set train.steps=4 --set checkpoint.every=0 --set optim.warmup_fraction=0"
      $BUILD/elastic train configs/qwen3-4b.yaml $C --set train.micro_batches=1 --set output.dir=/tmp/run-single 2>&1 | grep -E "train [0-9]|error|final" | tail -3
      mpirun --allow-run-as-root -np 1 -x NCCL_NVLS_ENABLE -x TORCH_SYMM_MEM_DISABLE_MULTICAST -x NVSHMEM_DISABLE_NVLS \
        $BUILD/elastic train configs/qwen3-4b.yaml $C --set train.micro_batches=1 --set output.dir=/tmp/run-nccl 2>&1 | grep -E "train [0-9]|error|final|rank" | tail -3
      python3 - <<'PY' > "$OUT/nccl_world1.json"
import json
def load(p): return [json.loads(l) for l in open(p)]
a, b = load("/tmp/run-single/metrics.jsonl"), load("/tmp/run-nccl/metrics.jsonl")
print(json.dumps({"steps": len(a), "step_seconds_single": [x["step_seconds"] for x in a],
  "step_seconds_mpi_nccl_world1": [x["step_seconds"] for x in b],
  "lm_loss_single": [x["lm_loss"] for x in a], "lm_loss_nccl": [x["lm_loss"] for x in b],
  "omega_single": [x["omega_msr"] for x in a], "omega_nccl": [x["omega_msr"] for x in b],
  "peak_memory_gb": [x["peak_memory_gb"] for x in b], "tokens_per_s_nccl": [x["tokens_per_s"] for x in b]}, indent=1))
PY
      cat "$OUT/nccl_world1.json" | head -30 ;;
    interop)
      stage interop
      R=/tmp/interop && rm -rf $R && mkdir -p $R
      $BUILD/elastic make-tiny-model --arch qwen3 --out $R/model --vocab 512 --layers 3 >/dev/null 2>&1
      $BUILD/elastic make-synthetic-data --out $R/data.bin --vocab 512 --samples 20 --pack-tokens 2048 >/dev/null 2>&1
      $BUILD/elastic train --set model.path=$R/model --set data.path=$R/data.bin --set output.dir=$R/run --set train.steps=5 \
        --set ssa.sink=8 --set ssa.window=32 --set router.pool_tokens=16 --set optim.lr=0.01 --set model.device=cpu >/dev/null 2>&1 || echo "train failed"
      $BUILD/elastic export $R/run --out $R/export >/dev/null 2>&1 || echo "export failed"
      $BUILD/elastic inspect --model $R/model --router $R/export --data $R/data.bin --dump $R/dump.safetensors 2>&1 | head -8
      python3 tools/router_interop.py --router $R/export --dump $R/dump.safetensors | tee "$OUT/interop.json" || status=1 ;;
    *) echo "unknown stage $s"; exit 2 ;;
  esac
done
exit $status
