#!/usr/bin/env bash
# Proof of elasticity (docs/elasticity.md), end to end with one command:
#   1. synthetic suite (5 tasks; keys planted far outside the streaming window),
#   2. a small backbone trained from scratch with full attention (elastic train, routing off),
#   3. Elastic Attention routers on the frozen backbone (targets 0.7 sensitive / 1.0 robust),
#   4. baselines on the same backbone: full attention, all streaming, and a static retrieval-head
#      mask at the router's average sparsity (elastic head-scores + eval --routing fixed),
#   5. report: results.json, results.md, plots (tools/plot_metrics.py, when matplotlib is there).
#
#   tools/elasticity.sh           full run on the GPU (about 10-15 min on one H100)
#   tools/elasticity.sh --smoke   tiny CPU run (< 90 s on 2 cores): checks the pipeline, not accuracy
# Options: --out DIR (default runs/elasticity or runs/elasticity-smoke), --stages LIST (comma list of
# data,backbone,router,baselines,report; default all). Finished stages are reused when their outputs
# exist (delete DIR to start over). Env: ELASTIC_BIN (default build/elastic), BB_SET / RT_SET (extra
# --set overrides for the backbone / router runs, space separated), BB_STAGE1_STEPS (a first
# backbone stage on retrieval + multihop alone; default 0 on the GPU, 4 in the smoke run), EL_SEED
# (the initial backbone weights' seed, default 0), EL_N_EVAL (eval samples, GPU default 2000), EL_N_TRAIN and
# EL_N_ROUTER (backbone and router training samples, GPU defaults 60000 and 10000), BB_INIT
# (a trained model directory the backbone stages continue from instead of the random init).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
E=${ELASTIC_BIN:-$ROOT/build/elastic}
[[ "$E" = /* ]] || E=$PWD/$E
MODE=full
OUT=""
STAGES=data,backbone,router,baselines,report
while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) MODE=smoke ;;
    --out) OUT=$2; shift ;;
    --stages) STAGES=$2; shift ;;
    -h|--help) sed -n 2,16p "$0"; exit 0 ;;
    *) echo "elasticity.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
[ -x "$E" ] || { echo "elasticity.sh: no elastic binary at $E (build it or set ELASTIC_BIN)" >&2; exit 1; }
has() { [[ ",$STAGES," == *",$1,"* ]]; }

if [ $MODE = smoke ]; then
  OUT=${OUT:-$ROOT/runs/elasticity-smoke}
  DEVICE=cpu
  # model: vocab hidden layers heads kv-heads head-dim mlp
  MODEL=(--vocab 128 --hidden 32 --layers 2 --heads 4 --kv-heads 2 --head-dim 8 --mlp 64 --rope-theta 10000)
  DATA=(--vocab 128 --min-len 96 --max-len 160 --answer-len 2 --far-fraction 0.5 --pack-tokens 1024)
  N_TRAIN=200 N_ROUTER=100 N_EVAL=40 N_SCORE=20
  BB=(--set train.steps=12)
  RT=(--set train.steps=8)
  BB_STAGE1_STEPS=${BB_STAGE1_STEPS:-4}
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}  # 2 spinning OpenMP threads on 2 busy cores are 30x slower
else
  OUT=${OUT:-$ROOT/runs/elasticity}
  DEVICE=${EL_DEVICE:-cuda}
  # EL_ARCH / EL_MODEL / EL_DATA (space separated) override the architecture, model and data options.
  MODEL=(--vocab 256 --hidden 256 --layers 4 --heads 8 --kv-heads 4 --head-dim 32 --mlp 1024 --rope-theta 10000)
  DATA=(--vocab 256 --min-len 128 --max-len 256 --answer-len 2 --pairs 4 --far-fraction 0.5 --pack-tokens 8192)
  # The backbone also sees shorter samples (the lookups are learned there first).
  EL_TRAIN_LEN=${EL_TRAIN_LEN:---min-len 64 --max-len 256}
  # shellcheck disable=SC2206
  [ -n "${EL_MODEL:-}" ] && MODEL=($EL_MODEL)
  # shellcheck disable=SC2206
  [ -n "${EL_DATA:-}" ] && DATA=($EL_DATA)
  # 400 eval samples a task: a standard error of about 2.5 points at 50% accuracy (100 gave 5, as
  # large as the differences the report has to tell apart).
  N_TRAIN=${EL_N_TRAIN:-60000} N_ROUTER=${EL_N_ROUTER:-10000} N_EVAL=${EL_N_EVAL:-2000} N_SCORE=200
  BB=() RT=()
fi
# shellcheck disable=SC2206
BB+=(${BB_SET:-}) RT+=(${RT_SET:-})
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
LOG=$OUT/pipeline.log
say() { echo "== $* ($(date +%T))" | tee -a "$LOG"; }
run() { echo "\$ $*" >> "$OUT/commands.txt"; "$@"; }
T0=$(date +%s)
echo "# $(date -u +%FT%TZ) tools/elasticity.sh mode=$MODE stages=$STAGES" >> "$OUT/commands.txt"

if has data; then
  say "data and initial model in $OUT"
  # The backbone's data may span other lengths (EL_TRAIN_LEN, e.g. short samples first teach the
  # lookup). BB_LABELS: predictable (default: answers and the periodic tails of `pattern`),
  # answers, or all (every token: a noisy signal; on the H100 it learned none of the tasks in the
  # time `predictable` learned three, and on the CPU retrieval 10x slower than answers only).
  LABEL_ALL=(); [ "${BB_LABELS:-predictable}" = all ] && LABEL_ALL=(--label-all)
  [ "${BB_LABELS:-predictable}" = predictable ] && LABEL_ALL=(--label-predictable)
  # shellcheck disable=SC2206
  TRAIN_LEN=(${EL_TRAIN_LEN:-})
  [ -f "$OUT/train.bin" ] || run "$E" make-synthetic-data --out "$OUT/train.bin" "${DATA[@]}" "${TRAIN_LEN[@]}" --samples $N_TRAIN --seed 0 "${LABEL_ALL[@]}"
  # Optional first backbone stage on the lookup tasks alone (BB_STAGE1_STEPS > 0): on the CPU a
  # 1M-parameter model learned them alone in 8,000 steps but barely inside the five-task mix.
  if [ "${BB_STAGE1_STEPS:-0}" -gt 0 ] && [ ! -f "$OUT/train_lookup.bin" ]; then
    run "$E" make-synthetic-data --out "$OUT/train_lookup.bin" "${DATA[@]}" "${TRAIN_LEN[@]}" --tasks retrieval,multihop \
      --samples $N_TRAIN --seed 3
  fi
  [ -f "$OUT/router.bin" ] || run "$E" make-synthetic-data --out "$OUT/router.bin" "${DATA[@]}" --samples $N_ROUTER --seed 1
  [ -f "$OUT/eval.bin" ] || run "$E" make-synthetic-data --out "$OUT/eval.bin" "${DATA[@]}" --samples $N_EVAL --seed 2
  [ -f "$OUT/init/config.json" ] || run "$E" make-tiny-model --arch "${EL_ARCH:-qwen3}" --out "$OUT/init" "${MODEL[@]}" --seed "${EL_SEED:-0}"
fi

if has backbone && [ ! -f "$OUT/backbone/model/config.json" ]; then
  # BB_INIT: a trained backbone to continue from instead of the random init (a curriculum: one
  # trained on short contexts goes on at longer ones).
  START=${BB_INIT:-$OUT/init}
  [ -f "$START/config.json" ] || { echo "BB_INIT=$START: no config.json there (expected a model directory)" >&2; exit 1; }
  if [ "${BB_STAGE1_STEPS:-0}" -gt 0 ]; then
    say "backbone stage 1: retrieval and multihop alone, $BB_STAGE1_STEPS steps"
    rm -rf "$OUT/backbone_lookup"
    run "$E" train "$ROOT/configs/elasticity-backbone.yaml" --set model.path="$START" --set data.path="$OUT/train_lookup.bin" \
      --set output.dir="$OUT/backbone_lookup" --set model.device=$DEVICE --set train.steps=$BB_STAGE1_STEPS 2>&1 | { grep -v "^\[.*\] \[info\] train " || true; } | tail -2
    [ -f "$OUT/backbone_lookup/model/config.json" ] || { echo "backbone stage 1 wrote no model" >&2; exit 1; }
    START=$OUT/backbone_lookup/model
  fi
  say "backbone: full attention, every parameter trainable"
  rm -rf "$OUT/backbone"
  run "$E" train "$ROOT/configs/elasticity-backbone.yaml" --set model.path="$START" --set data.path="$OUT/train.bin" \
    --set output.dir="$OUT/backbone" --set model.device=$DEVICE "${BB[@]}" 2>&1 | { grep -v "^\[.*\] \[info\] train " || true; } | tail -4
  [ -f "$OUT/backbone/model/config.json" ] || { echo "backbone training wrote no model" >&2; exit 1; }
fi
BACKBONE=$OUT/backbone/model

if has router && [ ! -f "$OUT/router/router.safetensors" ]; then
  say "router: targets 0.7 (retrieval, multihop) and 1.0 (recent_copy, pattern, instruction)"
  rm -rf "$OUT/router"
  run "$E" train "$ROOT/configs/elasticity-router.yaml" --set model.path="$BACKBONE" --set data.path="$OUT/router.bin" \
    --set output.dir="$OUT/router" --set model.device=$DEVICE "${RT[@]}" 2>&1 | { grep -v "^\[.*\] \[info\] train " || true; } | tail -9
  [ -f "$OUT/router/router.safetensors" ] || { echo "router training wrote no router" >&2; exit 1; }
fi

if has baselines; then
  # Side by side: a small model's eval leaves the GPU mostly idle (at 8K-16K tokens each took 90 s alone).
  say "eval --routing router, full and streaming"
  pids=()
  for r in router full streaming; do
    run "$E" eval "$OUT/router" --data "$OUT/eval.bin" --routing $r --out "$OUT/eval/$r" > "$OUT/eval-$r.log" 2>&1 &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p" || { echo "eval failed:" >&2; tail -5 "$OUT"/eval-*.log >&2; exit 1; }; done
  for r in router full streaming; do echo "-- $r"; tail -8 "$OUT/eval-$r.log"; done
  OMEGA=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['omega_msr'])" "$OUT/eval/router/eval.json")
  say "static retrieval-head mask at the router's average Ω_MSR $OMEGA"
  run "$E" head-scores "$BACKBONE" --data "$OUT/router.bin" --omega "$OMEGA" --max-samples $N_SCORE \
    --device $DEVICE --out "$OUT/mask.csv" | tail -12
  run "$E" eval "$OUT/router" --data "$OUT/eval.bin" --routing fixed --mask "$OUT/mask.csv" --out "$OUT/eval/fixed" | tail -8
fi

if has report; then
  say "report"
  python3 - "$OUT" "$MODE" <<'PY'
import json, os, sys
out, mode = sys.argv[1], sys.argv[2]
methods = [m for m in ["full", "router", "fixed", "streaming"] if os.path.exists(f"{out}/eval/{m}/eval.json")]
ev = {m: json.load(open(f"{out}/eval/{m}/eval.json")) for m in methods}
tasks = list(next(iter(ev.values()))["tasks"].keys()) if ev else []
res = {"mode": mode, "methods": methods, "tasks": tasks,
       "eval": {m: {"overall": {k: e[k] for k in ("accuracy", "lm_loss", "omega_msr", "omega_esr")},
                    "tasks": e["tasks"]} for m, e in ev.items()}}
bb = f"{out}/backbone/metrics.jsonl"
if os.path.exists(bb):
    rows = [json.loads(l) for l in open(bb)]
    res["backbone_train"] = {"steps": len(rows), "final_lm_loss": rows[-1]["lm_loss"],
                             "seconds": sum(r["step_seconds"] for r in rows)}
rt = f"{out}/router/metrics.jsonl"
if os.path.exists(rt):
    rows = [json.loads(l) for l in open(rt)]
    res["router_train"] = {"steps": len(rows), "seconds": sum(r["step_seconds"] for r in rows),
                           "final": rows[-1].get("tasks", {})}
json.dump(res, open(f"{out}/results.json", "w"), indent=1)
names = {"full": "full attention", "router": "Elastic router", "fixed": "static retrieval-head mask",
         "streaming": "all streaming"}
def table(title, a, b):
    rows = ["| task | " + " | ".join(f"{names[m]} {title}" for m in methods) + " |", "|---|" + "---|" * len(methods)]
    for t in tasks + ["all"]:
        cells = [(lambda d: f"{d[a]:.3f} / {d[b]:.3f}")(ev[m] if t == "all" else ev[m]["tasks"][t]) for m in methods]
        rows.append(f"| {t} | " + " | ".join(cells) + " |")
    return rows
lines = table("acc / Ω_MSR", "accuracy", "omega_msr") + [""] + table("LM loss / Ω_ESR", "lm_loss", "omega_esr")
# Which heads the router keeps dense for each task (eval --routing router, fa_frequency per task).
if "router" in ev and all("fa_frequency" in ev["router"]["tasks"][t] for t in tasks):
    # Ω sampled: what training-time (Gumbel) routing gives in expectation; far from the hard Ω where the router is unsure.
    # By dense heads: a task's accuracy on the samples that got k dense heads (k: n samples, accuracy).
    lines += ["", "| task | router Ω_MSR (hard / sampled) | heads on full attention in ≥ 10% of its samples (layer.KV head: share) | accuracy by dense heads (k: samples, acc) |", "|---|---|---|---|"]
    for t in tasks:
        d = ev["router"]["tasks"][t]
        heads = [(f, l, h) for l, row in enumerate(d["fa_frequency"]) for h, f in enumerate(row) if f >= 0.1]
        cells = ", ".join(f"{l}.{h}: {f:.2f}" for f, l, h in sorted(heads, reverse=True)) or "none"
        sampled = f"{d['omega_msr_sampled']:.3f}" if "omega_msr_sampled" in d else "-"
        groups = "; ".join(f"{g['dense_heads']}: {g['samples']}, {g['accuracy']:.3f}" for g in d.get("by_dense_heads", [])) or "-"
        lines.append(f"| {t} | {d['omega_msr']:.3f} / {sampled} | {cells} | {groups} |")
open(f"{out}/results.md", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
  if python3 -c "import matplotlib" 2>/dev/null && [ -f "$OUT/router/metrics.jsonl" ]; then
    python3 "$ROOT/tools/plot_metrics.py" "$OUT/router/metrics.jsonl" --out "$OUT/plots" --backbone "$OUT/backbone/metrics.jsonl" --eval-dir "$OUT/eval" \
      || echo "plot_metrics.py failed (plots skipped)"
  else
    echo "matplotlib not found: plots skipped (python3 tools/plot_metrics.py $OUT/router/metrics.jsonl --out DIR)"
  fi
fi
say "done in $(( $(date +%s) - T0 )) s: $OUT/results.json, $OUT/results.md"
