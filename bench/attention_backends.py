#!/usr/bin/env python3
"""Full causal varlen attention on the GPU: FlashAttention-2 (what the trainer calls through
at::_flash_attention_forward/backward) against cuDNN's varlen attention (at::_cudnn_attention_*),
with native GQA and with K/V expanded to the query heads. Records the output/LSE layouts each
backend returns, agreement with flash, and forward/backward times, so the C++ side can pick the
faster backend on evidence.

  python3 bench/attention_backends.py --out bench/results/attention_backends_h100.json
"""
import argparse, datetime, json, subprocess, sys

import torch

aten = torch.ops.aten


def cu_seqlens(lengths, dev):
    c = [0]
    for n in lengths:
        c.append(c[-1] + n)
    return torch.tensor(c, dtype=torch.int32, device=dev)


def timed(fn, reps=5):
    fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        ts.append(a.elapsed_time(b))
    return sorted(ts)[len(ts) // 2]


def flash(q, k, v, cu, n, scale):
    o, lse, *_ = aten._flash_attention_forward(q, k, v, cu, cu, n, n, 0.0, True, False, scale=scale)
    return o, lse


def flash_bwd(do, q, k, v, o, lse, cu, n, scale):
    e = torch.empty(0, dtype=torch.int64, device=q.device)
    return aten._flash_attention_backward(do, q, k, v, o, lse, cu, cu, n, n, 0.0, True, e, e, scale=scale)


def cudnn(q, k, v, cu, n, scale):
    r = aten._cudnn_attention_forward(q, k, v, None, cu, cu, n, n, True, 0.0, True, False, scale=scale)
    return r[0], r[1], r[6], r[7]


def cudnn_bwd(do, q, k, v, o, lse, seed, off, cu, n, scale):
    e = torch.empty(0, device=q.device, dtype=q.dtype)
    return aten._cudnn_attention_backward(do, q, k, v, o, lse, seed, off, e, cu, cu, n, n, 0.0, True, scale=scale)


def rel(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-30)).item()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--packs", default="16384,32768,65536", help="pack sizes; samples 1/4+1/4+1/2 of each")
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--kv-heads", type=int, default=8)
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--out", default="")
    a = ap.parse_args()
    dev = torch.device("cuda")
    Hq, Hkv, d = a.heads, a.kv_heads, a.head_dim
    G = Hq // Hkv
    scale = d ** -0.5
    res = {"command": " ".join(sys.argv), "machine": torch.cuda.get_device_name(), "torch": torch.__version__,
           "cudnn": torch.backends.cudnn.version(),
           "commit": subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip(),
           "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), "runs": []}
    for T in [int(x) for x in a.packs.split(",")]:
        lengths = [T // 4, T // 4, T - 2 * (T // 4)]
        cu, n = cu_seqlens(lengths, dev), max(lengths)
        torch.manual_seed(0)
        q = torch.randn(T, Hq, d, device=dev, dtype=torch.bfloat16)
        k = torch.randn(T, Hkv, d, device=dev, dtype=torch.bfloat16)
        v = torch.randn(T, Hkv, d, device=dev, dtype=torch.bfloat16)
        do = torch.randn(T, Hq, d, device=dev, dtype=torch.bfloat16)
        flops_fwd = sum(2.0 * m * m * d * Hq for m in lengths)  # causal: half of 4 n^2 d H
        run = {"tokens": T, "samples": lengths}
        fo, fl = flash(q, k, v, cu, n, scale)
        run["flash"] = {"lse_shape": list(fl.shape), "fwd_ms": timed(lambda: flash(q, k, v, cu, n, scale))}
        g_flash = flash_bwd(do, q, k, v, fo, fl, cu, n, scale)
        run["flash"]["bwd_ms"] = timed(lambda: flash_bwd(do, q, k, v, fo, fl, cu, n, scale))
        for name, kk, vv in [("cudnn_gqa", k, v),
                             ("cudnn_expanded", k.repeat_interleave(G, 1), v.repeat_interleave(G, 1))]:
            r = {}
            try:
                co, cl, seed, off = cudnn(q, kk, vv, cu, n, scale)
                r["lse_shape"], r["lse_stride"] = list(cl.shape), list(cl.stride())
                r["out_rel_err_vs_flash"] = rel(co, fo)
                lse_hq_t = cl.reshape(T, Hq).t() if cl.shape[0] == T else cl.reshape(Hq, T)
                r["lse_max_abs_diff_vs_flash_as_HqT"] = (lse_hq_t.float() - fl.float()).abs().max().item()
                r["fwd_ms"] = timed(lambda: cudnn(q, kk, vv, cu, n, scale))
                g = cudnn_bwd(do, q, kk, vv, co, cl, seed, off, cu, n, scale)
                dk = g[1] if kk is k else g[1].view(T, Hkv, G, d).sum(2)
                dv = g[2] if kk is k else g[2].view(T, Hkv, G, d).sum(2)
                r["dq_rel_err"] = rel(g[0], g_flash[0])
                r["dk_rel_err"] = rel(dk, g_flash[1])
                r["dv_rel_err"] = rel(dv, g_flash[2])
                r["bwd_ms"] = timed(lambda: cudnn_bwd(do, q, kk, vv, co, cl, seed, off, cu, n, scale))
            except Exception as e:  # a backend that rejects the layout is a result too
                r["error"] = str(e).splitlines()[0][:300]
            run[name] = r
        for key in ("flash", "cudnn_gqa", "cudnn_expanded"):
            if "fwd_ms" in run[key]:
                run[key]["fwd_tflops"] = flops_fwd / run[key]["fwd_ms"] / 1e9
            if "bwd_ms" in run[key]:
                run[key]["bwd_tflops"] = 2.5 * flops_fwd / run[key]["bwd_ms"] / 1e9
        print(json.dumps(run), flush=True)
        res["runs"].append(run)
        del q, k, v, do, fo, fl, g_flash
        torch.cuda.empty_cache()
    if a.out:
        json.dump(res, open(a.out, "w"), indent=1)


if __name__ == "__main__":
    main()
