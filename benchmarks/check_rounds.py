"""How much a latency check's ratio moves from one check to the next, at 20 rounds and at the time floor.

Run: ``.venv/bin/python benchmarks/check_rounds.py [--models ghostnet_100 lcnet_050 ...] [--repeats 10]``.
Writes ``benchmarks/results/check_rounds.{md,json}``.

``slimcnn prune --latency`` checks each try by timing it against the original with
:func:`slimcnn.measure.compare_latency` and decides from that ratio. Until 2026-12-06 a check was 20 rounds: for a
model of 1-3 ms that is 20-60 ms of timed calls per model, and a check's ratio moved by more than the search's
margin between two checks of the same widths. A check now also goes on until each model has been timed for
:data:`slimcnn.measure.CHECK_SECONDS`. For each model (timm, random weights, 1x3x128x128, the L1 criterion
removing 30 % of every group with widths rounded to 16, as the latency table's block on AVX-512), both checks are
run ``--repeats`` times, alternating, each with fresh ONNX Runtime sessions on the physical cores; the table gives
each protocol's median ratio, its range and standard deviation over the repeats, and the seconds one check took.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from slimcnn.measure import CHECK_SECONDS, compare_latency, cpu_model, package_versions, physical_cores
from slimcnn.prune import prune_model_

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_MODELS = ["lcnet_050", "mobilenetv4_conv_small", "ghostnet_100", "tf_mixnet_s", "mobilenetv3_large_100",
                  "resnet18"]
PROTOCOLS = {"20 rounds": None, f"20 rounds + {CHECK_SECONDS:g} s floor": CHECK_SECONDS}


def run_model(name: str, repeats: int) -> dict[str, Any]:
    import timm

    torch.manual_seed(0)
    original = timm.create_model(name, pretrained=False).eval()
    x = torch.randn(1, 3, 128, 128)
    pruned = copy.deepcopy(original)
    prune_model_(pruned, x, prune_ratio=0.3, round_to=16)
    cells: dict[str, dict[str, list[float]]] = {p: {"ratio": [], "seconds": [], "original_ms": [], "rounds": []}
                                                for p in PROTOCOLS}
    for r in range(repeats):
        order = list(PROTOCOLS) if r % 2 == 0 else list(PROTOCOLS)[::-1]
        for protocol in order:
            t0 = time.perf_counter()
            lat = compare_latency({"original": original, "pruned": pruned}, x, runs=20, warmup=3,
                                  min_seconds=PROTOCOLS[protocol], threads=physical_cores())
            cell = cells[protocol]
            cell["seconds"].append(time.perf_counter() - t0)
            cell["ratio"].append(lat["pruned"].median_ms / lat["original"].median_ms)
            cell["original_ms"].append(lat["original"].median_ms)
            cell["rounds"].append(lat["original"].n)
    return {"model": name, "cells": cells}


def _row(entry: dict[str, Any]) -> str:
    parts = [entry["model"]]
    for protocol in PROTOCOLS:
        c = entry["cells"][protocol]
        v = c["ratio"]
        parts.append(f"{statistics.median(v):.3f}x ({min(v):.3f}-{max(v):.3f}) sd {statistics.stdev(v):.3f}, "
                     f"{statistics.median(c['rounds']):.0f} rounds, {statistics.median(c['seconds']):.2f} s")
    parts.append(f"{statistics.median(entry['cells']['20 rounds']['original_ms']):.2f}")
    return "| " + " | ".join(parts) + " |"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=DEFAULT_MODELS)
    ap.add_argument("--repeats", type=int, default=10)
    args = ap.parse_args()
    load_before = os.getloadavg()[0]
    entries = []
    for name in args.models:
        entries.append(run_model(name, args.repeats))
        print(_row(entries[-1]), flush=True)
    load_after = os.getloadavg()[0]
    versions = package_versions(["torch", "onnxruntime", "timm"])
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    header = " | ".join(PROTOCOLS)
    lines = [
        "# A latency check's ratio over repeated checks: 20 rounds vs the time floor",
        "",
        f"Machine: {cpu_model()}, {physical_cores()} physical cores, ONNX Runtime {versions['onnxruntime']} on "
        f"{physical_cores()} threads; torch {versions['torch']}, timm {versions['timm']}; {when}; load average "
        f"{load_before:.1f}/{load_after:.1f}. Each model: timm, random weights, 1x3x128x128, L1 -30 % of every group "
        f"rounded to 16; {args.repeats} checks per protocol, alternating, fresh sessions each. Cell: median "
        "pruned/original ratio over the checks (range) and its standard deviation, the median rounds and wall seconds "
        "of one check.",
        "",
        f"| model | {header} | original ms |",
        "|---|---|---|---:|",
        *(_row(e) for e in entries),
        "",
    ]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "check_rounds.md").write_text("\n".join(lines))
    (RESULTS / "check_rounds.json").write_text(json.dumps(
        {"machine": cpu_model(), "versions": versions, "when": when, "load": [load_before, load_after],
         "repeats": args.repeats, "check_seconds": CHECK_SECONDS, "entries": entries}, indent=1))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
