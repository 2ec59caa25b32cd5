"""Sensitivity sweep with vs without activation caching: same numbers, how much faster.

A full prune sweep (every coupled group at 25/50/75 %) is run twice in one process on the same model
and data — once replaying the activations a change cannot affect (``slimcnn.search._cache``), once
evaluating every transformed copy from scratch — and the per-point metrics are asserted identical.

Models: ``slimcnn:vdsr`` ×2 on Set5 images (``--sr-images``) and ``slimcnn:resnet56`` on the
first ``--cls-limit`` CIFAR-10 JPEG test images (shared weights and data; see the data README).
The machine is shared, so the two modes run interleaved per model and the load average is recorded.

Usage: ``python benchmarks/sensitivity_speed.py [--sr-images butterfly] [--sr-crop 96] [--cls-model resnet56] [--cls-limit 500] [--only vdsr|cifar]``
Writes ``benchmarks/results/sensitivity_speed.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from slimcnn.models import load_model
from slimcnn.paths import shared_path
from slimcnn.search.families import PruneFamily
from slimcnn.search.sensitivity import sensitivity_sweep
from slimcnn.tasks import make_task

OUT = Path(__file__).parent / "results"


def _case(name: str, source: str, task_kind: str, data: Path, limit: int, scale: int | None) -> dict[str, Any]:
    loaded = load_model(source, scale=scale)
    task = make_task(task_kind, data, info=loaded.info, scale=scale)
    family = PruneFamily(example_input=task.example_input())
    knobs = family.knobs(loaded.model, task.example_input())
    runs: dict[str, Any] = {}
    for cache in (True, False):
        t0 = time.perf_counter()
        table = sensitivity_sweep(loaded.model, task, knobs, family.apply, limit=limit, cache=cache, progress=False)
        runs["cache" if cache else "plain"] = {"seconds": time.perf_counter() - t0, "table": table}
    a, b = runs["cache"]["table"], runs["plain"]["table"]
    pa = {(p.knob, p.amount): p.metric for p in a.points}
    pb = {(p.knob, p.amount): p.metric for p in b.points}
    assert pa.keys() == pb.keys(), "the two sweeps measured different points"
    max_diff = max(abs(pa[k] - pb[k]) for k in pa)
    assert max_diff <= 1e-6 * max(1.0, abs(a.baseline)), f"cached sweep differs by {max_diff}"
    t_cache, t_plain = runs["cache"]["seconds"], runs["plain"]["seconds"]
    return {
        "case": name, "source": source, "data": str(data), "limit": limit, "knobs": len(knobs),
        "points": len(a.points), "metric": a.metric, "baseline": a.baseline, "max_abs_metric_diff": max_diff,
        "seconds_cache": round(t_cache, 2), "seconds_plain": round(t_plain, 2),
        "speedup": round(t_plain / t_cache, 2), "replayed_modules": a.conditions["replayed_modules"],
        "recording_passes": a.conditions["recording_passes"],
        "loadavg_after": os.getloadavg(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sr-limit", type=int, default=1)
    ap.add_argument("--sr-images", default="butterfly",
                    help="comma-separated Set5 names to sweep on (default: the 256x256 butterfly; CPU time)")
    ap.add_argument("--sr-crop", type=int, default=0, help="crop each SR image to its top-left NxN (0: whole)")
    ap.add_argument("--cls-limit", type=int, default=500)
    ap.add_argument("--only", choices=("vdsr", "cifar"), default=None)
    ap.add_argument("--cls-model", default="resnet56", help="CIFAR ResNet of the zoo (resnet20, resnet56)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    set5, cifar = shared_path("sr", "Set5"), shared_path("cifar10-jpeg75", "test-10k.tar")
    cases = []
    tmp = tempfile.TemporaryDirectory()
    if args.only in (None, "vdsr") and set5 is not None:
        sr_data = Path(tmp.name) / "set5"
        sr_data.mkdir()
        for name in args.sr_images.split(","):
            img = Image.open(set5 / f"{name}.png")
            if args.sr_crop:
                img = img.crop((0, 0, args.sr_crop, args.sr_crop))
            img.save(sr_data / f"{name}.png")
        crop = f" ({args.sr_crop}² crop)" if args.sr_crop else ""
        cases.append((f"vdsr x2 / Set5 {args.sr_images}{crop}", "slimcnn:vdsr", "sr", sr_data, args.sr_limit, 2))
    if args.only in (None, "cifar") and cifar is not None:
        cases.append((f"{args.cls_model} / CIFAR-10 JPEG test", f"slimcnn:{args.cls_model}", "classification", cifar,
                      args.cls_limit, None))
    if not cases:
        raise SystemExit("needs ../shared/data (sr/Set5 and/or cifar10-jpeg75/test-10k.tar)")
    load0 = os.getloadavg()
    for case in cases:
        row = _case(*case)
        print(json.dumps(row), flush=True)
        write_results([row], args.threads, load0)


def write_results(rows: list[dict[str, Any]], threads: int, load0: tuple[float, ...]) -> None:
    """Merge ``rows`` into ``results/sensitivity_speed.{json,md}`` (rows of other cases are kept)."""
    OUT.mkdir(exist_ok=True)
    path = OUT / "sensitivity_speed.json"
    old = json.loads(path.read_text()) if path.exists() else {"rows": []}
    keep = [r for r in old.get("rows", []) if r["case"] not in {r2["case"] for r2 in rows}]
    all_rows = keep + rows
    path.write_text(json.dumps({"threads": threads, "loadavg_before": load0, "rows": all_rows}, indent=2))
    lines = [
        "# Sensitivity sweep: activation cache vs none",
        "",
        "Full prune sweep (every coupled group at 25/50/75 %, l1 criterion), one process, "
        f"{threads} threads, CPU shared with other jobs (load average recorded per row: 1/5/15 min). "
        "Metrics per point asserted identical between the two modes.",
        "",
        "| case | eval images | knobs | points | metric | baseline | max abs Δmetric | plain s | cached s | speed-up "
        "| recording passes | load avg |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in all_rows:
        la = "/".join(f"{x:.1f}" for x in r["loadavg_after"])
        lines.append(f"| {r['case']} | {r['limit']} | {r['knobs']} | {r['points']} | {r['metric']} | "
                     f"{r['baseline']:.4f} | {r['max_abs_metric_diff']:.1e} | {r['seconds_plain']:.1f} | "
                     f"{r['seconds_cache']:.1f} | {r['speedup']:.2f}× | {r.get('recording_passes', '–')} | {la} |")
    lines += ["", "Regenerate: `python benchmarks/sensitivity_speed.py` (needs `../shared/data`)."]
    (OUT / "sensitivity_speed.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
