"""Latency-aware pruning vs a MACs target vs Torch-Pruning at a 0.5x latency target (issue 16, item 3).

Run: ``.venv/bin/python benchmarks/latency_aware.py [--models resnet50 ...] [--target 0.5] [--runs 40]``.
Needs the benchmark-only extra for column (c): ``pip install 'slimcnn[bench]'`` (Torch-Pruning; slimcnn
never imports it). Writes ``benchmarks/results/latency_aware.{md,json}`` (rows merged by model, so the
model list can be grown over several runs).

For each model (random weights, the input shape of ``graph_vs_torch_pruning.MODELS``, ONNX Runtime CPU,
physical cores as threads, L1 criterion):

(a) ``slimcnn.prune.prune_for_latency_(m, x, 0.5)``: latency table + knapsack (default ``objective="macs"``),
    checked by measurement; ``--objective importance`` gives HALP's unweighted value for comparison;
(b) ``prune_model_(m, x, criterion="l1", macs=0.5, round_to=<ORT channel block>)``: the MACs target set to the
    latency target;
(c) Torch-Pruning ``MagnitudePruner`` (L1 group magnitude, ``round_to`` the same block, the classifier /
    Detect head protected as in ``graph_vs_torch_pruning.py``) with its ``pruning_ratio`` bisected until its
    latency, measured interleaved with the original, is within 2 % of (a)'s measured latency.

Then ``--timings`` (5) ``compare_latency`` runs of original, (a), (b), (c), interleaved (``--runs`` rounds each):
MACs and params (``slimcnn.measure.profile``) and the median over the timings of each measured latency ratio, with
their range and the original's ms per timing (the timings agree within ~0.01 while the VM keeps one speed; a wide
range or a jump in the original's ms says its speed changed during the run).

``--repeats N`` runs all of it N times per model (the VM's speed changes between and within runs) and
reports the run with the median efficiency of (a), listing every run's efficiencies.

**Accuracy at equal measured latency** (``--part accuracy``; needs ``../shared/data``): ``slimcnn:resnet56``
(trained weights) at ``--acc-input`` (8x3x32x32). (b) first: ``prune_model_(macs=--target, round_to=block)``;
then (a) ``prune_for_latency_`` with one try per selection: first at the latency table's prediction for (b)'s
widths (its knapsack aims ``MARGIN`` under it, as every latency search does), then, while (a) measures slower
than (b) in a three-way interleaved timing (original, (a), (b), ``--runs`` rounds), again at that target scaled by (b)'s / (a)'s measured ratio (``--acc-tries`` selections at most; the
first that measures at most (b)'s latency is kept, else the fastest). So both answer one latency budget and the
pair compared is at most (b)'s measured latency, judged in the same runs that time (b).
This order because (b) reaches few latencies (at ``round_to`` 8 ResNet-56's 16-channel stages move in halves:
bisecting its MACs target to (a)'s latency jumped from ~0.44x to ~0.75x), and because (a) retargeted on its own
single checks against the original chased timing noise (checks of one model 8 % apart in one run); (a) against
(b) in one interleaved run is the comparison that matters. Then the same fine-tune (``--steps`` plain SGD steps,
lr 0.01, cosine, on ``train-subset-10k.tar``; once per ``--seeds`` seed, default 0, each from the same pruned
models) and top-1 on all 10,000 JPEG test images. ``--acc-criterion`` (default ``taylor``) ranks the channels of both and ``--acc-compensate
none|mean|lsq`` (default ``lsq``) compensates both.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from slimcnn.measure import (
    compare_latency,
    cpu_model,
    ort_channel_block,
    package_versions,
    physical_cores,
    profile,
)
from slimcnn.paths import shared_path
from slimcnn.prune import build_latency_table, prune_for_latency_, prune_model_

sys.path.insert(0, str(Path(__file__).resolve().parent))
from graph_vs_torch_pruning import MODELS, build, tp_prune  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_MODELS = ["resnet50", "mobilenet_v2", "regnet_x_400mf", "efficientnet_b0", "yolov8n"]
SPEED_CHANGE = 1.1
"""The original's final timings this far apart say the VM changed speed while they ran (in one state they agree
within ~2 %; the benchmark VM's two states were 1.6-1.7x apart)."""
METHODS = (("latency_aware", "(a) latency table + knapsack"), ("macs_target", "(b) --macs target, round_to block"),
           ("torch_pruning", "(c) Torch-Pruning, ratio bisected to (a)'s latency"))


