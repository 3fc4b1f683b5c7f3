#!/usr/bin/env python3
"""Tokenizer throughput: elastic (tools/bench_tokenizer.cpp) vs Hugging Face `tokenizers`.

    python3 bench/tokenizer_bench.py --tokenizers /work/shared/tokenizers \
        --bench-bin build-text/bench_tokenizer [--out bench/results/tokenizer_<date>.json]

Builds a deterministic mixed text (~3 MB: Python source and license prose found on this
machine, plus the multilingual golden corpus) in a temp dir, splits it into ~4 KiB documents,
and measures bytes/s for add_special_tokens=False encoding:
  elastic 1 thread (encode), elastic 2 threads (encode_batch),
  HF encode() loop, HF encode_batch with RAYON_NUM_THREADS=1 and =2.
Best of --reps timed passes after one warm-up pass (both sides cache pre-tokens).
"""
import argparse
import datetime
import glob
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def build_text(target_bytes=3_000_000):
    parts = []
    corpus = os.path.join(ROOT, "tests", "data", "tokenizer", "corpus.json")
    with open(corpus, encoding="utf-8") as f:
        multi = "\n".join(c["text"] for c in json.load(f)["cases"])
    import tokenizers  # noqa: F401  (its location gives us Python sources to read)
    srcs = sorted(glob.glob(os.path.join(os.path.dirname(tokenizers.__file__), "..", "*", "**", "*.py"),
                            recursive=True))
    prose = sorted(glob.glob("/usr/share/common-licenses/*"))
    # each file at most once (no repetition that would inflate pre-token cache hits), the
    # multilingual corpus after every 10 files
    files = []
    for k in range(max(len(srcs), len(prose))):
        files += [pool[k] for pool in (prose, srcs) if k < len(pool)]
    size = 0
    for i, p in enumerate(files):
        if size >= target_bytes:
            break
        try:
            with open(p, encoding="utf-8") as f:
                t = f.read()
        except (UnicodeDecodeError, OSError):
            continue
        parts.append(t)
        size += len(t.encode("utf-8"))
        if i % 10 == 0:
            parts.append(multi)
            size += len(multi.encode("utf-8"))
    return "".join(parts)


def split_docs(text, chunk=4096):
    docs, pos = [], 0
    while pos < len(text):
        end = min(len(text), pos + chunk)
        nl = text.find("\n", end)
        end = len(text) if nl < 0 else nl + 1
        docs.append(text[pos:end])
        pos = end
    return docs


HF_CHILD = r"""
import json, sys, time
from tokenizers import Tokenizer
path, docs_file, mode, reps = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
docs = [json.loads(l) for l in open(docs_file, encoding="utf-8")]
tok = Tokenizer.from_file(path)
nbytes = sum(len(d.encode("utf-8")) for d in docs)
def run():
    if mode == "single":
        return sum(len(tok.encode(d, add_special_tokens=False).ids) for d in docs)
    return sum(len(e.ids) for e in tok.encode_batch(docs, add_special_tokens=False))
t0 = time.perf_counter(); ntok = run(); cold = time.perf_counter() - t0
secs = []
for _ in range(reps):
    t0 = time.perf_counter(); ntok = run(); secs.append(time.perf_counter() - t0)
print(json.dumps({"bytes": nbytes, "docs": len(docs), "tokens": ntok, "seconds": secs,
                  "best_bytes_per_s": nbytes / min(secs), "cold_seconds": cold, "cold_bytes_per_s": nbytes / cold}))
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokenizers", required=True)
    ap.add_argument("--bench-bin", default=os.path.join(ROOT, "build-text", "bench_tokenizer"))
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    import tokenizers
    text = build_text()
    tmp = tempfile.mkdtemp(prefix="tokbench_")
    text_file = os.path.join(tmp, "docs.jsonl")  # one JSON string per document, read by both sides
    with open(text_file, "w", encoding="utf-8") as f:
        for d in split_docs(text):
            f.write(json.dumps(d) + "\n")

    load_before = os.getloadavg()
    results = []
    for name in ["qwen3", "llama3"]:
        d = os.path.join(args.tokenizers, name)
        for threads in (1, 2):
            out = subprocess.run([args.bench_bin, d, text_file, "--threads", str(threads), "--reps", str(args.reps)],
                                 check=True, capture_output=True, text=True).stdout
            r = json.loads(out)
            r.update({"tokenizer": name, "impl": "elastic", "api": "encode" if threads == 1 else "encode_batch"})
            results.append(r)
            print(name, "elastic", threads, f"{r['best_bytes_per_s'] / 1e6:.2f} MB/s (cold {r['cold_bytes_per_s'] / 1e6:.2f})", file=sys.stderr)
        for mode, threads in (("single", 1), ("batch", 1), ("batch", 2)):
            env = dict(os.environ, RAYON_NUM_THREADS=str(threads), TOKENIZERS_PARALLELISM="true")
            out = subprocess.run([sys.executable, "-c", HF_CHILD, os.path.join(d, "tokenizer.json"), text_file, mode,
                                  str(args.reps)], check=True, capture_output=True, text=True, env=env).stdout
            r = json.loads(out)
            r.update({"tokenizer": name, "impl": "hf_tokenizers", "threads": threads,
                      "api": "encode" if mode == "single" else "encode_batch"})
            results.append(r)
            print(name, "hf", mode, threads, f"{r['best_bytes_per_s'] / 1e6:.2f} MB/s (cold {r['cold_bytes_per_s'] / 1e6:.2f})", file=sys.stderr)
    # token counts must agree between implementations
    for name in ["qwen3", "llama3"]:
        counts = {r["tokens"] for r in results if r["tokenizer"] == name}
        assert len(counts) == 1, f"{name}: token counts differ: {counts}"

    try:
        commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "HEAD"], capture_output=True, text=True,
                                check=True).stdout.strip() or None
    except (subprocess.CalledProcessError, FileNotFoundError):
        commit = None
    doc = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "command": " ".join([os.path.relpath(sys.argv[0], ROOT)] + sys.argv[1:]),
        "load_average_before_after": [list(load_before), list(os.getloadavg())],
        "machine": {"uname": subprocess.run(["uname", "-a"], capture_output=True, text=True).stdout.strip(),
                    "nproc": int(subprocess.run(["nproc"], capture_output=True, text=True).stdout)},
        "git_commit": commit,
        "hf_tokenizers_version": tokenizers.__version__,
        "text": {"bytes": len(text.encode("utf-8")), "docs": len(split_docs(text)),
                 "source": "Python sources next to the tokenizers package + /usr/share/common-licenses + golden corpus"},
        "metric": ("best_bytes_per_s = input UTF-8 bytes / best wall time of --reps passes after 1 warm-up pass; "
                   "cold_bytes_per_s = the warm-up pass on a freshly loaded tokenizer (empty pre-token cache)"),
        "results": results,
    }
    out = args.out or os.path.join(HERE, "results", f"tokenizer_{datetime.date.today().isoformat()}.json")
    with open(out, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    print("wrote", out, file=sys.stderr)


if __name__ == "__main__":
    main()
