"""How the timing protocol moves a pruned model's measured latency ratio, small models most.

Run: ``.venv/bin/python benchmarks/latency_protocol.py [--models resnet20 mobilenet_v2 resnet50] [--repeats 5]``.
Writes ``benchmarks/results/latency_protocol.{md,json}``.

slimcnn reports a pruned model's latency as a ratio to the original from :func:`slimcnn.measure.compare_latency`:
the ONNX Runtime sessions in one process, the models taking turns. A session's idle workers must not busy-wait
on the cores the other session needs, so its workers spin only inside a run and are parked when it returns
(``spin="in-run"``, ``session.force_spinning_stop=1``). Until 2026-12-04 they were never allowed to spin
(``session.intra_op.allow_spinning=0``): then every parallel node of a run had to wake a sleeping worker. Until
2026-12-06 a turn was one timed call, which runs on the caches the other models' calls left; now a turn is an
untimed call and a timed one (``round_robin``'s ``calls_per_turn=2``). A deployment usually runs one model alone
with ONNX Runtime's default, spinning always. This benchmark measures the same original/pruned pair (L1, every
group -50 %) under these protocols, ``--repeats`` times each (fresh sessions every repeat, the protocols' order
rotating), on the physical cores:

* ``primed turns``: ``compare_latency`` (what ``slimcnn prune --latency``, the latency table and every latency
  benchmark measure now);
* ``cold turns``: the same round robin, one timed call per turn (the protocol until 2026-12-06);
* ``primed, 4 models`` / ``cold, 4 models``: the same two with two more pruned copies (L1 -25 % and -75 %) taking
  turns, as in ``latency_aware.py``'s four-way timings: how much the number of models timed together moves a
  ratio;
* ``cold, no spin``: one timed call per turn with ``spin="never"`` (the protocol until 2026-12-04);
* ``alone, spin`` (ONNX Runtime's default, the deployment): each model alone, ``--warmup`` calls then ``--runs``
  timed calls, the two models back to back (their order alternating between repeats).

Each cell is the median over repeats of the per-repeat ratio (median pruned ms / median original ms), with the
range over repeats; the spread between repeats is the run-to-run noise of that protocol on this machine.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from slimcnn.measure import compare_latency, cpu_model, measure_latency, package_versions, physical_cores
from slimcnn.measure._latency import make_runner, round_robin, wall_timed
from slimcnn.prune import prune_model_

sys.path.insert(0, str(Path(__file__).resolve().parent))
from graph_vs_torch_pruning import MODELS, build  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
EXTRA = {"resnet20": ("slimcnn:resnet20", (8, 3, 32, 32))}
"""Models beyond graph_vs_torch_pruning's: ResNet-20 at batch 8 is the small model of the latency issue."""
DEFAULT_MODELS = ["resnet20", "mobilenet_v2", "resnet50"]
PROTOCOLS = ("primed turns", "cold turns", "primed, 4 models", "cold, 4 models", "cold, no spin", "alone, spin")


def _model(name: str) -> tuple[nn.Module, tuple[int, ...]]:
    if name in EXTRA:
        from slimcnn.models import load_model

        source, shape = EXTRA[name]
        return load_model(source).model.eval(), shape
    return build(name).eval(), MODELS[name][1]


