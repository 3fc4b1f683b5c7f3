#!/usr/bin/env bash
# Session 9, device call 7 (repo root, one H100): router variants RV (default lamlr5e-2_pool4) side by
# side on backbones n2 (1K-2K tokens) and o2 (2K-4K) of call 6, RT_STEPS steps each, with baselines
# and report. Needs out/backbone_n2.tgz and out/backbone_o2.tgz (carried). Returns router_n.tgz,
# router_o.tgz and call.log.
set -uo pipefail
cd "$(dirname "$0")/../../.." || exit 1
W=/tmp/s9c7; rm -rf $W; mkdir -p $W
exec >> "$OUT/call.log" 2>&1
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 )) s] $*"; }
[ -x build-gpu/elastic ] || { el build; OUT=$W/build bash tools/gpu_check.sh build | tail -2; }
el "routers ${RV:=lamlr5e-2_pool4} on n2 and o2"
PIDS=()
for v in n o; do
  OUT=$W/$v R=$W/r$v V=$v BACKBONE_TGZ=out/backbone_${v}2.tgz BB_STAGE1_STEPS=0 EL_N_TRAIN=100 EL_N_EVAL=2000 \
    RT_STEPS=${RT_STEPS:-2500} RV="$RV" RV_TIMEOUT=${RV_TIMEOUT:-400} bash docs/elasticity/device_run.sh > $W/$v.log 2>&1 &
  PIDS+=($!)
done
wait "${PIDS[@]}"; el "routers done"
for v in n o; do
  [ -f $W/$v/driver.log ] && cat $W/$v/driver.log
  [ -f $W/$v/elasticity.tgz ] && cp $W/$v/elasticity.tgz "$OUT/router_$v.tgz"
done
el finished
