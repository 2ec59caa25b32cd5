"""Latency-aware pruning across the timm sweep: does every design build an in-graph table and reach the target?

Run: ``.venv/bin/python benchmarks/latency_zoo.py [--models mixnet_s ...] [--target 0.6] [--tries 3]``.
Writes/updates ``benchmarks/results/latency_zoo_<target>x.{md,json}`` (one file per target and input side; entries
merged by model).

For each timm model of ``tests/prune/test_zoo.py``'s ``TIMM`` list (random weights, built with pretrained=False,
1x3x128x128): :func:`slimcnn.prune.prune_for_latency_` at ``--target`` (L1 criterion, 2 ONNX Runtime threads, the
latency table rebuilt, not cached), then the row records where the table's times came from (``in-graph`` or
``alone``: layers timed alone when ONNX Runtime's nodes did not map onto the layers), its build seconds, every try
(knapsack target -> table prediction -> measured, each measured whole and interleaved with the original), the
applied try's measured ratio and the pruned model's MACs and parameters. A row whose applied try measured above the
target is "NOT met"; an exception is recorded as the row's error.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT / "tests" / "prune"))


def run_one(name: str, target: float, tries: int, side: int) -> dict[str, Any]:
    import timm

    from slimcnn.prune import prune_for_latency_

    model = timm.create_model(name, pretrained=False).eval()
    x = torch.randn(1, 3, side, side)
    params0 = sum(p.numel() for p in model.parameters())
    t0 = time.perf_counter()
    try:
        r = prune_for_latency_(model, x, target, tries=tries, runs=15, cache=False)
    except Exception as e:  # noqa: BLE001 - the sweep records the failure and goes on
        traceback.print_exc()
        return {"model": name, "error": f"{type(e).__name__}: {e}"[:300]}
    with torch.no_grad():
        model(x)  # the pruned model runs
    return {"model": name, "source": r.table.source, "groups": len(r.table.groups),
            "table_s": round(r.table_seconds, 1), "seconds": round(time.perf_counter() - t0, 1),
            "tries": [[a["knapsack_target"], a["predicted_ratio"], a["measured_ratio"], a.get("first_measured_ratio")]
                      for a in r.attempts],
            "measured": r.measured_ratio, "met": r.measured_ratio <= target,
            "macs": r.outcome.macs_after / max(r.outcome.macs_before, 1),
            "params": sum(p.numel() for p in model.parameters()) / max(params0, 1)}


def results_path(target: float, side: int) -> Path:
    """One results file per target (and input side, when not 128): runs at another target never overwrite it."""
    return RESULTS / f"latency_zoo_{target:g}x{'' if side == 128 else f'_{side}px'}.json"


def write(rows: dict[str, dict[str, Any]], meta: dict[str, Any]) -> None:
    from test_zoo import TIMM

    order = [n for n in TIMM if n in rows] + sorted(set(rows) - set(TIMM))
    path = results_path(meta["target"], meta["side"])
    path.write_text(json.dumps({**meta, "rows": [rows[n] for n in order]}, indent=1) + "\n")
    met = sum(1 for r in rows.values() if r.get("met"))
    lines = [f"# Latency-aware pruning across the timm sweep ({meta['target']}x latency target)", "",
             f"Machine: {meta['machine']}; torch {meta['torch']}, ONNX Runtime {meta['onnxruntime']}, timm "
             f"{meta['timm']}; 2 ORT threads, 1x3x{meta['side']}x{meta['side']}, random weights, L1 criterion, "
             f"{meta['tries']} tries, tables rebuilt. Last run {meta['date']}.", "",
             f"**{met} of {len(rows)} met the target** (the applied try's check timing; a written model is timed "
             "again by `slimcnn prune` and can land a few % either way on this VM).", "",
             "Tries: knapsack target -> table prediction -> measured (whole model, interleaved with the original; "
             "\"again\": the try contradicted another and both were timed again together).",
             "", "| model | table | groups | table s | tries | measured | MACs | params | met |",
             "|---|---|---:|---:|---|---:|---:|---:|---|"]
    for n in order:
        r = rows[n]
        if "error" in r:
            lines.append(f"| {n} | - | - | - | {r['error']} | - | - | - | error |")
            continue
        tries = "; ".join(f"{t[0]:.2f}->{t[1]:.2f}->" + (f"{t[3]:.2f} (again {t[2]:.2f})" if t[3:] and t[3] else
                                                          f"{t[2]:.2f}") for t in r["tries"])
        lines.append(f"| {n} | {r['source']} | {r['groups']} | {r['table_s']} | {tries} | {r['measured']:.3f}x | "
                     f"{r['macs']:.3f}x | {r['params']:.3f}x | {'yes' if r['met'] else '**NOT met**'} |")
    path.with_suffix(".md").write_text("\n".join(lines) + "\n")


def main() -> None:
    from test_zoo import TIMM

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=TIMM, help="timm model names (default: the pruning sweep's 41)")
    ap.add_argument("--target", type=float, default=0.6)
    ap.add_argument("--tries", type=int, default=3)
    ap.add_argument("--side", type=int, default=128)
    args = ap.parse_args()
    import onnxruntime
    import timm

    from slimcnn.measure import cpu_model

    path = results_path(args.target, args.side)
    old = json.loads(path.read_text()) if path.exists() else {}
    rows = {r["model"]: r for r in old.get("rows", [])}
    meta = {"target": args.target, "side": args.side, "tries": args.tries, "machine": cpu_model(),
            "torch": torch.__version__, "onnxruntime": onnxruntime.__version__, "timm": timm.__version__,
            "python": platform.python_version(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    for name in args.models:
        rows[name] = run_one(name, args.target, args.tries, args.side)
        print(json.dumps(rows[name]), flush=True)
        write(rows, meta)


if __name__ == "__main__":
    main()
