#!/usr/bin/env bash
# Router training over several nodes listed in a hostfile (one line per node: `host slots=8`).
#   HOSTFILE=launch/hostfile.example launch/multi_node.sh configs/qwen3-8b.yaml --set ...
# The repository (and the model and data paths) must be at the same place on every node.
set -euo pipefail
cd "$(dirname "$0")/.."
HOSTFILE=${HOSTFILE:?set HOSTFILE}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
NODES=$(grep -cv '^\s*\(#\|$\)' "$HOSTFILE")
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export NCCL_ASYNC_ERROR_HANDLING=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-8}
exec mpirun -np $((NODES * GPUS_PER_NODE)) --hostfile "$HOSTFILE" --map-by ppr:${GPUS_PER_NODE}:node --bind-to socket \
  -x NCCL_NVLS_ENABLE -x TORCH_SYMM_MEM_DISABLE_MULTICAST -x NVSHMEM_DISABLE_NVLS -x NCCL_ASYNC_ERROR_HANDLING \
  -x OMP_NUM_THREADS -x NCCL_DEBUG -x NCCL_SOCKET_IFNAME -x NCCL_IB_HCA \
  ${MPIRUN_ARGS:-} build/elastic train "$@" --resume auto
