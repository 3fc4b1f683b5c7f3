#!/usr/bin/env bash
# The short-to-long curriculum on one GPU: backbone k (128-256-token contexts), then m (512-1K), n (1K-2K)
# and o (2K-4K), each continuing from the one before (device_run.sh BB_INIT_TGZ), then router, baselines and
# report at the last length. Session 10 ran it from random weights on the current suite, split over three
# device calls (a call here lasts at most 10 minutes; see below): 19 minutes of H100 time plus the build, with
# backbone lookups at 0.97-0.99 from 512 to 4K tokens (docs/elasticity.md, session 10). STEPS="k m n o p q"
# goes on to 4K-8K and 8K-16K (session 10 ran p: 226 s; session 8's q took 349 s).
# Usage (repo root): OUT=/some/dir [STEPS="k m n o"] [RV=base] bash docs/elasticity/curriculum_run.sh
# Each step's files are in $OUT/<variant>/ (backbone_<variant>.tgz, logs, elasticity.tgz).
# Split over several calls (a device call here lasts at most 10 minutes): INIT_TGZ=<the last step's
# backbone_<variant>.tgz> starts the first of STEPS from it, and BB_ONLY=1 stops after the backbones,
# e.g. STEPS=k BB_ONLY=1, then STEPS="m n" INIT_TGZ=.../backbone_k.tgz BB_ONLY=1, then STEPS=o INIT_TGZ=....
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/elasticity-curriculum}
read -r -a STEPS <<< "${STEPS:-k m n o}"
# Five-task and first-stage (lookup) steps of each length, as run in session 7 (its step counts came from
# BB_BUDGET and a noisy probe; fixing them makes the recipe repeatable). BB_BUDGET only caps them.
declare -A STEPS_OF=([k]=4564 [m]=5831 [n]=4430 [o]=3277 [p]=4116 [q]=4132) STAGE1=([k]=2500 [m]=1500 [n]=1500 [o]=1500 [p]=1000 [q]=1000)
# q's samples are 4x o's: fewer of them keep data generation and evaluation short (session 8's values).
declare -A SIZES=([q]="EL_N_TRAIN=30000 EL_N_ROUTER=6000 EL_N_EVAL=1000")
prev=${INIT_TGZ:-}
[ -z "$prev" ] || [ -f "$prev" ] || { echo "INIT_TGZ=$prev: no such file (expected a backbone_<variant>.tgz)" >&2; exit 1; }
for i in "${!STEPS[@]}"; do
  v=${STEPS[$i]}
  env=(V="$v" OUT="$OUT/$v" R="$OUT/work-$v" BB_BUDGET=600 BB_MAX_STEPS="${STEPS_OF[$v]:-4000}" BB_STAGE1_STEPS="${STAGE1[$v]:-1500}")
  [ -n "$prev" ] && env+=(BB_INIT_TGZ="$prev")
  # shellcheck disable=SC2206
  env+=(${SIZES[$v]:-})
  if [ "$i" -lt $(( ${#STEPS[@]} - 1 )) ] || [ -n "${BB_ONLY:-}" ]; then env+=(BB_ONLY=1); else env+=(RV="${RV:-base}" RV_TIMEOUT="${RV_TIMEOUT:-1200}"); fi
  echo "== curriculum step $((i + 1))/${#STEPS[@]}: ${env[*]}"
  env "${env[@]}" bash docs/elasticity/device_run.sh
  prev=$OUT/$v/backbone_$v.tgz
  [ -f "$prev" ] || { echo "curriculum step $v left no $prev" >&2; exit 1; }
done
