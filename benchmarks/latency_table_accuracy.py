"""How well the latency table predicts a pruned model's measured latency: read in-graph vs timed alone.

Run: ``.venv/bin/python benchmarks/latency_table_accuracy.py [--models resnet50 ...] [--runs 30] [--runtime torch]``.
Writes ``benchmarks/results/latency_table_accuracy.{md,json}`` (``latency_table_accuracy_torch.*`` with
``--runtime torch``: PyTorch eager on the CPU, the in-graph table read by layer hooks inside the whole forward).

For each model (random weights, the input shape of ``graph_vs_torch_pruning.MODELS``, ONNX Runtime CPU on the
physical cores) both tables are built afresh (no cache): **in-graph** (ONNX Runtime's per-node profile of
whole pruned models, the default) and **alone** (every touched layer rebuilt and timed alone, the fallback).
The selections: uniform widths (each group's sampled width nearest 1/2 and 3/4 of it), two random ones (a
sampled width per group, seeded) and each table's own knapsack answer at 0.5x and 0.7x (L1 criterion,
``objective="macs"`` weights as :func:`slimcnn.prune.prune_for_latency_` uses). Every selection is pruned and
all of them and the original are timed whole in one interleaved ``compare_latency``; the table shows each
table's prediction next to the measured ratio. Knapsack answers are the ones that matter: a knapsack picks the
cuts a table over-values, so its error is the table's bias, not noise.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

import torch

from slimcnn.graph import trace
from slimcnn.measure import compare_latency, cpu_model, package_versions, physical_cores, profile
from slimcnn.prune import build_latency_table, prune_model_
from slimcnn.prune._criteria import ScoreContext, score_groups
from slimcnn.prune._knapsack import keep_counts, select_for_latency
from slimcnn.prune._latency_prune import _CostCounter, _objective_weights

sys.path.insert(0, str(Path(__file__).resolve().parent))
from graph_vs_torch_pruning import MODELS, build  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_MODELS = ["resnet50", "mobilenet_v2", "efficientnet_b0"]
TABLES = ("in-graph", "alone")


def run(name: str, runs: int, runtime: str) -> dict[str, Any]:
    torch.manual_seed(0)
    model = build(name).eval()
    x = torch.randn(*MODELS[name][1])
    graph = trace(model, x)
    tables, seconds = {}, {}
    for kind in TABLES:
        t0 = time.perf_counter()
        tables[kind] = build_latency_table(model, x, graph=graph, cache=False, in_graph=kind == "in-graph",
                                           runtime=runtime)
        seconds[kind] = round(time.perf_counter() - t0, 1)
    ref = tables["in-graph"]
    sizes = {g.layer: g for g in ref.groups}
    rng = random.Random(0)
    selections: dict[str, dict[str, int]] = {
        f"uniform {f}": {n: min(g.widths, key=lambda w, f=f, g=g: abs(w - f * g.size)) for n, g in sizes.items()}
        for f in (0.5, 0.75)}
    selections |= {f"random {i}": {n: rng.choice(g.widths) for n, g in sizes.items()} for i in range(2)}
    scores = score_groups(ScoreContext(model, graph, x, None, 8, 0, []), "l1")
    fixed = {g.id: [i for i, _ in g.fixed] for g in graph.groups()}
    costs = _CostCounter(model, graph, ref, scores)
    weights = _objective_weights(costs.slopes("macs"))
    for kind, table in tables.items():
        for target in (0.5, 0.7):
            sel = select_for_latency(table, scores, target, fixed=fixed, weights=weights)
            selections[f"knapsack {target} ({kind} table)"] = sel.widths
    models = {"original": model}
    for label, widths in selections.items():
        widths = {n: w for n, w in widths.items() if w < sizes[n].size}
        selections[label] = widths
        pruned = copy.deepcopy(model)
        if keep := keep_counts(graph, ref, widths):
            prune_model_(pruned, x, criterion="l1", keep=keep, graph=graph)
        models[label] = pruned
    lat = compare_latency(models, x, runs=runs, warmup=3, runtime=runtime)  # type: ignore[arg-type]
    base = profile(model, x).macs
    rows = []
    for label, widths in selections.items():
        rows.append({"selection": label, "measured": lat[label].median_ms / lat["original"].median_ms,
                     "macs": profile(models[label], x).macs / base,
                     **{kind: t.predict_ratio(widths) for kind, t in tables.items()}})
    out = {"model": name, "input": list(x.shape), "original_ms": lat["original"].median_ms, "rows": rows,
           "tables": {k: {"seconds": seconds[k], "timings": t.timings, "base_ms": t.base_ms, "source": t.source}
                      for k, t in tables.items()}, "load_avg": os.getloadavg()}
    print(json.dumps(out), flush=True)
    return out


def render(data: dict[str, Any]) -> str:
    env = data["environment"]
    runtime = (f"PyTorch eager (torch {env['torch']}) on {env['cores']} threads, the in-graph table read by layer "
               "hooks" if data.get("runtime") == "torch" else
               f"ONNX Runtime {env['onnxruntime']} on {env['cores']} threads; torch {env['torch']}")
    lines = ["# Latency table: predicted vs measured latency ratio, in-graph vs layers timed alone", "",
             f"Machine: {env['cpu']}, {env['cores']} physical cores, {runtime}. Random weights. Measured: median of {data['runs']} "
             "interleaved rounds of the original and every selection in one process. Error = predicted - "
             "measured (negative: the model is slower than the table said).", ""]
    for m in data["models"]:
        t = m["tables"]
        lines += [f"## {m['model']} ({'x'.join(map(str, m['input']))}, {m['original_ms']:.1f} ms; load "
                  f"{'/'.join(f'{v:.1f}' for v in m['load_avg'])})", "",
                  f"In-graph table: {t['in-graph']['timings']} models profiled, {t['in-graph']['seconds']} s; alone: "
                  f"{t['alone']['timings']} layer variants, {t['alone']['seconds']} s.", "",
                  "| selection | MACs | measured | in-graph table (error) | alone table (error) |", "|---|---|---|---|---|"]
        for r in m["rows"]:
            cells = " | ".join(f"{r[k]:.3f}x ({r[k] - r['measured']:+.3f})" for k in TABLES)
            lines.append(f"| {r['selection']} | {r['macs']:.3f}x | {r['measured']:.3f}x | {cells} |")
        for k in TABLES:
            errs = [abs(r[k] - r["measured"]) for r in m["rows"]]
            lines.append(f"\nMean |error| of the {k} table: {sum(errs) / len(errs):.3f}.")
        lines.append("")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="+", default=DEFAULT_MODELS, choices=sorted(MODELS))
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--runtime", default="onnxruntime", choices=["onnxruntime", "torch"])
    args = ap.parse_args()
    env = {"cpu": cpu_model(), "cores": physical_cores(), **package_versions(["torch", "onnxruntime"])}
    data = {"environment": env, "runs": args.runs, "runtime": args.runtime,
            "models": [run(n, args.runs, args.runtime) for n in args.models]}
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / ("latency_table_accuracy" + ("_torch" if args.runtime == "torch" else "") + ".json")
    path.write_text(json.dumps(data, indent=1))
    md = render(data)
    path.with_suffix(".md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
