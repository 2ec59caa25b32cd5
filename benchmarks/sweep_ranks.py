"""Sensitivity sweep on 1 vs 2 torch.distributed ranks: the same points, and the wall-time ratio.

The sweep shards knobs over the ranks of a gloo group (``slimcnn.search.sensitivity``); ``workers=2``
starts that group on this machine (this process is rank 0, rank 1 is forked from it), the same code
path ``torchrun --nproc-per-node 2`` takes. Model: ``slimcnn:resnet20`` (CIFAR-10 weights), every
prunable group at 25/50/75 %, judged on the first ``--limit`` CIFAR-10 JPEG test images (shared
data; without it the built-in digits). Each rank count runs ``--repeats`` times, interleaved
(1, 2, 1, 2, ...), each rank with one thread; the load average is recorded (the machine is shared).

Usage: ``python benchmarks/sweep_ranks.py [--limit 500] [--repeats 2]``
Writes ``benchmarks/results/sweep_ranks.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from slimcnn.models import load_model
from slimcnn.paths import shared_path
from slimcnn.search.families import PruneFamily
from slimcnn.search.sensitivity import SensitivityTable, sensitivity_sweep
from slimcnn.tasks import make_task

OUT = Path(__file__).parent / "results"


def _points(table: SensitivityTable) -> list[tuple[str, float, float, int]]:
    return [(p.knob, p.amount, p.metric, p.macs) for p in table.points]


def main() -> None:
    """Run the interleaved sweeps and write the results."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=500)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(1)
    data = shared_path("cifar10-jpeg75", "test-10k.tar") or "digits"
    loaded = load_model("slimcnn:resnet20")
    task = make_task("classification", data, info=loaded.info)
    family = PruneFamily(example_input=task.example_input())
    knobs = family.knobs(loaded.model, task.example_input())
    load0 = os.getloadavg()
    seconds: dict[int, list[float]] = {1: [], 2: []}
    tables: dict[int, SensitivityTable] = {}
    for _ in range(args.repeats):
        for ranks in (1, 2):
            t0 = time.perf_counter()
            tables[ranks] = sensitivity_sweep(loaded.model, task, knobs, family.apply, limit=args.limit,
                                              workers=ranks, progress=False)
            seconds[ranks].append(time.perf_counter() - t0)
            print(f"{ranks} rank(s): {seconds[ranks][-1]:.1f} s (load {os.getloadavg()[0]:.1f})", flush=True)
    same = _points(tables[1]) == _points(tables[2])
    ratio = statistics.median(seconds[2]) / statistics.median(seconds[1])
    row: dict[str, Any] = {
        "model": "slimcnn:resnet20", "data": str(data), "limit": args.limit, "knobs": len(knobs),
        "points": len(tables[1].points), "seconds_1_rank": seconds[1], "seconds_2_ranks": seconds[2],
        "ratio_2_vs_1": round(ratio, 3), "same_points": same, "cpus": os.cpu_count(),
        "load_before": [round(v, 2) for v in load0], "load_after": [round(v, 2) for v in os.getloadavg()],
    }
    OUT.mkdir(exist_ok=True)
    (OUT / "sweep_ranks.json").write_text(json.dumps(row, indent=2) + "\n")
    md = [
        "# Sensitivity sweep on 1 vs 2 ranks",
        "",
        f"`benchmarks/sweep_ranks.py`: {row['model']}, {row['knobs']} knobs x 3 amounts ({row['points']} points) "
        f"on the first {args.limit} images of `{Path(str(data)).name}`; one thread per rank; "
        f"{os.cpu_count()} CPUs, load average {load0[0]:.1f} before / {os.getloadavg()[0]:.1f} after (shared machine).",
        "",
        "| ranks | wall time per run (s) | median (s) |",
        "|---|---|---|",
        *(f"| {r} | {', '.join(f'{s:.1f}' for s in seconds[r])} | {statistics.median(seconds[r]):.1f} |" for r in (1, 2)),
        "",
        f"Ratio 2 ranks / 1 rank: **{ratio:.2f}** (target <= 0.6). Same points on 2 ranks as on 1: **{same}**.",
        "",
    ]
    (OUT / "sweep_ranks.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
