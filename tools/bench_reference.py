#!/usr/bin/env python3
"""PyTorch baseline of one Elastic Attention router training step (docs: shared/design/ELASTIC.md §2-8).

Written the way the reference implementation does it, to sit beside `elastic bench-train`: Hugging Face style
eager modules on a frozen random-weight bf16 decoder of a real shape, a router per layer, Gumbel-softmax STE,
per-sample SDPA (cuDNN or flash) for full attention and compiled FlexAttention for sink + window, autograd
through BOTH branches, activation checkpointing per layer, CE on labelled rows + |Omega_MSR - 0.7|, AdamW on
the routers. Packs, labels, prompt ranges, loss and the dense-equivalent MFU match src/cli/cmd_bench.cpp.

  python tools/bench_reference.py --preset qwen3-8b --tokens 16384,32768,65536 --out ref.json
  python tools/bench_reference.py --preset tiny --check [--dtype float32]       # correctness, CPU or GPU
"""
import argparse, contextlib, datetime, gc, json, math, statistics, subprocess, sys, time, traceback, warnings

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.attention.flex_attention import create_block_mask, flex_attention
from torch.utils.checkpoint import checkpoint

# Llama 3.1's rope_scaling (llama3, x8) only changes the inv_freq values, not the work done, so it is left out.
PRESETS = {
    "qwen3-4b": dict(layers=36, hidden=2560, heads=32, kv_heads=8, head_dim=128, mlp=9728, vocab=151936,
                     tied=True, qk_norm=True, theta=1e6, eps=1e-6),
    "qwen3-8b": dict(layers=36, hidden=4096, heads=32, kv_heads=8, head_dim=128, mlp=12288, vocab=151936,
                     tied=False, qk_norm=True, theta=1e6, eps=1e-6),
    "llama3.1-8b": dict(layers=32, hidden=4096, heads=32, kv_heads=8, head_dim=128, mlp=14336, vocab=128256,
                        tied=False, qk_norm=False, theta=5e5, eps=1e-5),
    "tiny": dict(layers=2, hidden=128, heads=4, kv_heads=2, head_dim=32, mlp=256, vocab=512,
                 tied=False, qk_norm=True, theta=1e6, eps=1e-6),
}
SHAPE_FIELDS = ["layers", "hidden", "heads", "kv_heads", "head_dim", "mlp", "vocab"]
DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}
FA_BACKENDS = {"cudnn": SDPBackend.CUDNN_ATTENTION, "flash": SDPBackend.FLASH_ATTENTION,
               "efficient": SDPBackend.EFFICIENT_ATTENTION}
POOL_TOKENS, TARGET, TAU = 100, 0.7, 1.0


# ---------------------------------------------------------------- elementwise parts (the compile targets)
def rms_norm(x, w, eps):
    # HF: statistics in fp32, cast back to the activation dtype before the weight.
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return w * h.to(x.dtype)


