"""What a new sample length costs cuDNN's fused attention (PyTorch's SDPA, cuDNN backend): the first
call at a length builds and caches an execution plan, later calls reuse it. Training packs of real
data bring new lengths every step, so the build time is paid per step. Prints JSON to --out."""
import argparse, json, time, torch
import torch.nn.functional as F
from torch.nn.attention import sdpa_kernel, SDPBackend

ap = argparse.ArgumentParser()
ap.add_argument("--lengths", default="8192,8193,8200,12000,16384,21845")
ap.add_argument("--heads", type=int, default=32)
ap.add_argument("--kv-heads", type=int, default=8)
ap.add_argument("--out", default="")
a = ap.parse_args()

def call(n, backward):
    q = torch.randn(1, a.heads, n, 128, device="cuda", dtype=torch.bfloat16, requires_grad=backward)
    k = torch.randn(1, a.kv_heads, n, 128, device="cuda", dtype=torch.bfloat16, requires_grad=backward)
    v = torch.randn_like(k, requires_grad=backward)
    torch.cuda.synchronize()
    t = time.perf_counter()
    with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        if backward:
            o.sum().backward()
    torch.cuda.synchronize()
    return (time.perf_counter() - t) * 1e3

rows = []
call(4096, True)  # cuDNN and PyTorch start-up
for n in map(int, a.lengths.split(",")):
    for backward in (False, True):
        first, again = call(n, backward), min(call(n, backward) for _ in range(3))
        rows.append({"n": n, "backward": backward, "first_ms": first, "cached_ms": again, "build_ms": first - again})
        print(rows[-1], flush=True)
res = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "cudnn": torch.backends.cudnn.version(),
       "heads": a.heads, "kv_heads": a.kv_heads, "rows": rows}
if a.out:
    json.dump(res, open(a.out, "w"), indent=1)
