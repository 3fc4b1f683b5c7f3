#!/usr/bin/env bash
# Session 9, device call 1 (repo root, one H100, $OUT from the device tool):
#  - backbones p (4K-8K) and q (8K-16K) trained on, side by side, from session 8's, on the suite whose
#    recent_copy question ends with COPY (BB_BUDGET seconds each, five tasks, random streaming heads);
#  - beside them, `elastic eval` exact fp32 against training numerics on session 8's q backbone (full
#    attention and the static mask of router lamlr5e-2) on a q eval set of the new suite; its times are
#    taken next to the backbone training.
# Needs out/backbone_p.tgz and out/backbone_q.tgz (carried). Returns backbone_p.tgz, backbone_q.tgz,
# rest.tgz (driver logs, backbone evals, the comparison) and call.log.
set -uo pipefail
cd "$(dirname "$0")/../../.." || exit 1
W=/tmp/s9c1; rm -rf $W; mkdir -p $W
# Not `exec > >(tee ...)`: bash's `wait` then also waits for the tee. That hung the first run (2026-11-25)
# after everything had finished; a second command fetched the files from $W.
exec >> "$OUT/call.log" 2>&1
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 )) s] $*"; }
[ -x build-gpu/elastic ] || { el build; OUT=$W/build bash tools/gpu_check.sh build | tail -2; }
el "backbones p and q on; beside them the numerics comparison on session 8's q backbone"
for v in p q; do
  N=$([ $v = q ] && echo 30000 || echo 60000)
  OUT=$W/$v R=$W/r$v V=$v BB_ONLY=1 BB_INIT_TGZ=out/backbone_$v.tgz BB_BUDGET=${BB_BUDGET:-180} BB_STAGE1_STEPS=0 \
    EL_N_TRAIN=$N EL_N_ROUTER=100 EL_N_EVAL=1000 timeout 400 bash docs/elasticity/device_run.sh > $W/$v.log 2>&1 &
done
C=$W/cmp; mkdir -p $C/run $C/bb && tar -C $C/bb -xzf out/backbone_q.tgz
cp configs/elasticity-backbone.yaml $C/run/config.yaml
build-gpu/elastic make-synthetic-data --out $C/eval.bin --vocab 256 --answer-len 2 --pairs 4 --far-fraction 0.5 \
  --pack-tokens 32768 --min-len 8192 --max-len 16384 --samples 1000 --seed 2 > /dev/null
EVAL_ARGS="--model $C/bb/backbone/model --set ssa.sink=16 --set ssa.window=1024" timeout 400 \
  bash docs/elasticity/compare_numerics.sh $C/run $C/eval.bin $C/out full fixed:docs/elasticity/session8/run13_q/router_lamlr5e-2/mask.csv &
wait; el "backbones and comparison done"
cp $W/p/backbone_p.tgz $W/q/backbone_q.tgz "$OUT/" 2>/dev/null
cat $W/p/driver.log $W/q/driver.log
el finished
(cd $W && tar czf "$OUT/rest.tgz" --exclude='*.bin' --exclude=model --exclude=checkpoints --exclude=init --exclude=build --exclude="backbone_*.tgz" p q rp/p/bbeval rq/q/bbeval p.log q.log cmp/out 2>/dev/null)
