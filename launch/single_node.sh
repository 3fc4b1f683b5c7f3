#!/usr/bin/env bash
# Router training on all GPUs of one node: one rank per GPU, bound to its cores.
#   launch/single_node.sh configs/qwen3-8b.yaml --set model.path=... --set data.path=...
# NGPUS defaults to the GPUs nvidia-smi lists.
set -euo pipefail
cd "$(dirname "$0")/.."
NGPUS=${NGPUS:-$(nvidia-smi -L 2>/dev/null | wc -l)}
[ "$NGPUS" -ge 1 ] || { echo "no GPU found (set NGPUS)"; exit 1; }
# NVLink SHARP (multicast) stays off: on shared hosts it can take GPUs out of service.
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export NCCL_ASYNC_ERROR_HANDLING=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-8}
exec mpirun -np "$NGPUS" --bind-to socket --map-by slot \
  -x NCCL_NVLS_ENABLE -x TORCH_SYMM_MEM_DISABLE_MULTICAST -x NVSHMEM_DISABLE_NVLS -x NCCL_ASYNC_ERROR_HANDLING \
  -x OMP_NUM_THREADS -x NCCL_DEBUG \
  ${MPIRUN_ARGS:-} build/elastic train "$@" --resume auto
