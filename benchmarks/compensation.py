"""Compensation of pruned channels: none vs mean folding vs least-squares refit, before any fine-tuning.

FSRCNN x3 (shipped weights, calibration on 8 ``photos`` batches, PSNR on Set5 and Set14): a quarter of each
prunable group removed alone (``keep``), and every group pruned to 0.8x / 0.5x conv MACs, with the ``l1`` and
``taylor`` criteria. ResNet-56 (CIFAR-10 JPEG q75; calibration on 8 batches of ``train-subset-10k``, top-1 on
all 10,000 test images): ``l1`` to 0.7x / 0.5x MACs. Each row is pruned three times from the same weights
(``compensate`` False, ``"mean"``, ``"lsq"``); the seconds are the pruning's own, calibration included.

Usage: ``python benchmarks/compensation.py [--part sr cifar]``.
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


def render(res: dict[str, Any]) -> str:
    lines = ["# Compensation of pruned channels (no fine-tuning)", "",
             f"Machine: {res['machine']}; torch {res['torch']}; {res['load']}.", "",
             "`compensate`: none; `mean` folds each removed channel's calibration mean into the bias of the layers "
             "reading it; `lsq` refits those layers' weights and bias by least squares to their original outputs "
             "(mean folding where it cannot: grouped convs). Score after pruning, before any fine-tuning; "
             "s = seconds of each pruning (calibration included).", ""]
    for part in res["parts"].values():
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
    lines.append(f"Run: `python benchmarks/compensation.py --part {' '.join(res['parts'])}`.")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", nargs="+", default=["sr", "cifar"], choices=["sr", "cifar"])
    args = ap.parse_args()
    if shared_path("sr") is None or shared_path("cifar10-jpeg75") is None:
        raise SystemExit("needs ../shared/data (sr and cifar10-jpeg75; see its README)")
    load0 = os.getloadavg()
    parts = {p: (sr_part() if p == "sr" else cifar_part()) for p in args.part}
    res = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs",
           "torch": torch.__version__, "threads": torch.get_num_threads(),
           "load": f"load average {load0[0]:.2f} at start, {os.getloadavg()[0]:.2f} at the end", "parts": parts}
    OUT.mkdir(exist_ok=True)
    (OUT / "compensation.json").write_text(json.dumps(res, indent=1) + "\n")
    (OUT / "compensation.md").write_text(render(res))


if __name__ == "__main__":
    main()
