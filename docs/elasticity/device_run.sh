#!/usr/bin/env bash
# How the committed results were produced on one H100 (device machine, one call of < 10 min):
# builds build-gpu/ (unless it is there), then runs tools/elasticity.sh stage by stage. Backbone
# variants train side by side (a few-million-parameter model leaves the GPU mostly idle) for
# BB_BUDGET seconds each; the one with the best full-attention accuracy goes on to the router,
# baseline and report stages. Variants: V="a b c" (see below); RT_EXTRA: more router --set;
# RV="base long ...": router variants side by side on that backbone (RTX below).
# Usage (repo root): OUT=/some/dir bash docs/elasticity/device_run.sh
# Work goes to a fresh R (default mktemp -d /tmp/ea.XXXX): tools/elasticity.sh reuses finished stages,
# and a warm machine still holds the previous call's (on 2026-11-25 a call silently re-reported them).
# Two calls when one is too short: BB_ONLY=1 stops after the backbones and leaves the best one in
# $OUT/backbone_<variant>.tgz; BACKBONE_TGZ=<that file> V=<variant> skips backbone training, and
# BB_INIT_TGZ=<that file> trains the backbones on from it (e.g. variant k's, then V=m at 1K tokens).
# BB_EXTRA: more backbone --set after the variant's (they win), e.g. "--set train.random_streaming=0.7".
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/elasticity-out}; mkdir -p "$OUT"
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 )) s] $*" | tee -a "$OUT/driver.log"; }
[ -x build-gpu/elastic ] || { el build; OUT=/tmp/gpu-build bash tools/gpu_check.sh build | tail -2; }
export ELASTIC_BIN=$PWD/build-gpu/elastic; E=$ELASTIC_BIN; R=${R:-$(mktemp -d /tmp/ea.XXXX)}; mkdir -p $R
# A variant is the defaults below plus its exceptions. a: the 2026-11-24 recipe; b: every token
# labelled; c: 256-512-token contexts with SSA 16 + 64. d-i (2026-11-25): like a, with
# BB_STAGE1_STEPS of retrieval + multihop first, 8K or 32K-token packs and initial-weight seeds
# (learning the lookups is a sudden, seed-dependent event). j, k (seeds 1, 2; not yet run): the
# five-task stage with random streaming heads (half of the heads on SSA at every step), so that local
# tasks stop depending on far tokens; l: like k with a quarter of the heads on SSA. Backbone lr 3e-3 throughout.
MODEL="--vocab 256 --hidden 256 --layers 4 --heads 8 --kv-heads 4 --head-dim 32 --mlp 1024 --rope-theta 10000"
L1="--min-len 128 --max-len 256" T1="--min-len 64 --max-len 256" S1="--set ssa.sink=8 --set ssa.window=32"
RANDOM_HEADS="--set train.routing=random --set train.random_streaming=0.5"
RANDOM_QUARTER="--set train.routing=random --set train.random_streaming=0.25"
# m (session 6): k at 512-1024-token contexts with SSA 16 + 64, the first step towards 1K-16K; n, o (session 7):
# 1K-2K tokens with SSA 16 + 128, 2K-4K with 16 + 256. Both learn only as a curriculum: BB_INIT_TGZ from the previous length's backbone.
# p, q (session 8): 4K-8K tokens with SSA 16 + 512, 8K-16K with 16 + 1024, the same curriculum on from o.
declare -A LEN=([c]="--min-len 256 --max-len 512" [m]="--min-len 512 --max-len 1024" [n]="--min-len 1024 --max-len 2048" [o]="--min-len 2048 --max-len 4096" [p]="--min-len 4096 --max-len 8192" [q]="--min-len 8192 --max-len 16384")   # eval/router context lengths (default L1)
declare -A TLEN=([c]="--min-len 64 --max-len 512" [m]="--min-len 64 --max-len 1024" [n]="--min-len 64 --max-len 2048" [o]="--min-len 64 --max-len 4096" [p]="--min-len 64 --max-len 8192" [q]="--min-len 64 --max-len 16384")   # backbone training lengths (default T1)
declare -A SSA=([c]="--set ssa.sink=16 --set ssa.window=64" [m]="--set ssa.sink=16 --set ssa.window=64" [n]="--set ssa.sink=16 --set ssa.window=128" [o]="--set ssa.sink=16 --set ssa.window=256" [p]="--set ssa.sink=16 --set ssa.window=512" [q]="--set ssa.sink=16 --set ssa.window=1024")  # default S1
declare -A LABELS=([b]=all)                          # tools/elasticity.sh BB_LABELS (default predictable)
declare -A PACK=([f]=32768 [g]=32768 [h]=32768 [i]=32768 [j]=32768 [k]=32768 [l]=32768 [m]=32768 [n]=32768 [o]=32768 [p]=32768 [q]=32768)  # default 8192
declare -A SEED=([e]=1 [g]=1 [h]=2 [i]=3 [j]=1 [k]=2 [l]=2 [m]=2 [n]=2 [o]=2 [p]=2 [q]=2)  # default 0
declare -A BBX=([j]="$RANDOM_HEADS" [k]="$RANDOM_HEADS" [l]="$RANDOM_QUARTER" [m]="$RANDOM_HEADS" [n]="$RANDOM_HEADS" [o]="$RANDOM_HEADS" [p]="$RANDOM_HEADS" [q]="$RANDOM_HEADS")  # more backbone --set (default none)
D="--vocab 256 --answer-len 2 --pairs 4 --far-fraction 0.5 --pack-tokens 8192"
# Defaults: the session-4 recipe (run 4 of docs/elasticity.md, about 6 minutes on one H100).
V=${V:-k}
export BB_STAGE1_STEPS=${BB_STAGE1_STEPS:-2500}
el "data"
# With BACKBONE_TGZ no backbone trains: a token training set instead of EL_N_TRAIN's default 60,000 samples.
[ -n "${BACKBONE_TGZ:-}" ] && export EL_N_TRAIN=${EL_N_TRAIN:-100}
for v in $V; do
  EL_SEED=${SEED[$v]:-0} BB_LABELS=${LABELS[$v]:-predictable} EL_MODEL="$MODEL" EL_DATA="$D ${LEN[$v]:-$L1} --pack-tokens ${PACK[$v]:-8192}" \
    EL_TRAIN_LEN="${TLEN[$v]:-$T1}" tools/elasticity.sh --out $R/$v --stages data > /tmp/data-$v.log 2>&1 &
