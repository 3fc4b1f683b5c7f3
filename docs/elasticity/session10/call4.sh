#!/usr/bin/env bash
# Session 10, device call 4 (repo root, one H100): the curriculum on to p (4K-8K tokens) from call 3's o,
# backbone only (curriculum_run.sh STEPS=p INIT_TGZ=out/backbone_o.tgz BB_ONLY=1), for routers in a
# later session. Needs out/backbone_o.tgz (carried). Returns backbone_p.tgz, rest.tgz and call.log.
set -uo pipefail
cd "$(dirname "$0")/../../.." || exit 1
W=/tmp/s10c4; rm -rf $W; mkdir -p $W
exec >> "$OUT/call.log" 2>&1
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 )) s] $*"; }
[ -x build-gpu/elastic ] || { el build; OUT=$W/build bash tools/gpu_check.sh build | tail -2; }
el "curriculum step p from out/backbone_o.tgz"
OUT=$W/cur STEPS=p INIT_TGZ=out/backbone_o.tgz BB_ONLY=1 timeout ${CUR_TIMEOUT:-370} bash docs/elasticity/curriculum_run.sh > $W/cur.log 2>&1
el "curriculum rc $?"
cp $W/cur/p/backbone_p.tgz "$OUT/" 2>/dev/null
cat $W/cur/p/driver.log
el finished
(cd $W && tar czf "$OUT/rest.tgz" --exclude='*.bin' --exclude=model --exclude=checkpoints --exclude=init --exclude=bbinit \
  --exclude=build --exclude="backbone_*.tgz" cur cur.log 2>/dev/null)
