#!/usr/bin/env python3
"""Device time by kernel category, this trainer against the PyTorch port, per pack size.

Reads the JSON of `elastic bench-train --profile` and `tools/bench_reference.py --profile` and
prints one Markdown table per pack size (ms of one training step; gpu idle = wall - kernel time).
"""
import argparse, json


def runs(path):
    with open(path) as f:
        return {r["tokens"]: r for r in json.load(f)["runs"] if "profile" in r}


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("elastic")
    ap.add_argument("reference")
    args = ap.parse_args()
    ours, port = runs(args.elastic), runs(args.reference)
    for T in sorted(set(ours) & set(port)):
        a, b = ours[T]["profile"], port[T]["profile"]
        cats = sorted(set(a["category_ms"]) | set(b["category_ms"]), key=lambda c: -max(a["category_ms"].get(c, 0), b["category_ms"].get(c, 0)))
        print(f"\n### {T} tokens: step {ours[T]['step_ms']:.0f} ms (elastic) vs {port[T]['step_ms']:.0f} ms (port)\n")
        print("| category | elastic ms | port ms |\n|---|---|---|")
        for c in cats:
            print(f"| {c} | {a['category_ms'].get(c, 0):.1f} | {b['category_ms'].get(c, 0):.1f} |")
        print(f"| all kernels | {a['gpu_ms']:.1f} | {b['gpu_ms']:.1f} |")
        print(f"| wall (profiled step) | {a['wall_ms']:.1f} | {b['wall_ms']:.1f} |")
        print(f"| GPU idle | {a['wall_ms'] - a['gpu_ms']:.1f} | {b['wall_ms'] - b['gpu_ms']:.1f} |")


if __name__ == "__main__":
    main()