def run(name: str, repeats: int, warmup: int, runs: int, threads: int) -> dict[str, Any]:
    torch.manual_seed(0)
    original, shape = _model(name)
    x = torch.randn(*shape)
    pruned, *crowd = (copy.deepcopy(original) for _ in range(3))
    for m, ratio in ((pruned, 0.5), (crowd[0], 0.25), (crowd[1], 0.75)):
        prune_model_(m, x, criterion="l1", prune_ratio=ratio)
    ratios: dict[str, list[float]] = {p: [] for p in PROTOCOLS}
    original_ms: dict[str, list[float]] = {p: [] for p in PROTOCOLS}
    load = [os.getloadavg()[0]]

    def turns(models: list[nn.Module], calls: int, spin: str) -> tuple[float, float]:
        fns = {str(i): wall_timed(make_runner(m, x, runtime="onnxruntime", threads=threads, spin=spin))  # type: ignore[arg-type]
               for i, m in enumerate(models)}
        ms = round_robin(fns, warmup=warmup, runs=runs, calls_per_turn=calls)
        return statistics.median(ms["0"]), statistics.median(ms["1"])

    for r in range(repeats):
        for p in PROTOCOLS[r % len(PROTOCOLS):] + PROTOCOLS[: r % len(PROTOCOLS)]:
            if p == "primed turns":
                lat = compare_latency({"o": original, "p": pruned}, x, runs=runs, warmup=warmup, threads=threads)
                o, q = lat["o"].median_ms, lat["p"].median_ms
            elif p == "alone, spin":
                # each model alone with ONNX Runtime's defaults, back to back, the order alternating
                pair = [original, pruned] if r % 2 == 0 else [pruned, original]
                a, b = (measure_latency(m, x, threads=threads, warmup=warmup, runs=runs).median_ms for m in pair)
                o, q = (a, b) if r % 2 == 0 else (b, a)
            else:
                models = [original, pruned, *crowd] if "4 models" in p else [original, pruned]
                o, q = turns(models, 2 if p.startswith("primed") else 1, "never" if "no spin" in p else "in-run")
            ratios[p].append(q / o)
            original_ms[p].append(o)
        print(f"[{name}] repeat {r + 1}: " + ", ".join(f"{p} {ratios[p][-1]:.3f}" for p in PROTOCOLS), flush=True)
    load.append(os.getloadavg()[0])
    return {"model": name, "input": list(shape), "ratios": ratios, "original_ms": original_ms, "load_avg": load}


def render(data: dict[str, Any]) -> str:
    env = data["environment"]
    lines = [f"# Latency ratio of a pruned model (L1, every group -50 %) under {len(PROTOCOLS)} timing protocols", "",
             f"Machine: {env['cpu']}, {env['cores']} physical cores, ONNX Runtime {env['onnxruntime']} on "
             f"{data['threads']} threads; torch {env['torch']}; {data['date']}. Each repeat: fresh sessions, "
             f"{data['warmup']} warm-up and {data['runs']} timed calls per model; {data['repeats']} repeats, the "
             "protocols' order rotating. Cell: median over repeats of pruned/original (range over repeats); "
             "original ms: median over repeats.", "",
             "| model (input) | " + " | ".join(PROTOCOLS) + " | original ms (same order) | load |",
             "|---|" + "---|" * (len(PROTOCOLS) + 2)]
    for m in data["models"]:
        cells = [f"{statistics.median(v):.3f}x ({min(v):.3f}-{max(v):.3f})" for v in m["ratios"].values()]
        ms = " / ".join(f"{statistics.median(v):.2f}" for v in m["original_ms"].values())
        lines.append(f"| {m['model']} ({'x'.join(map(str, m['input']))}) | " + " | ".join(cells)
                     + f" | {ms} | {'/'.join(f'{v:.1f}' for v in m['load_avg'])} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=DEFAULT_MODELS, choices=sorted({*MODELS, *EXTRA}))
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--runs", type=int, default=50)
    args = ap.parse_args()
    threads = physical_cores()
    env = {"cpu": cpu_model(), "cores": threads, **package_versions(["torch", "onnxruntime"])}
    data = {"environment": env, "threads": threads, "repeats": args.repeats, "warmup": args.warmup, "runs": args.runs,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "models": [run(n, args.repeats, args.warmup, args.runs, threads) for n in args.models]}
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "latency_protocol.json"
    path.write_text(json.dumps(data, indent=1) + "\n")
    md = render(data)
    path.with_suffix(".md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