def rotate_half(x):
    return torch.cat((-x[..., x.shape[-1] // 2:], x[..., : x.shape[-1] // 2]), -1)


def norm_qkv(x, ln_w, wq, wk, wv, qn_w, kn_w, eps, heads, kv_heads, d):
    h = rms_norm(x, ln_w, eps)
    q = F.linear(h, wq).view(-1, heads, d)
    k = F.linear(h, wk).view(-1, kv_heads, d)
    v = F.linear(h, wv).view(-1, kv_heads, d)
    if qn_w is not None:  # Qwen3: per-head RMSNorm on q and k, before RoPE
        q, k = rms_norm(q, qn_w, eps), rms_norm(k, kn_w, eps)
    return q, k, v


def rope(q, k, cos, sin):
    return q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin


def mlp_residual(x, ln_w, w_gate, w_up, w_down, eps):
    h = rms_norm(x, ln_w, eps)
    return x + F.linear(F.silu(F.linear(h, w_gate)) * F.linear(h, w_up), w_down)


EAGER = dict(norm_qkv=norm_qkv, rope=rope, mlp_residual=mlp_residual)
K = dict(EAGER)  # what the layers call; --compile elementwise swaps in compiled versions


# ---------------------------------------------------------------- model
class Router(nn.Module):
    """ELASTIC.md §4; names as the reference's mask_allocator so an export would line up."""

    def __init__(self, d, mult=4):
        super().__init__()
        self.cls_feat_extractor = nn.Sequential(nn.Linear(d, mult * d), nn.SiLU(), nn.Linear(mult * d, d))
        self.cls_router_head_agnostic = nn.Sequential(nn.Linear(d, mult * d), nn.SiLU(), nn.Linear(mult * d, d),
                                                      nn.SiLU(), nn.Linear(d, 2))

    def forward(self, keys, pack):  # keys [T, Hkv, d] after k_norm, before RoPE -> logits [B, Hkv, 2]
        pooled = []
        for off, pe in zip(pack.offsets, pack.prompt_ends):
            p = min(POOL_TOKENS, pe)  # boundary pooling; a short prompt's rows count twice, as in the reference
            rows = torch.cat([keys[off:off + p], keys[off + pe - p:off + pe]])
            pooled.append(rows.float().mean(0))
        return self.cls_router_head_agnostic(self.cls_feat_extractor(torch.stack(pooled)))


def gumbel_ste(z, g, tau):
    soft = torch.softmax((z + g) / tau, -1)
    hard = torch.zeros_like(soft).scatter_(-1, soft.argmax(-1, keepdim=True), 1.0)
    return hard + (soft - soft.detach())  # bracketed so the forward value is exactly 0/1


class Layer(nn.Module):
    def __init__(self, c, dtype):
        super().__init__()
        D, H, G, d, M = c["hidden"], c["heads"], c["kv_heads"], c["head_dim"], c["mlp"]
        lin = lambda i, o: nn.Linear(i, o, bias=False, dtype=dtype)
        self.q_proj, self.k_proj, self.v_proj, self.o_proj = lin(D, H * d), lin(D, G * d), lin(D, G * d), lin(H * d, D)
        self.gate_proj, self.up_proj, self.down_proj = lin(D, M), lin(D, M), lin(M, D)
        ones = lambda n: nn.Parameter(torch.ones(n, dtype=dtype))
        self.input_layernorm, self.post_attention_layernorm = ones(D), ones(D)
        self.q_norm, self.k_norm = (ones(d), ones(d)) if c["qk_norm"] else (None, None)
        self.router = Router(d)  # fp32, the only trainable part
        self.c = c

    def forward(self, x, noise, pack):
        c = self.c
        q, k, v = K["norm_qkv"](x, self.input_layernorm, self.q_proj.weight, self.k_proj.weight, self.v_proj.weight,
                                self.q_norm, self.k_norm, c["eps"], c["heads"], c["kv_heads"], c["head_dim"])
        s = gumbel_ste(self.router(k, pack), noise, TAU)[..., 1]  # FA weight per (sample, kv head)
        q, k = K["rope"](q, k, pack.cos, pack.sin)
        a = pack.att(q, k, v, s, pack.lengths)
        x = x + self.o_proj(a.reshape(x.shape[0], -1))
        return K["mlp_residual"](x, self.post_attention_layernorm, self.gate_proj.weight, self.up_proj.weight,
                                 self.down_proj.weight, c["eps"]), s


class Model(nn.Module):
    def __init__(self, c, dtype, device, omega=0.5):
        super().__init__()
        with torch.device(device):  # init on the device: an 8B model initialised on the CPU takes minutes
            self.embed_tokens = nn.Embedding(c["vocab"], c["hidden"], dtype=dtype)
            self.layers = nn.ModuleList(Layer(c, dtype) for _ in range(c["layers"]))
            self.norm = nn.Parameter(torch.ones(c["hidden"], dtype=dtype))
            self.lm_head = None if c["tied"] else nn.Linear(c["hidden"], c["vocab"], bias=False, dtype=dtype)
            with torch.no_grad():
                for name, p in self.named_parameters():
                    if ".router." in name:
                        continue
                    p.requires_grad_(False)
                    if p.dim() == 2:
                        p.normal_(0, 0.02)
                for layer in self.layers:  # a realistic routing mix from the first step, as cmd_bench.cpp
                    last = layer.router.cls_router_head_agnostic[4]
                    last.weight.normal_(0, 0.05), last.bias.zero_()
                    last.bias[0] = math.log(omega / (1 - omega))  # index 0 = SSA: streams with p ~ omega

    def lm_weight(self):
        return self.embed_tokens.weight if self.lm_head is None else self.lm_head.weight

    def router_params(self):
        return [p for layer in self.layers for p in layer.router.parameters()]


# ---------------------------------------------------------------- hybrid attention (§6)
class HybridAttention:
    """O = s*FA + (1-s)*SSA per head and sample; autograd through both branches (no routing-aware backward)."""

    def __init__(self, sink, window, ssa_impl, device, repeat_kv=False):
        self.sink, self.window, self.ssa_impl, self.device, self.repeat_kv = sink, window, ssa_impl, device, repeat_kv
        self.block_masks = {}
        self._mask_mod = self.mask_mod()  # one object: the compiled create_block_mask guards on it
        cuda = torch.device(device).type == "cuda"
        # Eager flex materialises the scores (fine for CPU checks); on the GPU only the compiled kernel is sane.
        self.flex = torch.compile(flex_attention) if cuda else flex_attention
        # Uncompiled create_block_mask evaluates the mask on a dense n x n grid (GBs at 64K); compiled, it fuses.
        self.make_mask = torch.compile(create_block_mask) if cuda else create_block_mask
        # AUTO would pick the decoding kernel for short no-grad queries (and fail on it with GQA); TRITON is the
        # kernel training runs anyway, so --check tests what the benchmark times.
        self.flex_opts = {"BACKEND": "TRITON"} if cuda else None

    def mask_mod(self):
        S, W = self.sink, self.window

        def ssa(b, h, q_idx, kv_idx):
            return (kv_idx <= q_idx) & ((kv_idx < S) | (q_idx - kv_idx < W))
        return ssa

    def block_mask(self, n):  # one per sample length, built before timing (see prepare)
        if n not in self.block_masks:
            self.block_masks[n] = self.make_mask(self._mask_mod, None, None, n, n, device=self.device)
        return self.block_masks[n]

    def prepare(self, lengths):
        if self.ssa_impl == "flex":
            for n in lengths:
                self.block_mask(n)

    def fa(self, q, k, v):  # [1, H, n, d], [1, Hkv, n, d]
        if self.repeat_kv:  # the chosen backend rejected enable_gqa (see pick_fa_backend): expand like HF repeat_kv
            g = q.shape[1] // k.shape[1]
            k, v = k.repeat_interleave(g, 1), v.repeat_interleave(g, 1)
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=not self.repeat_kv)

    def ssa(self, q, k, v, n):
        if self.ssa_impl == "flex":
            return self.flex(q, k, v, block_mask=self.block_mask(n), enable_gqa=True, kernel_options=self.flex_opts)
        # Explicit boolean mask: n x n memory, for CPU tests of tiny sizes only.
        i = torch.arange(n, device=q.device)[:, None]
        j = torch.arange(n, device=q.device)[None]
        m = (j <= i) & ((j < self.sink) | (i - j < self.window))
        return F.scaled_dot_product_attention(q, k, v, attn_mask=m, enable_gqa=True)

    def __call__(self, q, k, v, s, lengths):  # q [T, H, d], k/v [T, Hkv, d], s [B, Hkv] -> [T, H, d]
        group, outs, off = q.shape[1] // k.shape[1], [], 0
        for b, n in enumerate(lengths):
            qb, kb, vb = (t[off:off + n].transpose(0, 1).unsqueeze(0) for t in (q, k, v))
            w = s[b].repeat_interleave(group).to(q.dtype).view(1, -1, 1, 1)  # kv head -> its query heads
            o = w * self.fa(qb, kb, vb) + (1 - w) * self.ssa(qb, kb, vb, n)
            outs.append(o[0].transpose(0, 1))
            off += n
        return torch.cat(outs)


def fa_candidates(choice, dtype):
    return [choice] if choice != "auto" else (["cudnn", "flash"] if dtype != torch.float32 else ["efficient"])


def probe_fa(name, c, n, dtype, device):
    """(repeat_kv, ms of one forward+backward at length n) for SDPA backend `name`, or (None, error)."""
    gen = torch.Generator(device=device).manual_seed(0)
    # Same layout as in the model: [n, heads, d] rows viewed as [1, heads, n, d] (the HF transpose).
    leaves = [torch.randn(n, h, c["head_dim"], device=device, dtype=dtype, generator=gen, requires_grad=True)
              for h in (c["heads"], c["kv_heads"], c["kv_heads"])]
    q, k, v = (t.transpose(0, 1).unsqueeze(0) for t in leaves)
    errors = []
    for repeat in (False, True):
        att = HybridAttention(0, 0, "masked", device, repeat_kv=repeat)
        try:
            with sdpa_kernel([FA_BACKENDS[name]]), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # each refusal prints why, at length; the error line says enough
                for it in range(4):  # 1 warm-up + 3 timed
                    if it == 1:
                        torch.cuda.synchronize()
                        t0 = time.perf_counter()
                    att.fa(q, k, v).sum().backward()
                torch.cuda.synchronize()
            ms = (time.perf_counter() - t0) / 3 * 1e3
            print(f"[fa] {name}{'+repeat_kv' if repeat else ''}: fwd+bwd {ms:.2f} ms at n={n}", flush=True)
            return repeat, ms
        except RuntimeError as e:
            errors.append(f"{name} repeat_kv={repeat}: {str(e).splitlines()[0]}")
            print(f"[fa] {errors[-1]}", flush=True)
    return None, "; ".join(errors)


def pick_fa_backend(choice, c, n, dtype, device):
    """(name, repeat_kv): the given backend, or for 'auto' the faster of the candidates at one sample length."""
    if torch.device(device).type != "cuda":
        return "cpu-default", False
    probes = {name: probe_fa(name, c, n, dtype, device) for name in fa_candidates(choice, dtype)}
    usable = {name: p for name, p in probes.items() if p[0] is not None}
    if not usable:
        sys.exit("no usable full-attention backend: " + "; ".join(p[1] for p in probes.values()))
    name = min(usable, key=lambda k: usable[k][1])
    return name, usable[name][0]


# ---------------------------------------------------------------- packs, step, loss
class Pack:
    def __init__(self, lengths, c, att, device, dtype, seed):
        self.lengths, self.att, self.T = list(lengths), att, sum(lengths)
        self.offsets = [sum(lengths[:b]) for b in range(len(lengths))]
        n_lab = [max(1, n // 20) for n in lengths]  # labels on the last 5% (the answer of an SFT sample)
        self.prompt_ends = [n - k for n, k in zip(lengths, n_lab)]
        g = torch.Generator(device=device).manual_seed(seed)
        self.ids = torch.randint(c["vocab"], (self.T,), device=device, generator=g)
        self.targets = torch.cat([torch.arange(o + n - k, o + n, device=device)
                                  for o, n, k in zip(self.offsets, lengths, n_lab)])  # all at position > 0
        pos = torch.cat([torch.arange(n, device=device) for n in lengths]).float()  # restart per sample
        inv = 1.0 / (c["theta"] ** (torch.arange(0, c["head_dim"], 2, device=device).float() / c["head_dim"]))
        emb = torch.cat([pos[:, None] * inv] * 2, -1)[:, None, :]  # [T, 1, d], broadcast over heads
        self.cos, self.sin = emb.cos().to(dtype), emb.sin().to(dtype)
        att.prepare(self.lengths)


def ce_chunk(h, y, norm_w, lm_w, eps):
    logits = F.linear(rms_norm(h, norm_w, eps), lm_w).float()
    return F.cross_entropy(logits, y, reduction="sum")


def train_step(model, opt, pack, step_no, seed, layer_fns, chunk=4096, keep_layers=0):
    c = model.layers[0].c
    gen = torch.Generator().manual_seed(seed * 1_000_003 + step_no)  # seeded per step, as the C++ (seed, rank, step)
    u = torch.rand(c["layers"], len(pack.lengths), c["kv_heads"], 2, generator=gen)
    noise = (-torch.log(-torch.log(u + 1e-8) + 1e-8)).to(pack.ids.device)
    x = model.embed_tokens(pack.ids)
    decisions = []
    for i, fn in enumerate(layer_fns):  # routing decided inside the checkpointed layer, so recompute repeats it
        if i >= len(layer_fns) - keep_layers:  # the last layers keep their activations, as elastic's train.keep_layers
            x, s = fn(x, noise[i], pack)
        else:
            x, s = checkpoint(fn, x, noise[i], pack, use_reentrant=False)
        decisions.append(s)
    rows = x.index_select(0, pack.targets - 1)  # logits only where a label is predicted
    y = pack.ids.index_select(0, pack.targets)
    ce = sum(checkpoint(ce_chunk, rows[a:a + chunk], y[a:a + chunk], model.norm, model.lm_weight(), c["eps"],
                        use_reentrant=False) for a in range(0, rows.shape[0], chunk)) / rows.shape[0]
    omega = 1.0 - torch.stack(decisions).mean((0, 2))  # per sample: fraction of SSA (layer, kv head) pairs
    loss = ce + (omega - TARGET).abs().mean()
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return omega.detach()


def set_compile(mode, model):
    """Returns the per-layer callables; 'elementwise' compiles norm+qkv, rope and norm+MLP+residual."""
    K.update(EAGER)
    if mode == "elementwise":
        K.update({name: torch.compile(fn) for name, fn in EAGER.items()})
    if mode == "layer":
        return [torch.compile(layer) for layer in model.layers]
    return list(model.layers)


def is_oom(e):
    msg = str(e)
    return isinstance(e, torch.OutOfMemoryError) or "out of memory" in msg or "ALLOC_FAILED" in msg


def step_lengths(lengths, step_no):
    """--vary-lengths: lengths no earlier step had (as elastic bench-train --vary-lengths makes them), same total."""
    ls = list(lengths)
    for b in range(len(ls) - 1):
        shift = (8 * step_no + 1) * (b + 1)
        ls[b] += shift
        ls[-1] -= shift
    assert ls[-1] > 0, f"--vary-lengths left no tokens for the last sample at step {step_no}"
    return ls


def bench_pack(model, opt, lengths, args, att, layer_fns, device, dtype, c):
    cuda = torch.device(device).type == "cuda"
    pack = Pack(lengths, c, att, device, dtype, args.seed)
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    def step(step_no):
        # With --vary-lengths the step also pays for its new pack: block masks, cuDNN plans, recompiles.
        p = Pack(step_lengths(lengths, step_no), c, att, device, dtype, args.seed) if args.vary_lengths else pack
        return train_step(model, opt, p, step_no, args.seed, layer_fns, keep_layers=args.keep_layers)

    for i in range(args.warmup):
        step(i)
    times, omegas = [], []
    for i in range(args.steps):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize()
            start.record()
            omegas.append(step(args.warmup + i))
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            omegas.append(step(args.warmup + i))
            times.append((time.perf_counter() - t0) * 1e3)
    step_ms = statistics.median(times)
    profile = profile_step(step, args.warmup + args.steps) if args.profile and cuda else None
    T = pack.T
    P = sum(p.numel() for n, p in model.named_parameters() if ".router." not in n) - c["vocab"] * c["hidden"]
    attn = sum(2.0 * n * n * c["head_dim"] * c["heads"] * c["layers"] for n in lengths)
    flops = 2 * P * T + attn + 2 * P * T + 2.5 * attn
    return {"tokens": T, "samples": list(lengths), "step_ms": step_ms, "tokens_per_s": T / (step_ms / 1e3),
            "mfu_dense_equivalent": flops / (step_ms / 1e3) / (args.peak_tflops * 1e12),
            "peak_memory_gb": torch.cuda.max_memory_allocated() / 1e9 if cuda else None,
            "omega_msr": torch.stack(omegas).mean().item(), "step_ms_all": times, "vary_lengths": args.vary_lengths,
            **({"profile": profile} if profile else {})}


def kernel_category(name):
    """Same classes as src/util/kernel_profile.cpp, so the two profiles compare line by line."""
    n = name.lower()
    bwd = any(w in n for w in ("bwd", "backward", "dgrad", "bprop"))
    if "elastic" in n or "triton" in n: return "fused"  # ours, or Inductor's
    if "nccl" in n: return "collective"
    if any(w in n for w in ("cudnn", "sdpa", "fmha")): return "attention_cudnn_bwd" if bwd else "attention_cudnn_fwd"
    if "flash" in n: return "attention_flash_bwd" if bwd else "attention_flash_fwd"
    if any(w in n for w in ("gemm", "cutlass", "nvjet", "xmma", "cublas")): return "matmul"
    if "norm" in n: return "norm"
    if any(w in n for w in ("reduce", "softmax", "logsumexp")): return "reduction"
    if any(w in n for w in ("index", "gather", "scatter", "cat", "embedding")): return "index"
    if any(w in n for w in ("memcpy", "memset", "copy")): return "copy"
    if any(w in n for w in ("elementwise", "vectorized", "unrolled", "pointwise")): return "elementwise"
    return "other"


def profile_step(step, step_no):
    """One step (step(step_no)) under torch.profiler: device time by kernel and category (bench-train --profile's twin)."""
    from torch.profiler import ProfilerActivity, profile
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        step(step_no)
        torch.cuda.synchronize()
    wall = (time.perf_counter() - t0) * 1e3
    kernels = {}
    for e in prof.events():
        if e.device_type != torch.autograd.DeviceType.CUDA:
            continue
        k = kernels.setdefault(e.name, {"name": e.name[:160], "category": kernel_category(e.name), "ms": 0.0, "calls": 0})
        k["ms"] += e.device_time / 1e3
        k["calls"] += 1
    cats, gpu = {}, 0.0
    for k in kernels.values():
        cats[k["category"]] = cats.get(k["category"], 0.0) + k["ms"]
        gpu += k["ms"]
    top = sorted(kernels.values(), key=lambda k: -k["ms"])[:30]
    return {"wall_ms": wall, "gpu_ms": gpu, "gpu_idle_fraction": 1 - gpu / wall, "category_ms": cats,
            "kernels": len(kernels), "top_kernels": top}


def even_lengths(T, n):
    return [T // n + (1 if b < T % n else 0) for b in range(n)]


# ---------------------------------------------------------------- --check
def brute_hybrid(q, k, v, s, lengths, sink, window):
    """float64, explicit masks; returns (hybrid, fa, ssa) as [T, H, d]."""
    group, fas, ssas, outs, off = q.shape[1] // k.shape[1], [], [], [], 0
    for b, n in enumerate(lengths):
        qb, kb, vb = q[off:off + n].transpose(0, 1), k[off:off + n].transpose(0, 1), v[off:off + n].transpose(0, 1)
        kb, vb = kb.repeat_interleave(group, 0), vb.repeat_interleave(group, 0)
        sc = qb @ kb.transpose(1, 2) / math.sqrt(q.shape[-1])
        i, j = torch.arange(n)[:, None], torch.arange(n)[None]
        causal = j <= i
        ssa_m = causal & ((j < sink) | (i - j < window))
        fa = (sc.masked_fill(~causal, float("-inf")).softmax(-1) @ vb).transpose(0, 1)
        ssa = (sc.masked_fill(~ssa_m, float("-inf")).softmax(-1) @ vb).transpose(0, 1)
        w = s[b].repeat_interleave(group).view(1, -1, 1)
        fas.append(fa), ssas.append(ssa), outs.append(w * fa + (1 - w) * ssa)
        off += n
    return torch.cat(outs), torch.cat(fas), torch.cat(ssas)


def run_check(args, c, device, dtype):
    lengths, sink, window = [70, 130, 257], 8, 32  # short samples where both sink and window bite
    tol_out, tol_grad = (1e-2, 2e-2) if dtype != torch.float32 else (1e-5, 1e-5)
    T, H, G, d = sum(lengths), c["heads"], c["kv_heads"], c["head_dim"]
    gen = torch.Generator().manual_seed(args.seed)
    q64, k64, v64 = (torch.randn(T, h, d, generator=gen, dtype=torch.float64) for h in (H, G, G))
    dout64 = torch.randn(T, H, d, generator=gen, dtype=torch.float64)
    s64 = (torch.arange(len(lengths) * G).view(len(lengths), G) % 2).double()  # a mix of FA and SSA heads
    leaves = [t.clone().requires_grad_() for t in (q64, k64, v64, s64)]
    ref, ref_fa, ref_ssa = brute_hybrid(*leaves, lengths, sink, window)
    ref.backward(dout64)
    ref_grads = [t.grad for t in leaves]
    cuda = torch.device(device).type == "cuda"
    impls = ["flex"] if cuda else ["masked", "flex"]  # on CPU 'flex' is the eager (unfused) implementation
    fas = [(n, probe_fa(n, c, 512, dtype, device)[0]) for n in fa_candidates(args.fa_backend, dtype)] if cuda \
        else [("cpu-default", False)]
    rel = lambda a, b: ((a.double().cpu() - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()
    ok_all, report = True, {}
    for (fa_name, repeat), impl in ((f, i) for f in fas for i in impls):
        if repeat is None:
            ok_all = False
            print(f"[check] fa={fa_name}: unusable", flush=True)
            continue
        att = HybridAttention(sink, window, impl, device, repeat_kv=repeat)
        ctx = sdpa_kernel([FA_BACKENDS[fa_name]]) if cuda else contextlib.nullcontext()
        grad_ok = cuda or impl != "flex"  # FlexAttention has no CPU backward: the CPU flex check is forward only
        q, k, v, s = (t.to(device, dtype if t.dim() == 3 else torch.float32).requires_grad_(grad_ok)
                      for t in (q64, k64, v64, s64))
        with ctx:
            fa, ssa, off = [], [], 0
            with torch.no_grad():
                for n in lengths:
                    qb, kb, vb = (t[off:off + n].transpose(0, 1).unsqueeze(0) for t in (q, k, v))
                    fa.append(att.fa(qb, kb, vb)[0].transpose(0, 1))
                    ssa.append(att.ssa(qb, kb, vb, n)[0].transpose(0, 1))
                    off += n
            out = att(q, k, v, s, lengths)
            if grad_ok:
                out.backward(dout64.to(device, dtype))
        errs = {"ssa": rel(torch.cat(ssa), ref_ssa), "fa": rel(torch.cat(fa), ref_fa), "hybrid": rel(out.detach(), ref)}
        grads = {f"d{n}": rel(t.grad, g) for n, t, g in zip("qkvs", (q, k, v, s), ref_grads)} if grad_ok else {}
        ok = all(e <= tol_out for e in errs.values()) and all(e <= tol_grad for e in grads.values())
        label = f"ssa={impl} fa={fa_name}{'+repeat_kv' if repeat else ''} dtype={args.dtype}"
        print(f"[check] {label}: " + " ".join(f"{k_}={e:.2e}" for k_, e in {**errs, **grads}.items())
              + f"  (tol out {tol_out:g}, grad {tol_grad:g}) {'OK' if ok else 'FAIL'}", flush=True)
        report[label] = {**errs, **grads, "ok": ok}
        ok_all = ok_all and ok
    return ok_all, report


# ---------------------------------------------------------------- main
def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=PRESETS, default="qwen3-8b")
    for f in SHAPE_FIELDS:
        ap.add_argument("--" + f.replace("_", "-"), type=int, help=f"override the preset's {f}")
    ap.add_argument("--tokens", default="16384,32768,65536", help="pack sizes, each split evenly in --nsamples")
    ap.add_argument("--nsamples", type=int, default=3)
    ap.add_argument("--samples", action="append", default=[], help="explicit sample lengths of one pack (repeatable)")
    ap.add_argument("--sink", type=int, default=128)
    ap.add_argument("--window", type=int, default=2048)
    ap.add_argument("--dtype", choices=DTYPES, default="bfloat16")
    ap.add_argument("--fa-backend", choices=["auto", "cudnn", "flash", "efficient"], default="auto")
    ap.add_argument("--ssa", choices=["auto", "flex", "masked"], default="auto", help="auto: flex on CUDA, masked on CPU")
    ap.add_argument("--compile", choices=["elementwise", "layer", "off"], default="elementwise")
    ap.add_argument("--keep-layers", type=int, default=0, help="the last N layers skip checkpointing (keep activations)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--peak-tflops", type=float, default=800.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--omega", type=float, default=0.5,
                    help="routers start streaming about this fraction of the heads, as bench-train --omega")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--check", action="store_true", help="compare the attention paths with float64 brute force")
    ap.add_argument("--profile", action="store_true", help="one more step under torch.profiler: device time by kernel")
    ap.add_argument("--vary-lengths", action="store_true",
                    help="every step's samples get lengths no earlier step had, as packs of real data do")
    ap.add_argument("--out")
    args = ap.parse_args()
    if not 0 < args.omega < 1:
        ap.error(f"--omega must be in (0, 1), got {args.omega}")

    c = dict(PRESETS[args.preset])
    c.update({f: getattr(args, f) for f in SHAPE_FIELDS if getattr(args, f) is not None})
    device, dtype = args.device, DTYPES[args.dtype]
    cuda = torch.device(device).type == "cuda"
    torch.manual_seed(args.seed)
    torch._dynamo.config.recompile_limit = 64  # 36 layers share code objects; several sample lengths per run
    info = {"command": " ".join(sys.argv), "machine": torch.cuda.get_device_name() if cuda else "cpu",
            "torch": torch.__version__, "cudnn": torch.backends.cudnn.version() if cuda else None,
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "commit": subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip() or None,
            "preset": args.preset}

    if args.check:
        ok, report = run_check(args, c, device, dtype)
        if args.out:
            with open(args.out, "w") as f:
                json.dump({**info, "check": report}, f, indent=2)
        sys.exit(0 if ok else 1)

    packs = [even_lengths(int(t), args.nsamples) for t in args.tokens.split(",") if t] if args.tokens else []
    packs += [[int(n) for n in s.split(",")] for s in args.samples]
    packs.sort(key=sum)  # smallest first: an OOM at the largest pack leaves the others measured
    t0 = time.perf_counter()
    model = Model(c, dtype, device, args.omega)
    opt = torch.optim.AdamW(model.router_params(), lr=5e-4)
    print(f"[init] {args.preset} {c} in {time.perf_counter() - t0:.1f} s", flush=True)
    ssa_impl = args.ssa if args.ssa != "auto" else ("flex" if cuda else "masked")
    probe_n = min(16384, max(max(p) for p in packs))
    fa_name, repeat = pick_fa_backend(args.fa_backend, c, probe_n, dtype, device)
    fa_label = fa_name + ("+repeat_kv" if repeat else "")
    att = HybridAttention(args.sink, args.window, ssa_impl, device, repeat_kv=repeat)
    compile_mode = args.compile
    layer_fns = set_compile(compile_mode, model)
    # sdpa_kernel sets global flags; it must cover the backward too, where checkpointing re-runs the forward.
    fa_ctx = (lambda: sdpa_kernel([FA_BACKENDS[fa_name]])) if cuda else contextlib.nullcontext
    config = {**c, "dtype": args.dtype, "sink": args.sink, "window": args.window, "checkpoint": True, "keep_layers": args.keep_layers,
              "pool_tokens": POOL_TOKENS, "tau": TAU, "target": TARGET, "omega_init": args.omega, "ssa_impl": ssa_impl,
              "params_backbone": sum(p.numel() for n, p in model.named_parameters() if ".router." not in n),
              "params_router": sum(p.numel() for p in model.router_params()),
              "warmup": args.warmup, "steps": args.steps, "peak_tflops": args.peak_tflops}
    runs = []
    for lengths in packs:
        while True:
            try:
                with fa_ctx():
                    run = bench_pack(model, opt, lengths, args, att, layer_fns, device, dtype, c)
                break
            except Exception as e:  # noqa: BLE001 - OOM is a result; a compile failure falls back to eager
                if is_oom(e):
                    run = {"tokens": sum(lengths), "samples": lengths, "oom": True}
                    break
                if compile_mode == "off":  # record it and go on: the other packs may still be measured
                    traceback.print_exc()
                    run = {"tokens": sum(lengths), "samples": lengths, "error": f"{type(e).__name__}: {str(e)[:500]}"}
                    break
                warnings.warn(f"--compile {compile_mode} failed ({type(e).__name__}: {str(e)[:300]}); retrying eager")
                compile_mode = "off"
                layer_fns = set_compile(compile_mode, model)
            finally:
                opt.zero_grad(set_to_none=True)
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()
        run.update(fa_backend=fa_label, ssa_impl=ssa_impl, compiled=compile_mode)
        runs.append(run)
        if run.get("oom") or run.get("error"):
            print(f"[run] T={run['tokens']} samples={lengths}: {'OOM' if run.get('oom') else run['error']}", flush=True)
        else:
            mem = f"{run['peak_memory_gb']:.1f} GB" if run["peak_memory_gb"] is not None else "n/a"
            print(f"[run] T={run['tokens']} samples={lengths}: step {run['step_ms']:.1f} ms, "
                  f"{run['tokens_per_s']:.0f} tok/s, MFU {run['mfu_dense_equivalent']:.3f}, peak {mem}, "
                  f"omega {run['omega_msr']:.3f}, fa {fa_label}, ssa {ssa_impl}, compile {compile_mode} "
                  f"[{time.perf_counter() - t0:.0f} s since start]", flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({**info, "config": config, "runs": runs}, f, indent=2)
            f.write("\n")


if __name__ == "__main__":
    main()
