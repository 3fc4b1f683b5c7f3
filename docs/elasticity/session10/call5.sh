#!/usr/bin/env bash
# Session 10, device call 5 (prepared; session 11 ran it five times with RVO/RVP set, one backbone a call,
# docs/elasticity/session11/commands.txt): router variants
# side by side on session 10's backbones, RT_STEPS steps each, with baselines and report:
#  - o (2K-4K, call 3): RVO (default t06875 t06875_seed1: the lookups' target at five heads of 16);
#  - p (4K-8K, call 4): RVP (default base lamlr5e-2_pool4_seed1: the config's, two seeds).
# Needs out/backbone_o_s10.tgz and out/backbone_p_s10.tgz (carried). Returns router_o.tgz, router_p.tgz
# and call.log. Four routers side by side: allow about 8 minutes (RV_TIMEOUT).
# Dry run on the CPU (build-gpu -> build, EL_DEVICE=cpu EL_N_EVAL=20 EL_N_ROUTER=200 RT_STEPS=3): the four
# routers trained with their targets (0.6875 in t06875's config) and evaluated; the mask stage's head-scores
# (200 samples, exact fp32) outlasted RV_TIMEOUT=800 there.
set -uo pipefail
cd "$(dirname "$0")/../../.." || exit 1
W=/tmp/s10c5; rm -rf $W; mkdir -p $W
exec >> "$OUT/call.log" 2>&1
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 )) s] $*"; }
[ -x build-gpu/elastic ] || { el build; OUT=$W/build bash tools/gpu_check.sh build | tail -2; }
el "routers on o (${RVO=t06875 t06875_seed1}) and p (${RVP=base lamlr5e-2_pool4_seed1})"
PIDS=()
for v in o p; do
  rv=$([ $v = o ] && echo "$RVO" || echo "$RVP")
  [ -n "$rv" ] || continue
  OUT=$W/$v R=$W/r$v V=$v BACKBONE_TGZ=out/backbone_${v}_s10.tgz BB_STAGE1_STEPS=0 EL_N_TRAIN=100 EL_N_EVAL=${EL_N_EVAL:-2000} \
    RT_STEPS=${RT_STEPS:-2000} RV="$rv" RV_TIMEOUT=${RV_TIMEOUT:-420} bash docs/elasticity/device_run.sh > $W/$v.log 2>&1 &
  PIDS+=($!)
done
wait "${PIDS[@]}"; el "routers done"
for v in o p; do
  [ -f $W/$v/driver.log ] && cat $W/$v/driver.log
  [ -f $W/$v/elasticity.tgz ] && cp $W/$v/elasticity.tgz "$OUT/router_$v.tgz"
done
el finished
