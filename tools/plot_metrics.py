#!/usr/bin/env python3
"""Plots of a router run's metrics.jsonl (one JSON object per training step).

  python3 tools/plot_metrics.py RUN/metrics.jsonl --out DIR [--format svg|png] [--backbone BB/metrics.jsonl]
          [--eval-dir RUN_ROOT/eval]

Writes DIR/omega_per_task.FMT (Ω_MSR per task over steps, with each task's target as a dashed line),
DIR/lambda_per_task.FMT (λ1 and λ2 per task), DIR/lm_loss.FMT (LM loss of the router run, and of the
backbone run when --backbone is given), and with --eval-dir DIR/accuracy_by_method.FMT (per-task accuracy
of each eval/<method>/eval.json) and DIR/accuracy_by_dense_heads.FMT (each task's accuracy over its samples'
number of dense heads, from eval/router/eval.json). Needs matplotlib.
"""
import argparse
import json
import os
import sys


def load(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def smooth(xs, k):
    if k <= 1:
        return xs
    out, acc = [], []
    for x in xs:
        acc.append(x)
        if len(acc) > k:
            acc.pop(0)
        out.append(sum(acc) / len(acc))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("metrics")
    ap.add_argument("--out", required=True)
    ap.add_argument("--format", default="svg", choices=["svg", "png"])
    ap.add_argument("--backbone", help="metrics.jsonl of the backbone run (LM loss plot)")
    ap.add_argument("--eval-dir", help="directory with <method>/eval.json")
    ap.add_argument("--smooth", type=int, default=0, help="moving-average window (default: steps/50)")
    a = ap.parse_args()
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = load(a.metrics)
    if not rows:
        sys.exit(f"{a.metrics}: no rows")
    os.makedirs(a.out, exist_ok=True)
    k = a.smooth or max(1, len(rows) // 50)
    steps = [r["step"] for r in rows]
    tasks = sorted({t for r in rows for t in r.get("tasks", {})})
    colors = {t: plt.cm.tab10(i % 10) for i, t in enumerate(tasks)}
    written = []

    def save(fig, name):
        p = os.path.join(a.out, f"{name}.{a.format}")
        fig.tight_layout()
        fig.savefig(p, dpi=120)
        plt.close(fig)
        written.append(p)

    if tasks:
        fig, ax = plt.subplots(figsize=(7, 4))
        for t in tasks:
            pts = [(r["step"], r["tasks"][t]["omega_msr"]) for r in rows if "omega_msr" in r.get("tasks", {}).get(t, {})]
            if not pts:
                continue
            xs, ys = zip(*pts)
            ax.plot(xs, smooth(list(ys), k), color=colors[t], label=t)
            ax.axhline(rows[-1]["tasks"][t]["target"], color=colors[t], ls="--", lw=0.8)
        ax.set_xlabel("step")
        ax.set_ylabel("Ω_MSR (fraction of streaming heads)")
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(f"Ω_MSR per task (moving average over {k} steps; dashed: target)")
        ax.legend(fontsize=8)
        save(fig, "omega_per_task")

        fig, axs = plt.subplots(1, 2, figsize=(10, 4))
        for j, key in enumerate(["lambda1", "lambda2"]):
            for t in tasks:
                axs[j].plot(steps, [r["tasks"].get(t, {}).get(key, float("nan")) for r in rows], color=colors[t], label=t)
            axs[j].set_xlabel("step")
            axs[j].set_title(("λ1 (|Ω − t| term)" if key == "lambda1" else "λ2 ((Ω − t)² term)"))
        axs[0].legend(fontsize=8)
        save(fig, "lambda_per_task")

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(steps, smooth([r["lm_loss"] for r in rows], k), label="router run (frozen backbone)")
    if a.backbone and os.path.exists(a.backbone):
        bb = load(a.backbone)
        kb = max(1, len(bb) // 50)
        ax2 = ax.twiny()
        ax2.plot([r["step"] for r in bb], smooth([r["lm_loss"] for r in bb], kb), color="gray", label="backbone run")
        ax2.set_xlabel("backbone step")
        ax2.legend(loc="upper center", fontsize=8)
    ax.set_xlabel("router step")
    ax.set_ylabel("LM loss (answer tokens)")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    save(fig, "lm_loss")

    if a.eval_dir and os.path.isdir(a.eval_dir):
        methods = [m for m in ["full", "router", "fixed", "streaming"] if os.path.exists(os.path.join(a.eval_dir, m, "eval.json"))]
        ev = {m: json.load(open(os.path.join(a.eval_dir, m, "eval.json"))) for m in methods}
        if ev:
            names = list(next(iter(ev.values()))["tasks"].keys())
            fig, ax = plt.subplots(figsize=(8, 4))
            w = 0.8 / len(methods)
            for i, m in enumerate(methods):
                xs = [j + i * w for j in range(len(names))]
                ax.bar(xs, [ev[m]["tasks"][t]["accuracy"] for t in names], width=w,
                       label=f"{m} (Ω_MSR {ev[m]['omega_msr']:.2f})")
            ax.set_xticks([j + 0.4 - w / 2 for j in range(len(names))])
            ax.set_xticklabels(names)
            ax.set_ylabel("exact-match accuracy")
            ax.set_ylim(0, 1.05)
            ax.legend(fontsize=8)
            save(fig, "accuracy_by_method")
        # Where a routed task loses accuracy: its samples grouped by how many heads the router kept dense.
        groups = {t: d["by_dense_heads"] for t, d in ev.get("router", {}).get("tasks", {}).items() if d.get("by_dense_heads")}
        if groups:
            fig, ax = plt.subplots(figsize=(8, 4))
            for t, gs in groups.items():
                ks = [g["dense_heads"] for g in gs]
                ax.plot(ks, [g["accuracy"] for g in gs], marker="o", label=t)
                for g in gs:
                    ax.annotate(str(g["samples"]), (g["dense_heads"], g["accuracy"]), fontsize=6,
                                textcoords="offset points", xytext=(3, 3))
            ax.set_xlabel("heads on full attention in the sample (router, hard routing)")
            ax.set_ylabel("exact-match accuracy (labels: samples)")
            ax.set_ylim(0, 1.05)
            ax.legend(fontsize=8)
            save(fig, "accuracy_by_dense_heads")
    print("written: " + ", ".join(written))


if __name__ == "__main__":
    main()
