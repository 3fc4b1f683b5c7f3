#!/usr/bin/env bash
# The main job on the embedded default: sets up and builds (tools/setup.sh), makes a tiny
# Qwen3-shaped model and a synthetic long-context dataset, trains the Elastic Attention
# routers on CPU, and evaluates them with hard routing. A few minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
E=build/elastic
RUN=runs/tiny
mkdir -p $RUN
echo "== making the tiny model and synthetic data in $RUN"
$E make-tiny-model --arch qwen3 --out $RUN/model --vocab 512 --hidden 64 --layers 4 --heads 4 --kv-heads 2 \
  --head-dim 16 --mlp 128 --seed 0
$E make-synthetic-data --out $RUN/data.bin --vocab 512 --samples 160 --min-len 128 --max-len 512 --pack-tokens 2048 --seed 0
$E make-synthetic-data --out $RUN/eval.bin --vocab 512 --samples 40 --min-len 128 --max-len 512 --pack-tokens 2048 --seed 1
echo "== training routers: elastic train configs/tiny-cpu.yaml"
$E train configs/tiny-cpu.yaml "$@"
echo "== evaluating with hard routing"
$E eval $RUN/train --data $RUN/eval.bin
