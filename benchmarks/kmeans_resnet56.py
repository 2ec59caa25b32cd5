"""Bits vs accuracy vs bytes: per-layer k-means on CIFAR ResNet-56 (shared trained weights).

Every conv/linear layer of ``slimcnn:resnet56`` at 8/6/5/4 bits, without pruning and with every
layer magnitude-pruned 2x (prune, then quantise; no fine-tuning, as in Tomè et al.). Top-1 on the
JPEG-q75 CIFAR-10 test copy (relative numbers only, see the data README).

Usage: ``python benchmarks/kmeans_resnet56.py [--data PATH] [--limit N]``
Writes ``benchmarks/results/kmeans_resnet56.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch

from slimcnn.models import load_model
from slimcnn.paths import shared_path
from slimcnn.quantize import KMeansQuantSpec, quantize_model, save_packed
from slimcnn.tasks import make_task

OUT = Path(__file__).parent / "results"
KIB = 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=None, help="CIFAR-10 test ImageFolder/.tar (default: shared test-10k.tar)")
    ap.add_argument("--limit", type=int, default=None, help="first N test images only")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    data = args.data or shared_path("cifar10-jpeg75", "test-10k.tar")
    if data is None:
        raise SystemExit("needs ../shared/data/cifar10-jpeg75/test-10k.tar or --data")
    loaded = load_model("slimcnn:resnet56")
    task = make_task("classification", data, info=loaded.info)
    base = task.evaluate(loaded.model, limit=args.limit)
    original = sum(p.numel() for p in loaded.model.parameters()) * 4
    rows = []
    for prune in (None, "*=2"):
        for bits in (8, 6, 5, 4):
            spec = KMeansQuantSpec.parse(str(bits), prune)
            t0 = time.perf_counter()
            res = quantize_model(loaded.model, spec)
            secs = time.perf_counter() - t0
            with tempfile.TemporaryDirectory() as d:
                pack = save_packed(Path(d) / "m.slim", res, source=loaded.source, info=loaded.info)
            score = task.evaluate(res.model, limit=args.limit)
            row = {"bits": bits, "prune": prune or "-", "top1": score.value, "drop": base.drop_to(score),
                   "payload_bytes": res.payload_bytes, "file_bytes": pack.file_bytes, "quantize_s": secs,
                   "solvers": sorted({r.solver for r in res.reports()})}
            rows.append(row)
            print(row, flush=True)
    out = {"model": "slimcnn:resnet56", "weights": loaded.info.weights, "data": str(data), "n": base.n,
           "baseline_top1": base.value, "original_bytes": original, "rows": rows,
           "environment": {"threads": args.threads, "torch": torch.__version__, "cpu_count": os.cpu_count()}}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "kmeans_resnet56.json").write_text(json.dumps(out, indent=2) + "\n")
    lines = [
        "# Per-layer k-means on CIFAR ResNet-56: bits vs accuracy vs bytes",
        "",
        f"`slimcnn:resnet56` with the shared trained weights; top-1 on {base.n:,} images of the JPEG-q75 CIFAR-10 "
        f"test copy (`{Path(str(data)).name}`; relative numbers only). Baseline top-1 **{base.value:.2f} %**; "
        f"float32 parameters {original / KIB:.0f} KiB. Exact 1-D k-means per layer, one codebook per layer, "
        "no fine-tuning; pruning = every conv/linear layer magnitude-pruned 2x before k-means. "
        "payload = bits x kept weights / 8 (paper accounting); file = honest `.slim` size (codebooks, "
        "sparsity masks, biases, BN statistics, header).",
        "",
        "| bits | prune | top-1 % | drop (points) | payload KiB | file KiB | payload CF | file CF |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['bits']} | {r['prune']} | {r['top1']:.2f} | {r['drop']:+.2f} | {r['payload_bytes'] / KIB:.1f} | "
            f"{r['file_bytes'] / KIB:.1f} | {original / r['payload_bytes']:.1f}x | {original / r['file_bytes']:.1f}x |"
        )
    lines.append("")
    (OUT / "kmeans_resnet56.md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
