#!/usr/bin/env bash
# The PyTorch port (tools/bench_reference.py) keeping the same last layers as `elastic bench-train
# --keep-layers auto` kept at each shape (docs/performance.md, session 6), so the two are compared on the same
# memory-for-recompute trade. Python only: no build needed. One run at a time (each fills the GPU).
# Usage (repo root, GPU machine): OUT=dir [CELLS="preset:tokens:kept ..."] [DEADLINE_S=560] bash bench/reference_keep_layers.sh
# Writes $OUT/reference_<preset>_<tokens>_keep<kept>.json per run and $OUT/reference_keep.log; a run that
# would start after DEADLINE_S is skipped (a device call lasts at most 10 minutes), one cut by its
# timeout leaves no JSON.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
OUT=${OUT:?set OUT}
CELLS=${CELLS:-qwen3-4b:32768:20 qwen3-4b:65536:8 llama3.1-8b:32768:14 llama3.1-8b:65536:5 qwen3-8b:32768:13}
T0=$(date +%s)
exec >> "$OUT/reference_keep.log" 2>&1
for cell in $CELLS; do
  IFS=: read -r preset tokens kept <<< "$cell"
  left=$(( ${DEADLINE_S:-560} - ($(date +%s) - T0) ))
  if [ "$left" -lt 60 ]; then echo "[$(( $(date +%s) - T0 )) s] $cell: skipped, ${left} s left"; continue; fi
  echo "[$(( $(date +%s) - T0 )) s] $cell (timeout ${left} s)"
  timeout "$left" python3 tools/bench_reference.py --preset "$preset" --tokens "$tokens" --keep-layers "$kept" \
    --warmup 1 --steps 2 --out "$OUT/reference_${preset}_${tokens}_keep${kept}.json" 2>&1 | grep -v Warning | tail -3
  echo "[$(( $(date +%s) - T0 )) s] $cell rc ${PIPESTATUS[0]}"
done