def _ratio(model: nn.Module, pruned: nn.Module, x: torch.Tensor, runs: int, runtime: str = "onnxruntime") -> float:
    lat = compare_latency({"original": model, "pruned": pruned}, x, runs=runs, warmup=3, runtime=runtime)  # type: ignore[arg-type]
    return lat["pruned"].median_ms / lat["original"].median_ms


def _bisect_to_latency(model: nn.Module, x: torch.Tensor, goal: float, runs: int, knob: str, lo: float, hi: float,
                       steps: int, prune: Callable[[nn.Module, float], None], tries: list[dict[str, Any]],
                       runtime: str = "onnxruntime") -> tuple[nn.Module, float, float]:
    """Bisect ``knob`` in [lo, hi] until the pruned copy's measured latency ratio is within 2 % of ``goal``;
    returns the closest (model, value, ratio). ``prune(copy, value)`` prunes more for a larger value."""
    best: tuple[nn.Module, float, float] | None = None
    for _ in range(steps):
        v = (lo + hi) / 2
        m = copy.deepcopy(model)
        t0 = time.perf_counter()
        prune(m, v)
        secs = time.perf_counter() - t0
        got = _ratio(model, m, x, runs, runtime)
        tries.append({knob: v, "latency_ratio": got, "prune_s": round(secs, 2)})
        if best is None or abs(got - goal) < abs(best[2] - goal):
            best = (m, v, got)
        if abs(got - goal) <= 0.02 * goal:
            break
        lo, hi = (v, hi) if got > goal else (lo, v)
    assert best is not None
    return best


def tp_at_latency(name: str, model: nn.Module, x: torch.Tensor, goal: float, runs: int,
                  steps: int = 7, runtime: str = "onnxruntime") -> tuple[nn.Module | None, dict[str, Any]]:
    """Torch-Pruning's ratio bisected to ``goal`` (its failure is the result)."""
    protect = MODELS[name][2]

    def prune(m: nn.Module, r: float) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tp_prune(m, x, r, protect(m), ort_channel_block())

    tries: list[dict[str, Any]] = []
    try:
        m, r, got = _bisect_to_latency(model, x, goal, runs, "ratio", 0.0, 0.9, steps, prune, tries, runtime)
    except Exception as e:  # noqa: BLE001 - Torch-Pruning's failure is the result
        return None, {"error": f"{type(e).__name__}: {e}"[:300], "bisection": tries}
    return m, {"ratio": r, "bisected_latency_ratio": got, "bisection": tries}


