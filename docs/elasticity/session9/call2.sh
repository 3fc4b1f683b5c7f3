#!/usr/bin/env bash
# Session 9, device call 2 (repo root, one H100): side by side
#  - routers on backbone p2 (call 1's p, on the suite with COPY), variants RV (default lamlr5e-2 and
#    lamlr5e-2_lr2e-3), RT_STEPS steps each, with baselines and report;
#  - backbone q3: q2 trained on for BB_BUDGET seconds (q2's pattern accuracy was 0.90).
# Needs out/backbone_p2.tgz and out/backbone_q2.tgz (carried). Returns router.tgz, backbone_q.tgz,
# rest.tgz and call.log.
set -uo pipefail
cd "$(dirname "$0")/../../.." || exit 1
W=/tmp/s9c2; rm -rf $W; mkdir -p $W
exec >> "$OUT/call.log" 2>&1
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 )) s] $*"; }
[ -x build-gpu/elastic ] || { el build; OUT=$W/build bash tools/gpu_check.sh build | tail -2; }
el "routers on p2 (${RV:=lamlr5e-2 lamlr5e-2_lr2e-3}), backbone q3 beside them"
OUT=$W/p R=$W/rp V=p BACKBONE_TGZ=out/backbone_p2.tgz BB_STAGE1_STEPS=0 EL_N_TRAIN=100 EL_N_ROUTER=10000 EL_N_EVAL=1000 \
  RT_STEPS=${RT_STEPS:-3000} RV="$RV" RV_TIMEOUT=${RV_TIMEOUT:-360} bash docs/elasticity/device_run.sh > $W/p.log 2>&1 &
P1=$!
OUT=$W/q R=$W/rq V=q BB_ONLY=1 BB_INIT_TGZ=out/backbone_q2.tgz BB_BUDGET=${BB_BUDGET:-200} BB_STAGE1_STEPS=0 \
  EL_N_TRAIN=30000 EL_N_ROUTER=100 EL_N_EVAL=1000 timeout 380 bash docs/elasticity/device_run.sh > $W/q.log 2>&1 &
P2=$!
wait $P1 $P2; el "routers and backbone done"
cat $W/p/driver.log $W/q/driver.log
cp $W/p/elasticity.tgz "$OUT/router.tgz"; cp $W/q/backbone_q.tgz "$OUT/backbone_q.tgz"
(cd $W && tar czf "$OUT/rest.tgz" --exclude='*.bin' --exclude=model --exclude=checkpoints --exclude=init --exclude=build \
  --exclude="*.tgz" --exclude=bbinit p q rq/q/bbeval rq/q/commands.txt p.log q.log)
el finished
