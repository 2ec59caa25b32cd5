"""Hardware-aware low-rank decomposition of ResNet-50 on ONNX Runtime (CPU): only-faster vs --all.

torchvision ResNet-50 built with ``weights=None``: only latency, MACs and parameters are measured
here, and dense float latency does not depend on the weight values (accuracy: see
``lowrank_resnet56.py``). Input 1x3x224x224, ratio alpha = 2 (the paper's "2x ranks"), ranks rounded
to multiples of 8.

1. only-faster: each Conv2d/Linear is timed alone (quick rank scan, then original vs factors side
   by side); it is replaced only if confirmed >= ``--min-speedup`` faster.
2. --all: every layer whose factors hold fewer weights is replaced; its side-by-side time is still
   recorded, so the layers that got slower are listed.
3. The original and both decomposed models are timed end to end in ONE process, interleaved
   round-robin (``slimcnn.measure.compare_latency``): median, p10, p90, n.

The latency cache is a fresh temporary directory (``SLIMCNN_CACHE_DIR``) so timings from another
run or another load level are never reused. The load average is recorded before and after.

Usage: ``python benchmarks/lowrank_resnet50.py --out benchmarks/results [--threads N]``
Writes ``lowrank_resnet50.{json,md}`` in ``--out``. About 5-10 min on a loaded 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import torch


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else []


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    ap.add_argument("--threads", type=int, default=None, help="ORT intra-op threads (default: physical cores)")
    ap.add_argument("--runs", type=int, default=40, help="interleaved end-to-end rounds")
    ap.add_argument("--scan-runs", type=int, default=10)
    ap.add_argument("--confirm-runs", type=int, default=40)
    ap.add_argument("--min-speedup", type=float, default=1.05)
    ap.add_argument("--tag", default="", help="suffix for the output file names (e.g. _1thread)")
    args = ap.parse_args()
    os.environ["SLIMCNN_CACHE_DIR"] = tempfile.mkdtemp(prefix="slimcnn-lowrank-cache-")

    import onnxruntime

    from slimcnn.lowrank import LowRankSpec, decompose, runtime_comparer, runtime_timer
    from slimcnn.measure import compare_latency, cpu_model, physical_cores, profile
    from slimcnn.models import load_model

    threads = args.threads or physical_cores()
    load_before = _load()
    loaded = load_model("torchvision:resnet50")
    model = loaded.model.eval()
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    # one scan timer and one comparer for both passes: identical (layer, factors) pairs are timed once
    common: dict[str, Any] = {"runtime": "onnxruntime", "threads": threads,
                              "timer": runtime_timer("onnxruntime", threads, args.scan_runs),
                              "compare": runtime_comparer("onnxruntime", threads, args.confirm_runs)}
    variants: dict[str, Any] = {}
    seconds: dict[str, float] = {}
    for name, only in (("only_faster", True), ("all", False)):
        t0 = time.perf_counter()
        variants[name] = decompose(model, x, LowRankSpec(ratio=2.0, only_faster=only, min_speedup=args.min_speedup), **common)
        seconds[name] = time.perf_counter() - t0
        print(f"{name}: replaced {len(variants[name][1].replaced)} layers in {seconds[name]:.0f} s", flush=True)
    models = {"original": model, "only_faster": variants["only_faster"][0], "all": variants["all"][0]}
    lat = compare_latency(models, x, runtime="onnxruntime", threads=threads, runs=args.runs, warmup=5)
    rows = []
    for name, m in models.items():
        prof = profile(m, x)
        res = variants[name][1] if name in variants else None
        rows.append({
            "variant": name, "macs": prof.macs, "params": prof.params,
            "median_ms": lat[name].median_ms, "p10_ms": lat[name].p10_ms, "p90_ms": lat[name].p90_ms, "n": lat[name].n,
            "speedup_median": lat["original"].median_ms / lat[name].median_ms,
            "speedup_p10": lat["original"].p10_ms / lat[name].p10_ms,
            "replaced": len(res.replaced) if res else 0, "candidates": len(res.layers) if res else 0,
            "slower_layers": res.slower if res else [], "decide_s": round(seconds.get(name, 0.0), 1),
        })
    layers = [{"layer": r.layer, "method": r.method, "target_rank": r.target_rank, "rank": r.rank,
               "ms_before": r.ms_before, "ms_after": r.ms_after, "replaced": r.replaced, "reason": r.reason,
               "all_ms_before": a.ms_before, "all_ms_after": a.ms_after}
              for r, a in zip(variants["only_faster"][1].layers, variants["all"][1].layers, strict=True)]
    env = {"cpu": cpu_model(), "cpu_count": os.cpu_count(), "threads": threads, "torch": torch.__version__,
           "onnxruntime": onnxruntime.__version__, "python": platform.python_version(),
           "load_avg_before": load_before, "load_avg_after": _load(), "input": [1, 3, 224, 224],
           "weights": "none (torchvision weights=None; latency only)", "ratio": 2.0, "rank_multiple": 8,
           "min_speedup": args.min_speedup, "scan_runs": args.scan_runs, "confirm_runs": args.confirm_runs,
           "e2e_runs": args.runs}
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"lowrank_resnet50{args.tag}"
    (args.out / f"{stem}.json").write_text(json.dumps({"rows": rows, "layers": layers, "environment": env}, indent=2) + "\n")
    (args.out / f"{stem}.md").write_text(_markdown(rows, layers, env))
    print((args.out / f"{stem}.md").read_text())


def _markdown(rows: list[dict[str, Any]], layers: list[dict[str, Any]], env: dict[str, Any]) -> str:
    lines = [
        "# Low-rank ResNet-50 on ONNX Runtime (CPU): only-faster vs --all vs original",
        "",
        f"torchvision ResNet-50, `weights=None` (latency only), input 1x3x224x224, alpha = 2, ranks rounded to 8. "
        f"ORT CPU, {env['threads']} threads, {env['cpu']} ({env['cpu_count']} logical CPUs); torch {env['torch']}, "
        f"onnxruntime {env['onnxruntime']}. Load average before {env['load_avg_before']}, after {env['load_avg_after']}. "
        f"End-to-end times: the three models interleaved round-robin in one process, n = {rows[0]['n']} each. "
        f"Decisions: scan {env['scan_runs']} runs/candidate, confirmation {env['confirm_runs']} interleaved rounds, "
        f"min speed-up {env['min_speedup']}.",
        "",
        "| variant | MACs (G) | params (M) | median ms | p10 ms | p90 ms | speed-up (median / p10) | replaced / candidates | replaced but slower alone | decide s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['variant']} | {r['macs'] / 1e9:.2f} | {r['params'] / 1e6:.2f} | {r['median_ms']:.1f} | {r['p10_ms']:.1f} | "
            f"{r['p90_ms']:.1f} | {r['speedup_median']:.2f}x / {r['speedup_p10']:.2f}x | {r['replaced']} / {r['candidates']} | "
            f"{len(r['slower_layers'])} | {r['decide_s']:.0f} |")
    lines += ["", "Per layer (each layer alone; ms before/after = original vs factors side by side):", "",
              "| layer | method | rank (target) | only-faster: ms before → after | replaced | --all: ms before → after |",
              "|---|---|---|---|---|---|"]
    f = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    for r in layers:
        slow = " **slower**" if r["all_ms_after"] is not None and r["all_ms_before"] is not None and r["all_ms_after"] >= r["all_ms_before"] else ""
        lines.append(f"| {r['layer']} | {r['method']} | {r['rank']} ({r['target_rank']}) | {f(r['ms_before'])} → {f(r['ms_after'])} | "
                     f"{'yes' if r['replaced'] else 'no'} | {f(r['all_ms_before'])} → {f(r['all_ms_after'])}{slow} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
