#!/usr/bin/env bash
# The elasticity pipeline at CPU scale (1M-parameter backbone; 2 cores, about 45 minutes): does a backbone trained with random
# streaming heads (train.routing=random) let the router separate local from lookup tasks? One shared
# first stage on retrieval + multihop (full attention), then the five-task stage with full attention
# (variant off) and with half of the heads on streaming attention (variant rand), then for each the
# router, the baselines and the report of tools/elasticity.sh.
# Usage (repo root): R=/tmp/cpu6 bash docs/elasticity/cpu_run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
E=${ELASTIC_BIN:-$PWD/build/elastic}; R=${R:-/tmp/cpu6}; mkdir -p "$R"
S1=${S1_STEPS:-8000} MIX=${MIX_STEPS:-5000} RT=${RT_STEPS:-300}
D="--vocab 128 --min-len 64 --max-len 128 --answer-len 2 --pairs 4 --far-fraction 0.5 --pack-tokens 2048"
M="--vocab 128 --hidden 128 --layers 4 --heads 4 --kv-heads 2 --head-dim 32 --mlp 512 --rope-theta 10000"
SSA="--set ssa.sink=4 --set ssa.window=16"
C="configs/elasticity-backbone.yaml --set model.device=cpu $SSA --set log.every=500"
cd "$R"
[ -f train.bin ] || $E make-synthetic-data --out train.bin $D --samples 60000 --seed 0 --label-predictable
[ -f train_lookup.bin ] || $E make-synthetic-data --out train_lookup.bin $D --tasks retrieval,multihop --samples 60000 --seed 3
[ -f router.bin ] || $E make-synthetic-data --out router.bin $D --samples 10000 --seed 1
[ -f eval.bin ] || $E make-synthetic-data --out eval.bin $D --samples 500 --seed 2
[ -f init/config.json ] || $E make-tiny-model --arch qwen3 --out init $M --seed 0
cd - > /dev/null
C="$PWD/$C"
cd "$R"
[ -f stage1/model/config.json ] || OMP_NUM_THREADS=2 $E train $C --set model.path=init --set data.path=train_lookup.bin \
  --set output.dir=stage1 --set train.steps=$S1 > stage1.log 2>&1
for v in off rand; do
  X=""; [ $v = rand ] && X="--set train.routing=random --set train.random_streaming=0.5"
  mkdir -p $v && for f in router.bin eval.bin; do ln -sf ../$f $v/$f; done
  [ -f $v/backbone/model/config.json ] || OMP_NUM_THREADS=1 $E train $C --set model.path=stage1/model --set data.path=train.bin \
    --set output.dir=$v/backbone --set train.steps=$MIX $X > $v.log 2>&1 &
done
wait
cd - > /dev/null
for v in off rand; do
  OMP_NUM_THREADS=1 EL_DEVICE=cpu RT_SET="--set train.steps=$RT --set model.device=cpu $SSA" ELASTIC_BIN=$E \
    tools/elasticity.sh --out "$R/$v" --stages router,baselines,report > "$R/$v.pipeline.log" 2>&1 &
done
wait
for v in off rand; do echo "== $v"; sed -n '/^| task | full attention acc/,/^$/p' "$R/$v/results.md"; done
