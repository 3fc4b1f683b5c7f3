#!/usr/bin/env python3
"""Golden logits from Hugging Face transformers for the model fixtures CPU CI checks.

Run on the GPU machine (tools/gpu_check.sh does it). For each family (Qwen3, Llama 3 with
llama3 rope scaling, Qwen2 with qkv bias), builds a small random model with transformers,
saves it as a Hugging Face directory, and writes the logits of several samples of different
lengths, each run alone (the reference for our packed forward):

  OUT/<family>/config.json, model.safetensors   the model, as transformers saved it
  OUT/<family>/inputs.json                      {"samples": [[ids...], ...]}
  OUT/<family>/expected.safetensors             logits [tokens, vocab] fp32, samples concatenated

With --elastic BIN it also checks our binary on the device: fp32 and bf16 logits against
transformers' (each on CUDA), and that transformers loads `elastic make-tiny-model` output and
agrees with `elastic forward` on it. Prints one JSON line per check; exits 1 on a failure.
"""
import argparse
import json
import os
import subprocess
import sys

import torch
import transformers
from safetensors.torch import load_file, save_file

FAMILIES = {
    "qwen3": dict(cls="Qwen3Config", kw=dict(head_dim=16, rope_theta=1e6, tie_word_embeddings=True)),
    "llama": dict(cls="LlamaConfig", kw=dict(head_dim=16, rope_theta=5e5, tie_word_embeddings=False,
                                             rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                                           "high_freq_factor": 4.0, "original_max_position_embeddings": 64})),
    "qwen2": dict(cls="Qwen2Config", kw=dict(rope_theta=1e6, tie_word_embeddings=False)),
}
LENGTHS = [37, 5, 90, 1]


def make_model(family, seed):
    spec = FAMILIES[family]
    cfg = getattr(transformers, spec["cls"])(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                                             rms_norm_eps=1e-6, **spec["kw"])
    cfg._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(cfg, torch_dtype=torch.float32)
    with torch.no_grad():  # random norms and biases, so a loader that ignores them fails the check
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1 + 0.1 * torch.randn_like(p))
            elif name.endswith(".bias"):
                p.copy_(0.1 * torch.randn_like(p))
            else:
                p.copy_(0.05 * torch.randn_like(p))
    return model.eval()


def per_sample_logits(model, samples, device, dtype):
    model = model.to(device=device, dtype=dtype)
    outs = []
    with torch.no_grad():
        for s in samples:
            ids = torch.tensor([s], device=device)
            outs.append(model(input_ids=ids).logits[0].float().cpu())
    return torch.cat(outs)


def rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def run_elastic(binary, model_dir, samples, workdir, dtype, device):
    inp = os.path.join(workdir, "in.json")
    out = os.path.join(workdir, f"out_{dtype}_{device}.safetensors")
    with open(inp, "w") as f:
        json.dump({"samples": samples}, f)
    subprocess.run([binary, "forward", "--model", model_dir, "--input", inp, "--out", out, "--dtype", dtype,
                    "--device", device], check=True)
    return load_file(out)["logits"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--elastic", help="path of the elastic binary to check on this machine")
    ap.add_argument("--seed", type=int, default=1234)
    args = ap.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    ok = True
    report = []
    for i, family in enumerate(FAMILIES):
        d = os.path.join(args.out, family)
        os.makedirs(d, exist_ok=True)
        model = make_model(family, args.seed + i)
        model.save_pretrained(d, safe_serialization=True)
        g = torch.Generator().manual_seed(args.seed + 100 + i)
        samples = [torch.randint(0, 256, (n,), generator=g).tolist() for n in LENGTHS]
        with open(os.path.join(d, "inputs.json"), "w") as f:
            json.dump({"samples": samples}, f)
        ref_cpu = per_sample_logits(model, samples, "cpu", torch.float32)
        save_file({"logits": ref_cpu.contiguous()}, os.path.join(d, "expected.safetensors"))
        if args.elastic:
            for dtype, tol in (("float32", 1e-4), ("bfloat16", 2e-2)):
                ref = per_sample_logits(model, samples, device, getattr(torch, dtype))
                ours = run_elastic(args.elastic, d, samples, args.out, dtype, device)
                err = rel(ours, ref)
                good = err <= tol
                ok &= good
                report.append(dict(check="logits_vs_transformers", family=family, dtype=dtype, device=device,
                                   rel_err=err, tol=tol, ok=good))
            # transformers loads what make-tiny-model writes, and agrees with elastic on it.
            tiny = os.path.join(args.out, f"tiny_{family}")
            subprocess.run([args.elastic, "make-tiny-model", "--arch", family, "--out", tiny, "--vocab", "256",
                            "--hidden", "64", "--heads", "4", "--kv-heads", "2", "--head-dim", "16", "--mlp", "96",
                            "--seed", "7"] + (["--tie"] if family == "qwen3" else []), check=True)
            hf = transformers.AutoModelForCausalLM.from_pretrained(tiny, torch_dtype=torch.float32)
            ref = per_sample_logits(hf, samples, "cpu", torch.float32)
            ours = run_elastic(args.elastic, tiny, samples, args.out, "float32", "cpu")
            err = rel(ours, ref)
            good = err <= 1e-4
            ok &= good
            report.append(dict(check="make_tiny_model_loads_in_transformers", family=family, rel_err=err, tol=1e-4, ok=good))
    for r in report:
        print(json.dumps(r))
    with open(os.path.join(args.out, "golden_report.json"), "w") as f:
        json.dump({"transformers": transformers.__version__, "torch": torch.__version__, "checks": report}, f, indent=2)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
