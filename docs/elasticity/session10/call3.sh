#!/usr/bin/env bash
# Session 10, device call 3 (repo root, one H100): the curriculum's last step, o (2K-4K tokens), on from
# call 2's n, then router (two seeds side by side: RV="base lamlr5e-2_pool4_seed1"), baselines and report
# (curriculum_run.sh STEPS=o INIT_TGZ=out/backbone_n.tgz). Needs out/backbone_n.tgz (carried).
# Returns backbone_o.tgz, elasticity.tgz (backbone, routers, evals, plots) and call.log.
set -uo pipefail
cd "$(dirname "$0")/../../.." || exit 1
W=/tmp/s10c3; rm -rf $W; mkdir -p $W
exec >> "$OUT/call.log" 2>&1
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 )) s] $*"; }
[ -x build-gpu/elastic ] || { el build; OUT=$W/build bash tools/gpu_check.sh build | tail -2; }
el "curriculum step o from out/backbone_n.tgz, routers ${RV:=base lamlr5e-2_pool4_seed1}"
OUT=$W/cur STEPS=o INIT_TGZ=out/backbone_n.tgz RV="$RV" RV_TIMEOUT=${RV_TIMEOUT:-320} timeout ${CUR_TIMEOUT:-570} bash docs/elasticity/curriculum_run.sh > $W/cur.log 2>&1
el "curriculum rc $?"
cp $W/cur/o/backbone_o.tgz $W/cur/o/elasticity.tgz "$OUT/" 2>/dev/null
cat $W/cur/o/driver.log
el finished
