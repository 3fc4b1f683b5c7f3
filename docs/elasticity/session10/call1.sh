#!/usr/bin/env bash
# Session 10, device call 1 (repo root, one H100, $OUT from the device tool), two jobs side by side:
#  - the curriculum from scratch on the session-9 suite, first step: backbone k (128-256 tokens)
#    (curriculum_run.sh STEPS=k BB_ONLY=1);
#  - the lookup experiment at 4K-8K: backbone p2 (session 9) trained on for BB_BUDGET seconds with
#    70% of the heads on SSA at random (a backbone trained at the sparsity the router will target)
#    and, as the control, the same steps with session 9's 50%.
# Needs out/backbone_p2.tgz (carried). Returns backbone_k.tgz, backbone_p_r70.tgz, backbone_p_r50.tgz,
# rest.tgz (driver logs, backbone evals) and call.log.
set -uo pipefail
cd "$(dirname "$0")/../../.." || exit 1
W=/tmp/s10c1; rm -rf $W; mkdir -p $W
exec >> "$OUT/call.log" 2>&1
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 )) s] $*"; }
[ -x build-gpu/elastic ] || { el build; OUT=$W/build bash tools/gpu_check.sh build | tail -2; }
el "curriculum step k; beside it p2 on with 70% and 50% random streaming heads"
PIDS=()
OUT=$W/cur STEPS=k BB_ONLY=1 timeout 430 bash docs/elasticity/curriculum_run.sh > $W/cur.log 2>&1 &
PIDS+=($!)
for r in 70 50; do
  OUT=$W/p_r$r R=$W/rp$r V=p BB_ONLY=1 BB_INIT_TGZ=out/backbone_p2.tgz BB_BUDGET=${BB_BUDGET:-240} BB_STAGE1_STEPS=0 \
    BB_EXTRA="--set train.random_streaming=0.$r" EL_N_TRAIN=60000 EL_N_ROUTER=100 EL_N_EVAL=1000 \
    timeout 420 bash docs/elasticity/device_run.sh > $W/p_r$r.log 2>&1 &
  PIDS+=($!)
done
wait "${PIDS[@]}"; el "backbones done"
cp $W/cur/k/backbone_k.tgz "$OUT/" 2>/dev/null
for r in 70 50; do cp $W/p_r$r/backbone_p.tgz "$OUT/backbone_p_r$r.tgz" 2>/dev/null; done
cat $W/cur/k/driver.log $W/p_r70/driver.log $W/p_r50/driver.log
el finished
(cd $W && tar czf "$OUT/rest.tgz" --exclude='*.bin' --exclude=model --exclude=checkpoints --exclude=init --exclude=bbinit \
  --exclude=build --exclude="backbone_*.tgz" cur p_r70 p_r50 rp70/p/bbeval rp50/p/bbeval cur.log p_r70.log p_r50.log 2>/dev/null)
