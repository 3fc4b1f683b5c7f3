#!/usr/bin/env bash
# Session 9, device call 3 (repo root, one H100): router variants side by side on two backbones:
#  - p2 (call 1): RVP (default lamlr5e-2_pool4: the router pools the last 4 prompt tokens, the
#    question block, where COPY or a lookup's key sits);
#  - q3 (call 2): RVQ (default lamlr5e-2 lamlr5e-2_pool4).
# RT_STEPS steps each, with baselines and report. Needs out/backbone_p2.tgz and out/backbone_q3.tgz
# (carried). Returns router_p.tgz, router_q.tgz and call.log.
set -uo pipefail
cd "$(dirname "$0")/../../.." || exit 1
W=/tmp/s9c3; rm -rf $W; mkdir -p $W
exec >> "$OUT/call.log" 2>&1
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 )) s] $*"; }
[ -x build-gpu/elastic ] || { el build; OUT=$W/build bash tools/gpu_check.sh build | tail -2; }
# RVP="" or RVQ="" leaves that backbone out (call 4: RVP="" RVQ="lamlr5e-2_pool4 lamlr5e-2").
el "routers on p2 (${RVP=lamlr5e-2_pool4}) and q3 (${RVQ=lamlr5e-2 lamlr5e-2_pool4})"
PIDS=()
if [ -n "$RVP" ]; then
  OUT=$W/p R=$W/rp V=p BACKBONE_TGZ=out/backbone_p2.tgz BB_STAGE1_STEPS=0 EL_N_TRAIN=100 EL_N_ROUTER=10000 EL_N_EVAL=1000 \
    RT_STEPS=${RT_STEPS:-3000} RV="$RVP" RV_TIMEOUT=${RV_TIMEOUT:-420} bash docs/elasticity/device_run.sh > $W/p.log 2>&1 &
  PIDS+=($!)
fi
if [ -n "$RVQ" ]; then
  OUT=$W/q R=$W/rq V=q BACKBONE_TGZ=out/backbone_q3.tgz BB_STAGE1_STEPS=0 EL_N_TRAIN=100 EL_N_ROUTER=6000 EL_N_EVAL=1000 \
    RT_STEPS=${RT_STEPS:-3000} RV="$RVQ" RV_TIMEOUT=${RV_TIMEOUT:-420} bash docs/elasticity/device_run.sh > $W/q.log 2>&1 &
  PIDS+=($!)
fi
wait "${PIDS[@]}"; el "routers done"
for v in p q; do
  [ -f $W/$v/driver.log ] && cat $W/$v/driver.log
  [ -f $W/$v/elasticity.tgz ] && cp $W/$v/elasticity.tgz "$OUT/router_$v.tgz"
done
el finished
