#!/usr/bin/env python3
"""Copies the small, readable part of a device_run.sh result into docs/elasticity/<session>/<run>/.

    docs/elasticity/collect_run.py --tgz elasticity.tgz --variant m --dest docs/elasticity/session7/run9_m \
        [--driver driver.log] [--init-tgz elasticity_of_the_init_backbone.tgz --init-variant k]

Metrics are thinned (backbone every 50 steps, router about 200 rows) so the repository stays small; models and
data are left out (device_run.sh rebuilds them). An init backbone (BB_INIT_TGZ curriculum) gets its own
init_<variant>_* files so the whole curriculum is on record.
"""
import argparse, json, shutil, tarfile, tempfile
from pathlib import Path


def thin(src: Path, dst: Path, every: int):
    rows = [l for l in src.read_text().splitlines() if l.strip()]
    keep = [l for l in rows if json.loads(l)["step"] % every in (0, 1)] + rows[-1:]
    dst.write_text("\n".join(dict.fromkeys(keep)) + "\n")


def copy_backbone(run: Path, dest: Path, prefix: str):
    for stage, name in (("backbone", "backbone"), ("backbone_lookup", "backbone_stage1")):
        if (run / stage / "metrics.jsonl").exists():
            thin(run / stage / "metrics.jsonl", dest / f"{prefix}{name}.metrics.every50.jsonl", 50)
    if (run / "backbone" / "config.yaml").exists():
        shutil.copy(run / "backbone" / "config.yaml", dest / f"{prefix}backbone.config.yaml")
    if (run / "bbeval" / "eval.json").exists():
        shutil.copy(run / "bbeval" / "eval.json", dest / f"{prefix}backbone_eval.json")
    if (run / "commands.txt").exists():
        shutil.copy(run / "commands.txt", dest / f"{prefix}commands.txt")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tgz", required=True)
    ap.add_argument("--variant", required=True)
    ap.add_argument("--dest", required=True)
    ap.add_argument("--driver", action="append", default=[])
    ap.add_argument("--init-tgz")
    ap.add_argument("--init-variant")
    ap.add_argument("--routers-only", action="store_true", help="a BACKBONE_TGZ call: its backbone is already collected")
    ap.add_argument("--router-name", default="base", help="name of the router of a call without RV (router_<name>/)")
    a = ap.parse_args()
    dest = Path(a.dest)
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tarfile.open(a.tgz).extractall(tmp)
        root = Path(tmp)
        if not a.routers_only:
            copy_backbone(root / a.variant, dest, "")
        routers = [(r, r.name.split(".", 1)[1]) for r in sorted(root.glob(f"{a.variant}.*"))]
        if (root / a.variant / "router").exists():  # a call without RV: the router is in the variant's directory
            routers.append((root / a.variant, a.router_name))
        for r, name in routers:
            out = dest / f"router_{name}"
            out.mkdir(exist_ok=True)
            for f in ("results.md", "results.json", "mask.csv", "mask.scores.csv", "commands.txt"):
                if (r / f).exists():
                    shutil.copy(r / f, out / f)
            if (r / "pipeline.log").exists():  # without the progress lines
                lines = (r / "pipeline.log").read_text().splitlines(keepends=True)
                (out / "pipeline.log").write_text("".join(l for l in lines if " ETA " not in l))
            if (r / "router" / "metrics.jsonl").exists():
                steps = sum(1 for _ in open(r / "router" / "metrics.jsonl"))
                every = max(10, steps // 200 // 10 * 10)  # about 200 rows a run
                thin(r / "router" / "metrics.jsonl", out / f"router.metrics.every{every}.jsonl", every)
                shutil.copy(r / "router" / "config.yaml", out / "router.config.yaml")
                shutil.copy(r / "router" / "router.json", out / "router.json")
            for sub in ("eval", "plots"):
                if (r / sub).exists():
                    shutil.copytree(r / sub, out / sub, dirs_exist_ok=True)
        if a.init_tgz:
            with tempfile.TemporaryDirectory() as tmp2:
                tarfile.open(a.init_tgz).extractall(tmp2)
                copy_backbone(Path(tmp2) / a.init_variant, dest, f"init_{a.init_variant}_")
    for i, d in enumerate(a.driver):
        shutil.copy(d, dest / ("device_driver.log" if i == 0 else f"device_driver{i + 1}.log"))


if __name__ == "__main__":
    main()
