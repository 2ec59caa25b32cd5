"""ONNX Runtime vs torch eager on the CPU, interleaved in one process, for a few models.

Writes ``benchmarks/results/latency_runtimes.{md,json}`` with the machine, threads and versions.

    .venv/bin/python benchmarks/latency_runtimes.py [--threads N] [--runs N]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from pathlib import Path

import torch

from slimcnn._io import write_json, write_text
from slimcnn.measure import compare_latency, cpu_model, physical_cores, profile
from slimcnn.models import load_model

CASES: list[tuple[str, dict[str, int], tuple[int, ...] | None]] = [
    ("torchvision:resnet18", {}, (1, 3, 224, 224)),
    ("slimcnn:fsrcnn", {"scale": 3}, (1, 1, 128, 128)),  # a 128x128 LR tile -> 384x384
    ("slimcnn:resnet56", {}, (1, 3, 32, 32)),
]


def main(argv: list[str] | None = None) -> int:
    """Run the comparison and write the results; returns 0."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = ap.parse_args(argv)
    import onnxruntime

    threads = args.threads or physical_cores()
    rows = []
    for source, opts, shape in CASES:
        loaded = load_model(source, **opts)  # type: ignore[arg-type]
        shape = shape or tuple(loaded.info.input_shape)
        x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
        cost = profile(loaded.model, x)
        stats = compare_latency({"onnxruntime": loaded.model, "torch": loaded.model}, x, threads=threads,
                                warmup=args.warmup, runs=args.runs, runtimes={"torch": "torch"})
        ort, eager = stats["onnxruntime"], stats["torch"]
        rows.append({"model": source, "input_shape": list(shape), "macs": cost.macs, "params": cost.params,
                     "onnxruntime": ort, "torch": eager, "torch_over_ort": eager.median_ms / ort.median_ms})
        print(f"{source}: ort {ort.median_ms:.2f} ms, torch {eager.median_ms:.2f} ms", file=sys.stderr)
    env = {"cpu": cpu_model(), "threads": threads, "physical_cores": physical_cores(),
           "torch": torch.__version__, "onnxruntime": onnxruntime.__version__, "python": platform.python_version(),
           "runs": args.runs, "warmup": args.warmup, "loadavg_1m_after": round(os.getloadavg()[0], 2),
           "method": "compare_latency: both runtimes interleaved round-robin in one process; median (p10-p90)"}
    write_json(args.out / "latency_runtimes.json", {"environment": env, "results": rows})
    lines = [
        "# ONNX Runtime vs torch eager (CPU, batch 1)",
        "",
        f"CPU: {env['cpu']}, {threads} threads (intra-op), torch {env['torch']}, onnxruntime {env['onnxruntime']}; "
        f"{args.runs} timed runs after {args.warmup} warm-up, interleaved round-robin in one process "
        f"(ORT workers spinning only inside a run); 1-min load average after the run: {env['loadavg_1m_after']}.",
        "",
        "| model | input | MACs | ORT median ms (p10-p90) | torch median ms (p10-p90) | torch / ORT |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        o, t = r["onnxruntime"], r["torch"]
        lines.append(f"| {r['model']} | {'x'.join(map(str, r['input_shape']))} | {r['macs'] / 1e6:.1f} M | "
                     f"{o.median_ms:.2f} ({o.p10_ms:.2f}-{o.p90_ms:.2f}) | {t.median_ms:.2f} ({t.p10_ms:.2f}-{t.p90_ms:.2f}) "
                     f"| {r['torch_over_ort']:.2f}x |")
    write_text(args.out / "latency_runtimes.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
