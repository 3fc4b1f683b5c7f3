#!/usr/bin/env bash
# Evaluation numerics on the GPU: `elastic eval` with the training numerics (TF32 matmuls, bf16 flash
# attention; the default since session 9) against --exact (fp32 throughout, the blocked attention
# path), on one fp32 backbone and eval set, for each routing given. Prints accuracy, LM loss and Ω per
# task for both, and the wall time of each pass.
# Usage: compare_numerics.sh RUN_DIR EVAL_BIN OUT [ROUTING...]  (routing: full, streaming, router,
# fixed:MASK.csv; default full streaming). RUN_DIR is what `elastic eval` takes (a backbone run, or a
# router run for `router`); EVAL_ARGS: more `elastic eval` options for every pass (--model, --set).
# The exact passes run first, one at a time, then the fast ones.
set -uo pipefail
RUN=$1 DATA=$2 OUT=$3; shift 3
E=${ELASTIC_BIN:-build-gpu/elastic}
ROUTINGS=("$@"); [ ${#ROUTINGS[@]} -gt 0 ] || ROUTINGS=(full streaming)
mkdir -p "$OUT"
for mode in exact training; do
  for r in "${ROUTINGS[@]}"; do
    name=${r%%:*}
    # shellcheck disable=SC2206
    args=(--routing "$name" ${EVAL_ARGS:-})
    [ "$name" = fixed ] && args+=(--mask "${r#fixed:}")
    [ $mode = exact ] && args+=(--exact)
    t0=$(date +%s.%N)
    $E eval "$RUN" --data "$DATA" "${args[@]}" --out "$OUT/$name.$mode" > "$OUT/$name.$mode.log" 2>&1 || { echo "eval $name $mode failed" >&2; tail -5 "$OUT/$name.$mode.log" >&2; }
    echo "$name $mode $(python3 -c "print(round($(date +%s.%N) - $t0, 1))") s" | tee -a "$OUT/times.txt"
  done
done
python3 - "$OUT" "${ROUTINGS[@]}" <<'EOF'
import json, sys
out, routings = sys.argv[1], [r.split(":")[0] for r in sys.argv[2:]]
rows = []
for r in routings:
    e, t = (json.load(open(f"{out}/{r}.{m}/eval.json")) for m in ("exact", "training"))
    for task in e["tasks"]:
        a, b = e["tasks"][task], t["tasks"][task]
        rows.append(f"{r:9s} {task:12s} acc {a['accuracy']:.4f} / {b['accuracy']:.4f}  loss {a['lm_loss']:.5f} / {b['lm_loss']:.5f}"
                    f"  Ω {a['omega_msr']:.4f} / {b['omega_msr']:.4f}")
open(f"{out}/compare.txt", "w").write("routing   task         exact / training\n" + "\n".join(rows) + "\n")
print(open(f"{out}/compare.txt").read())
EOF
