"""Latency-aware pruning vs a MACs target at a 0.5x latency target (issue 16, item 3; a first, small run).

Run: ``.venv/bin/python benchmarks/latency_aware.py [--models resnet50 mobilenet_v2] [--target 0.5]``.
Writes ``benchmarks/results/latency_aware.{md,json}``.

For each model (random weights, ``1x3x224x224``, ONNX Runtime CPU, physical cores as threads):
(a) ``slimcnn.prune.prune_for_latency_(m, x, 0.5, criterion="l1")`` (latency table + knapsack, checked by
measurement); (b) ``prune_model_(m, x, criterion="l1", macs=0.5, round_to=<ORT channel block>)``, i.e. the
MACs target set to the latency target. Then one ``compare_latency`` of original, (a) and (b), interleaved
(``--runs`` rounds): MACs, params and measured latency ratio of each. Accuracy is not measured here.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import time
from pathlib import Path

import torch

from slimcnn.measure import (
    compare_latency,
    cpu_model,
    ort_channel_block,
    package_versions,
    physical_cores,
    profile,
)
from slimcnn.models import load_model
from slimcnn.prune import prune_for_latency_, prune_model_

RESULTS = Path(__file__).resolve().parent / "results"


def run(name: str, target: float, runs: int) -> dict[str, object]:
    torch.manual_seed(0)
    model = load_model(f"torchvision:{name}").model.eval()
    x = torch.randn(1, 3, 224, 224)
    t0 = time.perf_counter()
    lat_model = copy.deepcopy(model)
    res = prune_for_latency_(lat_model, x, target, criterion="l1", source=f"torchvision:{name}")
    t_lat = time.perf_counter() - t0
    t0 = time.perf_counter()
    macs_model = copy.deepcopy(model)
    prune_model_(macs_model, x, criterion="l1", macs=target, round_to=ort_channel_block(), best_effort=True)
    t_macs = time.perf_counter() - t0
    lat = compare_latency({"original": model, "latency_aware": lat_model, "macs_target": macs_model}, x, runs=runs)
    base = profile(model, x)
    row: dict[str, object] = {"model": name, "target": target, "original_ms": lat["original"].median_ms,
                              "table": res.details()["latency_table"], "attempts": list(res.attempts)}
    for key, m, secs in (("latency_aware", lat_model, t_lat), ("macs_target", macs_model, t_macs)):
        c = profile(m, x)
        row[key] = {"macs_ratio": c.macs / base.macs, "params_ratio": c.params / base.params,
                    "latency_ratio": lat[key].median_ms / lat["original"].median_ms,
                    "p10_ms": lat[key].p10_ms, "p90_ms": lat[key].p90_ms, "seconds": round(secs, 1)}
    row["latency_aware"]["predicted_ratio"] = res.selection.predicted_ratio  # type: ignore[index]
    return row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="+", default=["resnet50", "mobilenet_v2"])
    ap.add_argument("--target", type=float, default=0.5)
    ap.add_argument("--runs", type=int, default=40)
    args = ap.parse_args()
    rows = [run(n, args.target, args.runs) for n in args.models]
    env = {"cpu": cpu_model(), "threads": physical_cores(), "block": ort_channel_block(),
           "python": platform.python_version(), **package_versions(["torch", "onnxruntime", "torchvision"])}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "latency_aware.json").write_text(json.dumps({"environment": env, "rows": rows}, indent=1))
    lines = [f"# Latency-aware pruning vs MACs target at {args.target}x latency", "",
             f"Environment: {env}. Random weights, 1x3x224x224, ONNX Runtime CPU, l1 criterion; latency ratios "
             f"are medians of {args.runs} interleaved rounds (original, (a), (b)) in one process.", "",
             "| model | method | MACs | params | latency (measured) | predicted | efficiency (MACs/latency) | time s |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        for key, label in (("latency_aware", "(a) latency table + knapsack"), ("macs_target", "(b) --macs target, round_to block")):
            v = r[key]  # type: ignore[index]
            pred = f"{v['predicted_ratio']:.3f}x" if "predicted_ratio" in v else "-"
            lines.append(f"| {r['model']} | {label} | {v['macs_ratio']:.3f}x | {v['params_ratio']:.3f}x | "
                         f"{v['latency_ratio']:.3f}x | {pred} | {v['macs_ratio'] / v['latency_ratio']:.2f} | {v['seconds']} |")
    lines += ["", "Tries of (a) (knapsack target -> table prediction -> measured in the check, interleaved with the "
              "original only):", ""]
    for r in rows:
        tries = "; ".join(f"{a['knapsack_target']:.3f} -> {a['predicted_ratio']:.3f}x -> {a['measured_ratio']:.3f}x"
                          for a in r["attempts"])  # type: ignore[attr-defined]
        t = r["table"]
        lines.append(f"- {r['model']}: {tries}. Table: {t['groups']} groups, {t['timings']} timed variants, "  # type: ignore[index]
                     f"{t['seconds']} s; whole model {r['original_ms']:.1f} ms vs summed layers {t['base_ms']:.1f} ms.")  # type: ignore[index]
    lines += ["", "Read with care: one run on a shared 2-core VM (measurements of one model in two interleaved runs "
              "differ by a few %); random weights, so no accuracy; the 'predicted' column is the table's prediction "
              "for the widths finally applied (after the knapsack target was rescaled by the checks), so a large gap "
              "to the measured ratio means the additive per-layer table did not hold for that model."]
    (RESULTS / "latency_aware.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