def run(name: str, target: float, runs: int, objective: str, timings: int,
        runtime: str = "onnxruntime") -> dict[str, Any]:
    _, shape, _ = MODELS[name]
    torch.manual_seed(0)
    model = build(name)
    x = torch.randn(*shape)
    t0 = time.perf_counter()
    lat_model = copy.deepcopy(model)
    res = prune_for_latency_(lat_model, x, target, criterion="l1", source=MODELS[name][0],
                             objective=objective, runtime=runtime)  # type: ignore[arg-type]
    t_lat = time.perf_counter() - t0
    t0 = time.perf_counter()
    macs_model = copy.deepcopy(model)
    prune_model_(macs_model, x, criterion="l1", macs=target, round_to=ort_channel_block(), best_effort=True)
    t_macs = time.perf_counter() - t0
    t0 = time.perf_counter()
    tp_model, tp_info = tp_at_latency(name, model, x, res.measured_ratio, max(10, runs // 2), runtime=runtime)
    t_tp = time.perf_counter() - t0
    models = {"original": model, "latency_aware": lat_model, "macs_target": macs_model}
    if tp_model is not None:
        models["torch_pruning"] = tp_model
    # several four-way timings: their range and the original's ms per timing show a change of the VM's speed
    lats = [compare_latency(models, x, runs=runs, runtime=runtime) for _ in range(timings)]  # type: ignore[arg-type]
    base = profile(model, x)
    row: dict[str, Any] = {"model": name, "input": list(shape), "target": target, "objective": objective,
                           "original_ms": statistics.median(lat["original"].median_ms for lat in lats),
                           "original_ms_timings": [lat["original"].median_ms for lat in lats],
                           "table": res.details()["latency_table"],
                           "attempts": list(res.attempts), "torch_pruning_search": tp_info,
                           "load_avg": os.getloadavg()}
    for key, secs in (("latency_aware", t_lat), ("macs_target", t_macs), ("torch_pruning", t_tp)):
        if key not in models:
            continue
        c = profile(models[key], x)
        ratios = [lat[key].median_ms / lat["original"].median_ms for lat in lats]
        row[key] = {"macs_ratio": c.macs / base.macs, "params_ratio": c.params / base.params,
                    "latency_ratio": statistics.median(ratios), "latency_ratios": ratios,
                    "seconds": round(secs, 1)}
    row["latency_aware"]["predicted_ratio"] = res.selection.predicted_ratio
    row["latency_aware"]["check_ratio"] = res.measured_ratio
    print(json.dumps({k: row.get(k) for k in ("model", "latency_aware", "macs_target", "torch_pruning")}), flush=True)
    return row


def accuracy(target: float, runs: int, steps: int, shape: tuple[int, ...], criterion: str = "taylor",
             compensate: str = "lsq", tries: int = 3, seeds: tuple[int, ...] = (0,)) -> dict[str, Any]:
    """ResNet-56 / CIFAR-10 JPEG: (b) at ``target`` MACs, then (a) at the table's predicted latency of (b),
    retargeted (``tries`` selections at most) until it measures at most (b)'s latency in the same interleaved run;
    both after the same fine-tune (once per seed of ``seeds``, from the same pruned model), ranked by
    ``criterion`` and compensated by ``compensate``."""
    from slimcnn.models import load_model
    from slimcnn.tasks import make_task

    test, train = shared_path("cifar10-jpeg75", "test-10k.tar"), shared_path("cifar10-jpeg75", "train-subset-10k.tar")
    if test is None or train is None:
        raise SystemExit("--part accuracy needs ../shared/data/cifar10-jpeg75/{test-10k,train-subset-10k}.tar")
    loaded = load_model("slimcnn:resnet56")
    model = loaded.model.eval()
    task = make_task("classification", test, info=loaded.info, train_data=train, seed=0)
    comp = compensate if compensate != "none" else False
    torch.manual_seed(0)
    x = torch.randn(*shape)
    b = copy.deepcopy(model)
    prune_model_(b, x, criterion=criterion, macs=target, round_to=ort_channel_block(), best_effort=True, task=task,
                 compensate=comp)
    b_check = _ratio(model, b, x, runs)
    table = build_latency_table(model, x)
    modules = dict(b.named_modules())
    b_widths = {g.layer: modules[g.layer].out_channels for g in table.groups}
    b_predicted = table.predict_ratio({n: w for n, w in b_widths.items() if w < table.group(n).size})
    goal, pairs = b_predicted, []
    best: tuple[float, nn.Module, Any, dict[str, Any]] | None = None  # (a/b measured, model, result, timing)
    for _ in range(tries):
        cand = copy.deepcopy(model)
        got = prune_for_latency_(cand, x, goal, criterion=criterion, source="slimcnn:resnet56", task=task,
                                 compensate=comp, tries=1)
        if got.table != table:  # the cached table is reused; a rebuild (skipped cache under load) may time differently
            raise SystemExit("the latency table changed between (b)'s prediction and (a)'s selection (not cached: "
                             "load above the CPU count?); re-run on an idle machine")
        lat_try = compare_latency({"original": model, "latency_aware": cand, "macs_target": b}, x, runs=runs)
        ra, rb = (lat_try[k].median_ms / lat_try["original"].median_ms for k in ("latency_aware", "macs_target"))
        pairs.append({"target": goal, "knapsack_target": got.attempts[0]["knapsack_target"],
                      "predicted_ratio": got.selection.predicted_ratio,
                      "latency_aware_ratio": ra, "macs_target_ratio": rb})
        print("(a) try", json.dumps(pairs[-1]), flush=True)
        if best is None or ra / rb < best[0]:
            best = (ra / rb, cand, got, lat_try)
        if ra <= rb:
            break
        goal *= rb / ra
    assert best is not None
    _, a, res, lat = best
    base = profile(model, x)
    out: dict[str, Any] = {"input": list(shape), "target": target, "steps": steps, "seeds": list(seeds),
                           "attempts": list(res.attempts),
                           "criterion": criterion, "compensate": compensate, "macs_check_ratio": b_check,
                           "pairs": pairs,
                           "macs_predicted_ratio": b_predicted, "macs_widths": b_widths,
                           "latency_aware_widths": {g.layer: res.selection.widths.get(g.layer, g.size)
                                                    for g in table.groups},
                           "check_ratio": res.measured_ratio, "original_top1": task.evaluate(model).value}
    for key, m in (("latency_aware", a), ("macs_target", b)):
        c = profile(m, x)
        row = {"macs_ratio": c.macs / base.macs, "params_ratio": c.params / base.params,
               "latency_ratio": lat[key].median_ms / lat["original"].median_ms,
               "top1_pruned": task.evaluate(m.eval()).value}
        t0, tops = time.perf_counter(), []
        for seed in seeds:
            tuned = copy.deepcopy(m)
            task.finetune(tuned, steps, lr=0.01, seed=seed, progress=False)
            tops.append(task.evaluate(tuned.eval()).value)
        row["finetune_s"] = round((time.perf_counter() - t0) / len(seeds), 1)
        row["top1_finetuned_seeds"] = tops
        row["top1_finetuned"] = statistics.mean(tops)
        out[key] = row
        print(key, json.dumps(row), flush=True)
    out["load_avg"] = os.getloadavg()
    return out


def _widths_summary(acc: dict[str, Any]) -> str:
    """The table's prediction for (b) (= (a)'s target), (a)'s, and the groups where their widths differ."""
    a, b = acc["latency_aware_widths"], acc["macs_widths"]
    diff = [f"{n} {w} -> {a[n]}" for n, w in b.items() if a[n] != w]
    pred = acc["attempts"][0]["predicted_ratio"]
    return (f"table prediction {acc['macs_predicted_ratio']:.3f}x for (b), {pred:.3f}x for (a); "
            + (f"widths (b) -> (a) differ in {len(diff)} groups: " + ", ".join(diff) if diff
               else "(a) chose (b)'s widths in every group"))


def _pairs_summary(acc: dict[str, Any]) -> str:
    """(a)'s selections: target -> knapsack target (the search's aim) -> table prediction -> (a) / (b) measured in
    the same run."""
    return "tries (target -> knapsack target -> table -> measured): " + "; ".join(
        f"{p['target']:.3f} -> {p['knapsack_target']:.3f} -> {p['predicted_ratio']:.3f}x"
        f" -> (a) {p['latency_aware_ratio']:.3f}x vs (b) {p['macs_target_ratio']:.3f}x" for p in acc["pairs"])


def render_accuracy(acc: dict[str, Any], runs: int) -> list[str]:
    load = "/".join(f"{v:.1f}" for v in acc["load_avg"])
    lines = ["", f"## Accuracy at equal measured latency: ResNet-56, CIFAR-10 JPEG q75 ({acc['target']}x latency "
             "target)", "",
             f"`slimcnn:resnet56` (trained weights; {acc['original_top1']:.2f} % top-1 unpruned on the 10,000 JPEG test "
             f"images), timed at {'x'.join(map(str, acc['input']))}; (b) `--macs {acc['target']}x --round-to "
             f"{ort_channel_block()}` first, then (a) with the table's prediction for (b) as its target, retargeted "
             "by (b)'s / (a)'s measured ratio while (a) measured slower than (b) in a three-way interleaved timing "
             f"with the original ({runs} rounds each; {_pairs_summary(acc)}; {_widths_summary(acc)}); "
             f"load {load} at the end; both ranked by {acc.get('criterion', 'l1')}, "
             f"compensation {acc.get('compensate', 'none')}; then the same {acc['steps']} plain SGD steps "
             f"(lr 0.01, cosine, {_seeds_text(acc)}, train-subset-10k) and top-1 on all 10,000 test images.", "",
             "| method | MACs | params | latency (measured) | top-1 pruned | top-1 after fine-tune |",
             "|---|---|---|---|---|---|"]
    for key, label in METHODS[:2]:
        v = acc[key]
        seeds = v.get("top1_finetuned_seeds", [])
        each = f" ({', '.join(f'{t:.2f}' for t in seeds)})" if len(seeds) > 1 else ""
        lines.append(f"| {label} | {v['macs_ratio']:.3f}x | {v['params_ratio']:.3f}x | {v['latency_ratio']:.3f}x | "
                     f"{v['top1_pruned']:.2f} % | {v['top1_finetuned']:.2f} %{each} |")
    a, b = acc["latency_aware"], acc["macs_target"]
    gap = a["top1_finetuned"] - b["top1_finetuned"]
    mean = "on the mean of the seeds " if len(acc.get("seeds", [0])) > 1 else ""
    lead = ("(a) and (b) are equally accurate" if gap == 0 else
            f"{'(a) latency-aware' if gap > 0 else '(b) MACs-targeted'} is ahead {mean}by {abs(gap):.2f} points")
    pairs = list(zip(a.get("top1_finetuned_seeds", []), b.get("top1_finetuned_seeds", []), strict=True))
    wins = f" ((a) ahead with {sum(x > y for x, y in pairs)} of {len(pairs)} seeds)" if len(pairs) > 1 else ""
    lines += ["", f"After the same {acc['steps']} steps {lead}{wins}, (a) at {a['latency_ratio']:.3f}x and (b) at "
              f"{b['latency_ratio']:.3f}x latency in the same interleaved run (the kept try's)."]
    return lines


def _seeds_text(acc: dict[str, Any]) -> str:
    seeds = acc.get("seeds", [0])
    return f"seed {seeds[0]}" if len(seeds) == 1 else f"seeds {', '.join(map(str, seeds))}, one fine-tune each"


def _efficiency(row: dict[str, Any], key: str = "latency_aware") -> float | None:
    v = row.get(key)
    return v["macs_ratio"] / v["latency_ratio"] if v else None


def median_run(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """``--repeats`` whole runs of one model (pruning, bisection, timings; the latency table cached after the
    first); the run with the median efficiency of (a) is the row, every run's efficiencies ride along."""
    runs = [run(name, args.target, args.runs, args.objective, args.timings, args.runtime)
            for _ in range(args.repeats)]
    row = sorted(runs, key=lambda r: _efficiency(r) or 0.0)[len(runs) // 2]
    if len(runs) > 1:
        row["repeats"] = [{key: _efficiency(r, key) for key, _ in METHODS} | {"original_ms": r["original_ms"]}
                          for r in runs]
    return row


def render_repeats(rows: list[dict[str, Any]]) -> list[str]:
    """Each repeat's efficiencies (MACs ratio / measured latency ratio), for the models run more than once."""
    rows = [r for r in rows if len(r.get("repeats", [])) > 1]
    if not rows:
        return []
    lines = ["", "Repeats (whole runs of one model, each with its own pruning, bisection and timings, the latency "
             "table built once; the table above shows the run with the median efficiency of (a)): efficiency per "
             "run, then the median.", ""]
    for r in rows:
        parts = []
        for key, label in METHODS:
            vals = [rep[key] for rep in r["repeats"] if rep.get(key) is not None]
            if vals:
                parts.append(f"{label.split(' ')[0]} {', '.join(f'{v:.2f}' for v in vals)} "
                             f"(median **{statistics.median(vals):.2f}**)")
        ms = ", ".join(f"{rep['original_ms']:.1f}" for rep in r["repeats"])
        lines.append(f"- {r['model']}: {'; '.join(parts)}; the original's ms per run {ms}.")
    return lines


def _timings(table: dict[str, Any]) -> str:
    if table.get("source", "alone") == "alone":
        return f"{table['timings']} layer variants timed alone"
    if table.get("runtime") == "torch":
        return f"{table['timings']} models timed by layer hooks in PyTorch eager"
    return f"{table['timings']} models profiled in ONNX Runtime's graph"


def _speed_change(row: dict[str, Any]) -> str:
    """A remark when the original's time moved by more than ``SPEED_CHANGE`` between the final timings (the VM
    changed speed while they ran: their ratios are not all of one machine state)."""
    ms = row.get("original_ms_timings") or []
    if len(ms) < 2 or max(ms) <= SPEED_CHANGE * min(ms):
        return ""
    return (f" (**the VM changed speed during the final timings**: the original took "
            f"{' / '.join(f'{v:.1f}' for v in ms)} ms)")


def render(data: dict[str, Any]) -> str:
    env, rows = data["environment"], data["rows"]
    runtime = (f"**PyTorch eager** (torch {env['torch']}, CPU) on {env['threads']} intra-op threads"
               if data.get("runtime") == "torch" else
               f"ONNX Runtime {env['onnxruntime']} on {env['threads']} intra-op threads")
    lines = [f"# Latency-aware pruning vs MACs target vs Torch-Pruning at {data['target']}x latency", "",
             f"Machine: {env['cpu']}, {env['cores']} physical cores, {runtime}, channel block {env['block']}; torch {env['torch']}, "
             f"torchvision {env['torchvision']}, Torch-Pruning {env.get('torch-pruning', '?')}, python "
             f"{env['python']}. Random weights, L1 criterion. Each latency is the **median of {data.get('timings', 1)} "
             f"timings**, each the median of {data['runs']} interleaved rounds of original, (a), (b), (c) in one "
             "process (range of the timings in brackets; one pruning per model); the load average "
             "(1/5/15 min) at the end of each model's run is in the last column.", "",
             "| model | method | MACs | params | latency (measured) | efficiency (MACs/latency) | prune s | load |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        load = "/".join(f"{v:.1f}" for v in r["load_avg"])
        for key, label in METHODS:
            v = r.get(key)
            if v is None:
                err = r["torch_pruning_search"].get("error", "not run")
                lines.append(f"| {r['model']} | {label} | - | - | - | - | - | failed: {err} |")
                continue
            spread = (f" ({min(v['latency_ratios']):.3f}-{max(v['latency_ratios']):.3f})"
                      if len(v.get("latency_ratios", [])) > 1 else "")
            lines.append(f"| {r['model']} | {label} | {v['macs_ratio']:.3f}x | {v['params_ratio']:.3f}x | "
                         f"{v['latency_ratio']:.3f}x{spread} | {v['macs_ratio'] / v['latency_ratio']:.2f} | "
                         f"{v['seconds']} | "
                         f"{load} |")
    lines += ["", "Tries of (a) (knapsack target -> table prediction -> measured in the check, interleaved with the "
              "original only); (c)'s bisection (TP ratio -> measured latency):", ""]
    for r in rows:
        tries = "; ".join(f"{a['knapsack_target']:.3f} -> {a['predicted_ratio']:.3f}x -> {a['measured_ratio']:.3f}x"
                          + (f" (original {a['original_ms']:.1f} ms)" if "original_ms" in a else "")
                          for a in r["attempts"])
        t = r["table"]
        tp = "; ".join(f"{b['ratio']:.3f} -> {b['latency_ratio']:.3f}x" for b in r["torch_pruning_search"]["bisection"])
        lines.append(f"- {r['model']} ({'x'.join(map(str, r['input']))}, objective {r['objective']}): {tries}. "
                     f"Table: {t['groups']} groups, {_timings(t)}, {t['seconds']} s; whole model "
                     f"{r['original_ms']:.1f} ms vs the table's {t.get('whole_ms') or t['base_ms']:.1f} ms"
                     f"{_speed_change(r)}. "
                     f"TP: {tp or '-'}.")
    lines += ["", "Read with care: a shared 2-core VM (measurements of one model in two interleaved runs differ by "
              "a few % idle, by up to 30 % at the loads in the last column); random weights, so no accuracy here (see the ResNet-56 table); (a)'s final latency is "
              "measured again in the four-way run, so it can differ from its own check by the noise; (c) is "
              "bisected to (a)'s check ratio within 2 % (at most 7 steps, the closest kept)."]
    lines += render_repeats(rows)
    if "accuracy" in data:
        lines += render_accuracy(data["accuracy"], data["runs"])
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="+", default=DEFAULT_MODELS, choices=sorted(MODELS))
    ap.add_argument("--target", type=float, default=0.5)
    ap.add_argument("--runs", type=int, default=40)
    ap.add_argument("--timings", type=int, default=5, help="four-way timings per model (median reported)")
    ap.add_argument("--repeats", type=int, default=1,
                    help="whole runs per model; the median run of (a)'s efficiency is the row, all are listed")
    ap.add_argument("--objective", default="macs", choices=["macs", "importance"])
    ap.add_argument("--part", default="both", choices=["latency", "accuracy", "both"])
    ap.add_argument("--steps", type=int, default=250, help="fine-tune steps of the accuracy part")
    ap.add_argument("--acc-input", default="8x3x32x32", help="input shape timed in the accuracy part")
    ap.add_argument("--acc-criterion", default="taylor", help="channel criterion of (a) and (b) in the accuracy part")
    ap.add_argument("--acc-compensate", default="lsq", choices=["none", "mean", "lsq"],
                    help="compensation of (a) and (b) in the accuracy part")
    ap.add_argument("--acc-tries", type=int, default=3,
                    help="selections of (a) at most in the accuracy part, until it measures at most (b)'s latency")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0],
                    help="accuracy part: fine-tune (a) and (b) once per seed, from the same pruned models")
    ap.add_argument("--runtime", default="onnxruntime", choices=["onnxruntime", "torch"],
                    help="latency part: where every latency is measured (torch: PyTorch eager, results in "
                         "latency_aware_torch.*)")
    args = ap.parse_args()
    if args.runtime == "torch" and args.part != "latency":
        ap.error("--runtime torch runs the latency part only: add --part latency")
    path = RESULTS / ("latency_aware_torch.json" if args.runtime == "torch" else "latency_aware.json")
    old = json.loads(path.read_text()) if path.is_file() else {}
    same = old.get("target") == args.target
    run_latency = args.part in ("latency", "both")
    if args.part == "accuracy" and old and not same:  # another target: its own files, the main table kept
        path = RESULTS / f"latency_aware_accuracy_{args.target}.json"
        old = {}
    keep = [r for r in old.get("rows", []) if same and "torch_pruning_search" in r
            and (r["model"] not in args.models or not run_latency)]
    rows = [median_run(n, args) for n in args.models] if run_latency else []
    order = {n: i for i, n in enumerate(DEFAULT_MODELS)}
    rows = sorted(keep + rows, key=lambda r: order.get(r["model"], len(order)))
    env = {"cpu": cpu_model(), "cores": physical_cores(), "threads": physical_cores(), "block": ort_channel_block(),
           "python": platform.python_version(),
           **package_versions(["torch", "onnxruntime", "torchvision", "torch-pruning"])}
    if not run_latency:  # the rows kept were measured with the earlier run's Torch-Pruning
        env["torch-pruning"] = old.get("environment", {}).get("torch-pruning", env.get("torch-pruning"))
    data = {"environment": env, "target": args.target, "runs": args.runs, "timings": args.timings, "rows": rows,
            "runtime": args.runtime}
    if args.part in ("accuracy", "both"):
        shape = tuple(int(d) for d in args.acc_input.split("x"))
        data["accuracy"] = accuracy(args.target, args.runs, args.steps, shape, args.acc_criterion,
                                    args.acc_compensate, args.acc_tries, tuple(args.seeds))
    elif same and "accuracy" in old:
        data["accuracy"] = old["accuracy"]
    RESULTS.mkdir(exist_ok=True)
    path.write_text(json.dumps(data, indent=1))
    md = render(data) if data["rows"] else "\n".join(render_accuracy(data["accuracy"], args.runs)[1:]) + "\n"
    path.with_suffix(".md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
