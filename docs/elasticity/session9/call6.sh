#!/usr/bin/env bash
# Session 9, device call 6 (repo root, one H100): backbones n2 (1K-2K tokens) and o2 (2K-4K), session 7's
# n and o trained on, side by side, on the suite whose recent_copy question ends with COPY (BB_BUDGET
# seconds each, five tasks, random streaming heads). Needs out/backbone_n.tgz and out/backbone_o.tgz
# (carried). Returns backbone_n2.tgz, backbone_o2.tgz, rest.tgz and call.log.
set -uo pipefail
cd "$(dirname "$0")/../../.." || exit 1
W=/tmp/s9c6; rm -rf $W; mkdir -p $W
exec >> "$OUT/call.log" 2>&1
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 )) s] $*"; }
[ -x build-gpu/elastic ] || { el build; OUT=$W/build bash tools/gpu_check.sh build | tail -2; }
el "backbones n2 and o2"
PIDS=()
for v in n o; do
  OUT=$W/$v R=$W/r$v V=$v BB_ONLY=1 BB_INIT_TGZ=out/backbone_$v.tgz BB_BUDGET=${BB_BUDGET:-150} BB_STAGE1_STEPS=0 \
    EL_N_ROUTER=100 EL_N_EVAL=2000 timeout 380 bash docs/elasticity/device_run.sh > $W/$v.log 2>&1 &
  PIDS+=($!)
done
wait "${PIDS[@]}"; el "backbones done"
for v in n o; do cat $W/$v/driver.log; cp $W/$v/backbone_$v.tgz "$OUT/backbone_${v}2.tgz"; done
(cd $W && tar czf "$OUT/rest.tgz" --exclude='*.bin' --exclude=model --exclude=checkpoints --exclude=init --exclude=build \
  --exclude="backbone_*.tgz" --exclude=bbinit n o rn/n/bbeval rn/n/commands.txt ro/o/bbeval ro/o/commands.txt n.log o.log)
el finished
