#!/usr/bin/env python3
"""Interoperability check of an exported router (docs/router-format.md) with plain PyTorch.

Rebuilds each layer's Attention Router from router.safetensors with torch.nn layers exactly as
ELASTIC.md §4 describes (pooling, task MLP, router MLP, argmax with index 1 = full attention)
and compares its logits and decisions with those `elastic inspect --dump` recorded on the same
key states. Exits 1 on a mismatch. Needs only torch and safetensors.

  elastic inspect --model M --router R --data D --dump dump.safetensors
  python3 tools/router_interop.py --router R --dump dump.safetensors
"""
import argparse
import json
import os
import sys

import torch
from safetensors.torch import load_file


def build_router(weights, layer, d, m):
    pre = f"model.layers.{layer}.self_attn.mask_allocator."
    feat = torch.nn.Sequential(torch.nn.Linear(d, m * d), torch.nn.SiLU(), torch.nn.Linear(m * d, d))
    head = torch.nn.Sequential(torch.nn.Linear(d, m * d), torch.nn.SiLU(), torch.nn.Linear(m * d, d), torch.nn.SiLU(),
                               torch.nn.Linear(d, 2))
    feat.load_state_dict({k[len(pre + "cls_feat_extractor."):]: v for k, v in weights.items()
                          if k.startswith(pre + "cls_feat_extractor.")})
    head.load_state_dict({k[len(pre + "cls_router_head_agnostic."):]: v for k, v in weights.items()
                          if k.startswith(pre + "cls_router_head_agnostic.")})
    return feat.double(), head.double()


def pool(keys, cu, prompts, mode, p):
    out = []
    for b in range(len(cu) - 1):
        k = keys[cu[b]:cu[b + 1]]
        pb, pe = int(prompts[b][0]), int(prompts[b][1])
        prompt = k[pb:pe]
        if mode == "first_token":
            out.append(prompt[0])
        elif mode == "prompt_mean":
            out.append(prompt.mean(0))
        else:  # boundary: mean over the first P and the last P prompt tokens
            n = min(p, prompt.shape[0])
            out.append(torch.cat([prompt[:n], prompt[-n:]]).mean(0))
    return torch.stack(out)  # [B, H_kv, d]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--router", required=True)
    ap.add_argument("--dump", required=True)
    args = ap.parse_args()
    manifest = json.load(open(os.path.join(args.router, "router.json")))
    weights = load_file(os.path.join(args.router, "router.safetensors"))
    dump = load_file(args.dump)
    r = manifest["router"]
    d, m = r["head_dim"], r["hidden_multiplier"]
    cu = dump["cu_seqlens"].tolist()
    prompts = dump["prompt_ranges"].tolist()
    layers = manifest["base_model"]["num_layers"]
    worst, mismatched = 0.0, 0
    for layer in range(layers):
        feat, head = build_router(weights, layer, d, m)
        with torch.no_grad():
            pooled = pool(dump[f"keys.{layer}"].double(), cu, prompts, r["pooling_mode"], r["pool_tokens"])
            logits = head(feat(pooled))
        ours = dump[f"logits.{layer}"].double()
        err = ((logits - ours).norm() / ours.norm().clamp_min(1e-12)).item()
        worst = max(worst, err)
        decisions = (logits.argmax(-1) == r["fa_index"]).double()
        # Ties are impossible to call consistently; count only decisions with a clear margin.
        margin = (logits[..., 1] - logits[..., 0]).abs() > 1e-4
        mismatched += int(((decisions != dump[f"decisions.{layer}"].double()) & margin).sum())
    report = {"layers": layers, "worst_logit_rel_err": worst, "decision_mismatches": mismatched,
              "ok": worst < 1e-4 and mismatched == 0}
    print(json.dumps(report))
    sys.exit(0 if report["ok"] else 1)


if __name__ == "__main__":
    main()
