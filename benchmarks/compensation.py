"""Compensation of pruned channels: none vs mean folding vs least-squares refit, before any fine-tuning.

FSRCNN x3 (shipped weights, calibration on 8 ``photos`` batches, PSNR on Set5 and Set14): a quarter of each
prunable group removed alone (``keep``), and every group pruned to 0.8x / 0.5x conv MACs, with the ``l1`` and
``taylor`` criteria. ResNet-56 (CIFAR-10 JPEG q75; calibration on 8 batches of ``train-subset-10k``, top-1 on
all 10,000 test images): ``l1`` to 0.7x / 0.5x MACs. Each row is pruned three times from the same weights
(``compensate`` False, ``"mean"``, ``"lsq"``); the seconds are the pruning's own, calibration included.
``repeat``: ResNet-56 pruned with ``lsq`` four times in a row from the same weights and batches (0.7x, 0.5x,
0.6x, 0.7x MACs), as a search does: the seconds of each (the second pruning keeps every consumer's full
statistics, later ones restrict them) and the largest output difference of the last from the first.

Usage: ``python benchmarks/compensation.py [--part sr cifar repeat]``.
Writes ``benchmarks/results/compensation.{json,md}``; needs ../shared/data.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import torch

from slimcnn.graph import trace
from slimcnn.models import load_model
from slimcnn.paths import shared_path
from slimcnn.prune import prune_model_
from slimcnn.tasks import make_task

OUT = Path(__file__).parent / "results"
MODES: tuple[Any, ...] = (False, "mean", "lsq")


def _row(model: torch.nn.Module, x: torch.Tensor, tasks: dict[str, Any], label: str, **prune: Any) -> dict[str, Any]:
    row: dict[str, Any] = {"removal": label, "criterion": prune["criterion"]}
    for mode in MODES:
        m = copy.deepcopy(model)
        t0 = time.perf_counter()
        prune_model_(m, x, compensate=mode, task=next(iter(tasks.values())), **prune)
        secs = time.perf_counter() - t0
        key = mode or "none"
        row[key] = {name: task.evaluate(m.eval()).value for name, task in tasks.items()} | {"s": round(secs, 1)}
        print(label, prune["criterion"], key, json.dumps(row[key]), flush=True)
    return row


def sr_part() -> dict[str, Any]:
    loaded = load_model("slimcnn:fsrcnn", scale=3)
    model = loaded.model.eval()
    tasks = {s: make_task("sr", "photos", info=loaded.info, scale=3, val_data=shared_path("sr", s)) for s in ("Set5", "Set14")}
    x = tasks["Set5"].example_input()
    base = {name: task.evaluate(model).value for name, task in tasks.items()}
    groups = [(g.members[0].layer, g.size) for g in trace(model, x).groups() if g.prunable]
    rows = []
    for criterion in ("l1", "taylor"):
        for layer, size in groups:
            rows.append(_row(model, x, tasks, f"{layer}: keep {size - size // 4} of {size}", criterion=criterion,
                             keep={layer: size - size // 4}))
        for macs in (0.8, 0.5):
            rows.append(_row(model, x, tasks, f"every group, {macs}x MACs", criterion=criterion, macs=macs))
    return {"model": "slimcnn:fsrcnn x3", "metric": "PSNR dB", "original": base, "rows": rows}


def cifar_part() -> dict[str, Any]:
    loaded = load_model("slimcnn:resnet56")
    model = loaded.model.eval()
    test, train = shared_path("cifar10-jpeg75", "test-10k.tar"), shared_path("cifar10-jpeg75", "train-subset-10k.tar")
    tasks = {"test-10k": make_task("classification", test, info=loaded.info, train_data=train, seed=0)}
    x = tasks["test-10k"].example_input()
    rows = [_row(model, x, tasks, f"every group, {m}x MACs", criterion="l1", macs=m) for m in (0.7, 0.5)]
    return {"model": "slimcnn:resnet56", "metric": "top-1 %", "original": {"test-10k": tasks["test-10k"].evaluate(model).value},
            "rows": rows}


def repeat_part() -> dict[str, Any]:
    loaded = load_model("slimcnn:resnet56")
    model = loaded.model.eval()
    test, train = shared_path("cifar10-jpeg75", "test-10k.tar"), shared_path("cifar10-jpeg75", "train-subset-10k.tar")
    task = make_task("classification", test, info=loaded.info, train_data=train, seed=0)
    x, batches = task.example_input(), list(task.calibration_batches(8))
    probe = batches[0][0] if isinstance(batches[0], (list, tuple)) else batches[0]
    runs, outs = [], []
    for macs in (0.7, 0.5, 0.6, 0.7):
        m = copy.deepcopy(model)
        t0 = time.perf_counter()
        prune_model_(m, x, criterion="l1", macs=macs, compensate="lsq", batches=batches)
        runs.append({"macs": macs, "s": round(time.perf_counter() - t0, 2)})
        with torch.no_grad():
            outs.append(m.eval()(probe))
        print("repeat", json.dumps(runs[-1]), flush=True)
    return {"model": "slimcnn:resnet56", "runs": runs, "last_vs_first_max_abs": float((outs[-1] - outs[0]).abs().max())}


def _render_repeat(r: dict[str, Any]) -> list[str]:
    return ["## Repeated lsq prunings (a search's measured points)", "",
            f"{r['model']}, l1, 8 calibration batches, the same weights each time ({r.get('load', '')}); the last 0.7x "
            f"pruning's outputs differ from the first's by {r['last_vs_first_max_abs']:.3g} at most.", "",
            "| pruning | MACs | s |", "|---|---|---|"] + [
            f"| {i + 1} | {run['macs']}x | {run['s']} |" for i, run in enumerate(r["runs"])] + [""]


def render(res: dict[str, Any]) -> str:
    lines = ["# Compensation of pruned channels (no fine-tuning)", "",
             f"Machine: {res['machine']}; torch {res['torch']}; {res['load']}.", "",
             "`compensate`: none; `mean` folds each removed channel's calibration mean into the bias of the layers "
             "reading it; `lsq` refits those layers' weights and bias by least squares to their original outputs "
             "(mean folding where it cannot: grouped convs). Score after pruning, before any fine-tuning; "
             "s = seconds of each pruning (calibration included).", ""]
    for name, part in res["parts"].items():
        if name == "repeat":
            lines += _render_repeat(part)
            continue
        sets = list(part["original"])
        lines += [f"## {part['model']} ({part['metric']}; original " +
                  ", ".join(f"{s} {v:.2f}" for s, v in part["original"].items()) + ")", "",
                  "| removal | criterion | " + " | ".join(f"{s}: none / mean / lsq" for s in sets) + " | s (none / mean / lsq) |",
                  "|---|---|" + "---|" * len(sets) + "---|"]
        for r in part["rows"]:
            cells = [" / ".join(f"{r[k][s]:.2f}" for k in ("none", "mean", "lsq")) for s in sets]
            lines.append(f"| {r['removal']} | {r['criterion']} | " + " | ".join(cells) +
                         f" | {r['none']['s']} / {r['mean']['s']} / {r['lsq']['s']} |")
        lines.append("")
    lines.append(f"Run: `python benchmarks/compensation.py --part {' '.join(res['parts'])}` (parts merge into the files; the "
                 "machine line is the last run's).")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", nargs="+", default=["sr", "cifar", "repeat"], choices=["sr", "cifar", "repeat"])
    args = ap.parse_args()
    if shared_path("sr") is None or shared_path("cifar10-jpeg75") is None:
        raise SystemExit("needs ../shared/data (sr and cifar10-jpeg75; see its README)")
    load0 = os.getloadavg()
    old = json.loads((OUT / "compensation.json").read_text()).get("parts", {}) if (OUT / "compensation.json").is_file() else {}
    parts = dict(old)  # parts merge: each keeps the load it was measured under
    for p in args.part:
        l0 = os.getloadavg()[0]
        parts[p] = {"sr": sr_part, "cifar": cifar_part, "repeat": repeat_part}[p]()
        parts[p]["load"] = f"load average {l0:.2f} at its start, {os.getloadavg()[0]:.2f} at its end"
    res = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs",
           "torch": torch.__version__, "threads": torch.get_num_threads(),
           "load": f"load average {load0[0]:.2f} at start, {os.getloadavg()[0]:.2f} at the end", "parts": parts}
    OUT.mkdir(exist_ok=True)
    (OUT / "compensation.json").write_text(json.dumps(res, indent=1) + "\n")
    (OUT / "compensation.md").write_text(render(res))


if __name__ == "__main__":
    main()