done; wait
if [ -n "${BACKBONE_TGZ:-}" ]; then
  for v in $V; do tar -C $R/$v -xzf "$BACKBONE_TGZ"; done; best=${V%% *}; el "backbone from $BACKBONE_TGZ"
else
C=configs/elasticity-backbone.yaml
for v in $V; do $E train $C --set model.path=$R/$v/init --set data.path=$R/$v/train.bin --set output.dir=$R/t$v --set train.steps=30 --set model.device=cuda ${BBX[$v]:-} ${BB_EXTRA:-} >/dev/null 2>&1 & done; wait
# Steps that fit BB_BUDGET: the slowest variant's mean probe step, plus 25%. Up to session 7 this took the
# slowest single step, 2-3x the typical one, and runs used 44-85% of their budget.
ST=$(python3 -c "
import json, statistics
print(max(1.25 * statistics.mean(json.loads(l)['step_seconds'] for l in open('$R/t%s/metrics.jsonl' % v) if json.loads(l)['step'] > 5)
          for v in '$V'.split()))")
N=$(python3 -c "print(min(${BB_MAX_STEPS:-20000},int(${BB_BUDGET:-180}/$ST)))"); el "backbone step ~ $ST s (side by side, with 25% margin) -> $N steps"
for v in $V; do
  # BB_INIT_TGZ: a backbone_<variant>.tgz of an earlier call to continue from (a curriculum).
  INIT=; if [ -n "${BB_INIT_TGZ:-}" ]; then mkdir -p $R/$v/bbinit && tar -C $R/$v/bbinit -xzf "$BB_INIT_TGZ" && INIT=$R/$v/bbinit/backbone/model; fi
  BB_INIT=$INIT BB_SET="--set train.steps=$N --set train.backbone_lr=3e-3 ${BBX[$v]:-} ${BB_EXTRA:-}" tools/elasticity.sh --out $R/$v --stages backbone > $OUT/bb-$v.log 2>&1 &
done
wait; el "backbones done"
best=a; bestacc=-1
for v in $V; do
  $E eval $R/$v/backbone --data $R/$v/eval.bin --routing full --out $R/$v/bbeval 2>&1 | grep -v "\[info\]" >> $OUT/bb-$v.log
  acc=$(python3 -c "import json;print(json.load(open('$R/$v/bbeval/eval.json'))['accuracy'])"); el "backbone $v full-attention accuracy $acc"
  grep -E "^(retrieval|multihop|recent_copy|pattern|instruction) " $OUT/bb-$v.log | tail -5 | tee -a "$OUT/driver.log"
  if python3 -c "import sys; sys.exit(0 if $acc > $bestacc else 1)"; then best=$v; bestacc=$acc; fi
done
el "best backbone: $best"
# The backbone comes back with the results: BACKBONE_TGZ=<it> V=<variant> reuses it in a later call.
tar -C $R/$best -czf $OUT/backbone_$best.tgz backbone/model backbone/metrics.jsonl backbone_lookup/metrics.jsonl 2>/dev/null
if [ -n "${BB_ONLY:-}" ]; then
  (cd $R && tar czf $OUT/elasticity.tgz --exclude=checkpoints --exclude='*.bin' --exclude=init --exclude=model --exclude='t?' $V); el "backbones only: done"; exit 0
fi
fi
# Router variants side by side on the best backbone (RV="base long ..."; default: one run, no suffix).
# Each gets its own directory, $R/<best>.<variant>, sharing the backbone and data by symbolic links.
# The 6000-step variants take about 10 minutes four side by side: give them a call of their own.
# The lookups' targets at exactly 5 and 6 dense heads of 16 (sessions 10-11), and τ annealed to 0.5.
T06875="--set tasks.retrieval.target=0.6875 --set tasks.multihop.target=0.6875"
T0625="--set tasks.retrieval.target=0.625 --set tasks.multihop.target=0.625"
TAU05="--set tau.max=1.0 --set tau.min=0.5"
declare -A RTX=([base]="" [long]="--set train.steps=6000" [long_lr1e3]="--set train.steps=6000 --set optim.lr=1e-3"
  [long_tau05]="--set train.steps=6000 $TAU05"
  [long_pool64]="--set train.steps=6000 --set router.pool_tokens=64"
  [signed]="--set objective.form=signed" [lamlr5e-2]="--set optim.lambda_lr=5e-2"
  [lamlr5e-2_lr2e-3]="--set optim.lambda_lr=5e-2 --set optim.lr=2e-3"
  [lamlr5e-2_pool4]="--set optim.lambda_lr=5e-2 --set router.pool_tokens=4"
  [lamlr5e-2_pool4_seed1]="--set optim.lambda_lr=5e-2 --set router.pool_tokens=4 --set train.seed=1"
  [t06875]="$T06875" [t06875_seed1]="$T06875 --set train.seed=1" [t06875_seed2]="$T06875 --set train.seed=2"
  [t06875_lamlr5e3]="$T06875 --set optim.lambda_lr=5e-3" [t06875_long]="$T06875 --set train.steps=5000"
  [t06875_tau05]="$T06875 $TAU05" [t06875_lr1e3]="$T06875 --set optim.lr=1e-3"
  [t0625]="$T0625" [t0625_seed1]="$T0625 --set train.seed=1" [t0625_seed2]="$T0625 --set train.seed=2"
  [t0625_tau05]="$T0625 $TAU05")
# t06875 (session 10): the lookups' target at exactly 5 dense heads of 16, where 0.7 lies between 5 and 4.
# The lookups lose points on the samples the router gives 4 heads or fewer (docs/elasticity.md, session 10).
# Session 5's base and signed ran with λ lr 5e-2 (then the config's), its lamlr5e-3 and signed_lamlr5e-3
# with 5e-3 (the config's from then to session 8): each run's router.config.yaml has the exact values.
# Since session 9 the config has λ lr 5e-2 and pool_tokens 4, so base equals lamlr5e-2_pool4 (kept: the
# session's runs carry that name).
if [ -z "${RV:-}" ]; then
  RT_SET="--set train.steps=${RT_STEPS:-2000} ${SSA[$best]:-$S1} ${RT_EXTRA:-}" tools/elasticity.sh --out $R/$best --stages router,baselines,report > $OUT/pipeline.log 2>&1; el "pipeline rc $?"
  tail -20 $OUT/pipeline.log
  DIRS=$V
else
  DIRS=$V
  for rv in $RV; do
    [ -n "${RTX[$rv]+x}" ] || { el "unknown router variant $rv"; exit 2; }
    d=$R/$best.$rv; mkdir -p $d; DIRS="$DIRS $best.$rv"
    for f in $R/$best/*; do case $(basename $f) in router|eval|plots|results.*|mask*|commands.txt|pipeline.log) ;; *) ln -sfn $f $d/ ;; esac; done
    # RV_TIMEOUT: a variant still running then is dropped, so the others come back within one call.
    RT_SET="--set train.steps=${RT_STEPS:-2000} ${SSA[$best]:-$S1} ${RT_EXTRA:-} ${RTX[$rv]}" \
      timeout ${RV_TIMEOUT:-400} tools/elasticity.sh --out $d --stages router,baselines,report > $OUT/pipeline-$rv.log 2>&1 &
  done
  wait; el "router variants done"
  for rv in $RV; do el "router variant $rv: ${RTX[$rv]}"; grep -A8 "^| task" $R/$best.$rv/results.md | tee -a "$OUT/driver.log"; done
fi
(cd $R && tar czf $OUT/elasticity.tgz --exclude=checkpoints --exclude='*.bin' --exclude=init --exclude=model --exclude='t?' $DIRS); el done
