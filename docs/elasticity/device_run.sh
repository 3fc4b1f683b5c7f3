#!/usr/bin/env bash
# How the committed results were produced on one H100 (device machine, one call of < 10 min):
# builds build-gpu/, then runs tools/elasticity.sh stage by stage. Three backbone variants are
# trained side by side (a 4M-parameter model leaves the GPU mostly idle); the one with the best
# full-attention accuracy goes on to the router, baseline and report stages.
# Usage (repo root): OUT=/some/dir bash docs/elasticity/device_run.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/elasticity-out}; mkdir -p "$OUT"
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 )) s] $*" | tee -a "$OUT/driver.log"; }
# `elastic head-scores` must be registered in main.cpp/commands.h (patch a copy that lacks it).
grep -q cmd_head_scores src/cli/commands.h || sed -i 's/^int cmd_inspect(int argc, char\*\* argv);/&\nint cmd_head_scores(int argc, char** argv);/' src/cli/commands.h
grep -q '"head-scores"' src/cli/main.cpp || sed -i 's/^\(\s*\){"eval", {cmd_eval,.*$/&\n\1{"head-scores", {cmd_head_scores, "score heads by needle attention; static head mask"}},/' src/cli/main.cpp
el build; OUT=/tmp/gpu-build bash tools/gpu_check.sh build | tail -2
export ELASTIC_BIN=$PWD/build-gpu/elastic; E=$ELASTIC_BIN; R=${R:-/tmp/ea}; mkdir -p $R
M="--vocab 256 --hidden 256 --layers 4 --heads 8 --kv-heads 4 --head-dim 32 --mlp 1024 --rope-theta 10000"
D="--vocab 256 --answer-len 2 --far-fraction 0.5 --pack-tokens 8192"
declare -A ARCH=([a]=qwen3 [b]=llama [c]=qwen3) LEN=([a]="--min-len 64 --max-len 128" [b]="--min-len 64 --max-len 128" [c]="--min-len 96 --max-len 192")
V=${V:-a b c}
el data; for v in $V; do EL_ARCH=${ARCH[$v]} EL_MODEL="$M" EL_DATA="$D ${LEN[$v]}" tools/elasticity.sh --out $R/$v --stages data > /tmp/data-$v.log 2>&1 & done; wait
C=configs/elasticity-backbone.yaml
for v in $V; do $E train $C --set model.path=$R/$v/init --set data.path=$R/$v/train.bin --set output.dir=$R/t$v --set train.steps=30 >/dev/null 2>&1 & done; wait
ST=$(python3 -c "import json;r=sorted(max(json.loads(l)['step_seconds'] for l in open('$R/t%s/metrics.jsonl'%v) if json.loads(l)['step']>5) for v in '$V'.split());print(r[-1])")
N=$(python3 -c "print(min(${BB_MAX_STEPS:-6000},int(${BB_BUDGET:-230}/$ST)))"); el "backbone step <= $ST s (3 side by side) -> $N steps"
for v in $V; do BB_SET="--set train.steps=$N" tools/elasticity.sh --out $R/$v --stages backbone > $OUT/bb-$v.log 2>&1 & done
wait; el "backbones done"
best=a; bestacc=-1
for v in $V; do
  $E eval $R/$v/backbone --model $R/$v/backbone/model --data $R/$v/eval.bin --routing full --out $R/$v/bbeval 2>&1 | grep -v "\[info\]" >> $OUT/bb-$v.log
  acc=$(python3 -c "import json;print(json.load(open('$R/$v/bbeval/eval.json'))['accuracy'])"); el "backbone $v full-attention accuracy $acc"
  if python3 -c "import sys; sys.exit(0 if $acc > $bestacc else 1)"; then best=$v; bestacc=$acc; fi
done
el "best backbone: $best"
RT_SET="--set train.steps=${RT_STEPS:-300}" tools/elasticity.sh --out $R/$best --stages router,baselines,report > $OUT/pipeline.log 2>&1; el "pipeline rc $?"
(cd $R && tar czf $OUT/elasticity.tgz --exclude=checkpoints --exclude='*.bin' --exclude=init --exclude=model $V); el done
