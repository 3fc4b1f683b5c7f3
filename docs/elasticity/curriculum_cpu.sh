#!/usr/bin/env bash
# Session 6, on the CPU (2 cores, about 25 minutes): do the local tasks (recent_copy, pattern,
# instruction) fail to train at 512-1024-token contexts from scratch, and does a short-context start
# fix that? A 2-layer, 128-wide model, full attention, 8K-token packs:
#   r128:    600 steps at 128-256 tokens (from the random init)
#   r512:    600 steps at 512-1024 tokens (the same labelled tokens a step would need 4x the steps:)
#   r512long: 2400 steps at 512-1024 tokens
#   rcur:    r128, then 600 steps at 512-1024 tokens (the curriculum)
# (and r128 evaluated on the 512-1024-token samples)
# Each is evaluated with full attention on 150 held-out samples of its last training length.
# Usage (repo root, after tools/setup.sh): bash docs/elasticity/curriculum_cpu.sh [OUT]
set -euo pipefail
cd "$(dirname "$0")/../.."
E=$PWD/build/elastic C=$PWD/configs/elasticity-backbone.yaml
OUT=${1:-runs/curriculum_cpu}; mkdir -p "$OUT"; cd "$OUT"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
$E make-tiny-model --arch qwen3 --out init --vocab 256 --hidden 128 --layers 2 --heads 4 --kv-heads 2 --head-dim 32 \
  --mlp 256 --rope-theta 10000 --seed 2 >/dev/null
D="--vocab 256 --answer-len 2 --pairs 4 --far-fraction 0.5 --pack-tokens 8192 --tasks recent_copy,pattern,instruction"
for L in "128 256" "512 1024"; do
  set -- $L
  $E make-synthetic-data --out d_$1.bin $D --min-len $1 --max-len $2 --samples 6000 --seed 0 --label-predictable >/dev/null
  $E make-synthetic-data --out e_$1.bin $D --min-len $1 --max-len $2 --samples 150 --seed 2 >/dev/null
done
train() {  # name, start model, data length, steps
  rm -rf "$1"
  $E train $C --set model.path="$2" --set data.path=d_$3.bin --set output.dir="$1" --set model.device=cpu \
    --set train.steps="$4" --set train.backbone_lr=3e-3 --set train.routing=off 2>&1 | tail -1
  $E eval "$1" --data e_$3.bin --routing full --out "ev_$1" 2>&1 | grep -E "^(task|recent_copy|pattern|instruction|all) "
}
train r128 init 128 600
train r512 init 512 600
train r512long init 512 2400
train rcur r128/model 512 600
# The short-context backbone on the long samples, before the curriculum's second stage.
$E eval r128 --data e_512.bin --routing full --out ev_r128_on512 2>&1 | grep -E "^(task|recent_copy|pattern|instruction|all) "
