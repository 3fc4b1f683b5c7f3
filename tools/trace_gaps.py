#!/usr/bin/env python3
"""What the host was doing while the GPU idled, from a Kineto Chrome trace (bench-train --profile
--trace PREFIX, or torch.profiler's export_chrome_trace).

Every gap between GPU activities (kernels, copies, sets; all streams merged) longer than --min-us is
charged to the host operators open when the gap began: the innermost operator and its outermost
ancestor on the host thread with the deepest stack then (an autograd node or a module-level op), plus any blocking CUDA runtime call that overlaps
the gap (cudaStreamSynchronize, a synchronous cudaMemcpy: a host wait drained the queue). Prints
a table of the largest causes; --json writes it too.

  python3 tools/trace_gaps.py trace_16384.json [--min-us 20] [--top 20] [--json gaps.json]
"""
import argparse
import bisect
import collections
import gzip
import json

GPU_CATS = {"kernel", "gpu_memcpy", "gpu_memset"}


def load(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt") as f:
        return json.load(f)["traceEvents"]


def blocking(name):
    return "Synchronize" in name or name in ("cudaMemcpy", "cuMemcpyDtoH_v2", "cudaMemcpy2D")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("trace")
    ap.add_argument("--min-us", type=float, default=20.0)
    ap.add_argument("--top", type=int, default=20)
    ap.add_argument("--json")
    a = ap.parse_args()
    ev = [e for e in load(a.trace) if e.get("ph") == "X" and "dur" in e]
    gpu = sorted((e["ts"], e["ts"] + e["dur"]) for e in ev if e.get("cat") in GPU_CATS)
    if not gpu:
        raise SystemExit(f"{a.trace}: no GPU activity in the trace")
    ops = collections.defaultdict(list)  # host thread -> operators by start, outer before inner
    for e in sorted((e for e in ev if e.get("cat") == "cpu_op"), key=lambda e: (e["ts"], -e["dur"])):
        ops[e["tid"]].append(e)
    runtime = sorted((e for e in ev if e.get("cat") in ("cuda_runtime", "cuda_driver")), key=lambda e: e["ts"])
    rt_starts = [e["ts"] for e in runtime]
    # One sweep in time order: per thread, the stack of operators open at the query time (operators
    # of one thread nest). Queries must come in increasing time.
    cursor = {tid: 0 for tid in ops}
    stacks = {tid: [] for tid in ops}

    def open_ops(t):
        """Operators open at time t, outermost first, on the host thread with the deepest stack (the
        forward runs on the main thread, the backward on autograd's device thread)."""
        best = []
        for tid, l in ops.items():
            st, i = stacks[tid], cursor[tid]
            while i < len(l) and l[i]["ts"] <= t:
                while st and st[-1]["ts"] + st[-1]["dur"] <= l[i]["ts"]:
                    st.pop()
                st.append(l[i])
                i += 1
            cursor[tid] = i
            while st and st[-1]["ts"] + st[-1]["dur"] <= t:
                st.pop()
            if len(st) > len(best):
                best = list(st)
        return best

    # Merge GPU activity into busy intervals, then walk the gaps.
    merged = []
    for s, e in gpu:
        if merged and s <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], e)
        else:
            merged.append([s, e])
    causes = collections.defaultdict(lambda: {"us": 0.0, "gaps": 0})
    total_gap = small_gap = 0.0
    for (s0, e0), (s1, _) in zip(merged, merged[1:]):
        gap = s1 - e0
        if gap <= 0:
            continue
        total_gap += gap
        if gap < a.min_us:
            small_gap += gap
            continue
        stack = open_ops(e0)
        outer = stack[0]["name"] if stack else "(no operator)"
        inner = stack[-1]["name"] if stack else "(no operator)"
        i = bisect.bisect_left(rt_starts, e0 - 1e6)
        waits = sorted({r["name"] for r in runtime[i:bisect.bisect_right(rt_starts, s1)]
                        if blocking(r["name"]) and r["ts"] < s1 and r["ts"] + r["dur"] > e0})
        key = f"{outer} > {inner}" + (f" [{', '.join(waits)}]" if waits else "")
        causes[key]["us"] += gap
        causes[key]["gaps"] += 1
    span = merged[-1][1] - merged[0][0]
    busy_us = sum(e - s for s, e in merged)
    rows = sorted(({"cause": k, "ms": v["us"] / 1e3, "gaps": v["gaps"]} for k, v in causes.items()),
                  key=lambda r: -r["ms"])
    out = {"trace": a.trace, "span_ms": span / 1e3, "gpu_busy_ms": busy_us / 1e3, "idle_ms": total_gap / 1e3,
           "idle_in_gaps_below_min_ms": small_gap / 1e3, "min_gap_us": a.min_us, "causes": rows[: a.top]}
    print(f"{a.trace}: span {span / 1e3:.1f} ms, GPU busy {busy_us / 1e3:.1f} ms, idle {total_gap / 1e3:.1f} ms "
          f"({small_gap / 1e3:.1f} ms in gaps < {a.min_us:g} us)")
    print("| host operator open when the GPU went idle (outermost > innermost) [blocking calls] | idle ms | gaps |")
    print("|---|---|---|")
    for r in rows[: a.top]:
        print(f"| {r['cause'][:150]} | {r['ms']:.1f} | {r['gaps']} |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
