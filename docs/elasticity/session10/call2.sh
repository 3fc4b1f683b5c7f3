#!/usr/bin/env bash
# Session 10, device call 2 (repo root, one H100): curriculum steps m (512-1K tokens) and n (1K-2K),
# on from call 1's k (curriculum_run.sh STEPS="m n" INIT_TGZ=out/backbone_k.tgz BB_ONLY=1).
# Needs out/backbone_k.tgz (carried). Returns backbone_m.tgz, backbone_n.tgz, rest.tgz and call.log.
set -uo pipefail
cd "$(dirname "$0")/../../.." || exit 1
W=/tmp/s10c2; rm -rf $W; mkdir -p $W
exec >> "$OUT/call.log" 2>&1
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 )) s] $*"; }
[ -x build-gpu/elastic ] || { el build; OUT=$W/build bash tools/gpu_check.sh build | tail -2; }
el "curriculum steps m n from out/backbone_k.tgz"
OUT=$W/cur STEPS="m n" INIT_TGZ=out/backbone_k.tgz BB_ONLY=1 timeout ${CUR_TIMEOUT:-580} bash docs/elasticity/curriculum_run.sh > $W/cur.log 2>&1
el "curriculum rc $?"
for v in m n; do cp $W/cur/$v/backbone_$v.tgz "$OUT/" 2>/dev/null; cat $W/cur/$v/driver.log; done
el finished
(cd $W && tar czf "$OUT/rest.tgz" --exclude='*.bin' --exclude=model --exclude=checkpoints --exclude=init --exclude=bbinit \
  --exclude=build --exclude="backbone_*.tgz" cur cur.log 2>/dev/null)
