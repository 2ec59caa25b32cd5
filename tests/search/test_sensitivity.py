"""Sensitivity sweep: cached == uncached, resumable, parallel == serial, monotone on a toy net."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from torch import nn

from slimcnn.search.sensitivity import Knob, SensitivityTable, profile_cost, sensitivity_sweep
from slimcnn.types import Score


class ToyTask:
    """Negative squared error to the unpruned model's logits on fixed random data (higher is better)."""

    name = "toy"

    def __init__(self, model: nn.Module) -> None:
        g = torch.Generator().manual_seed(0)
        self.batches = [torch.randn(8, 3, 12, 12, generator=g) for _ in range(4)]
        with torch.no_grad():
            self.labels = [model(b) for b in self.batches]
        self.calls = 0

    def evaluate(self, model: nn.Module, *, limit: int | None = None, device: str = "cpu") -> Score:
        self.calls += 1
        err = 0.0
        with torch.no_grad():
            for b, y in zip(self.batches, self.labels, strict=True):
                err += float((model(b) - y).pow(2).mean())
        return Score("fidelity", -1e3 * err, True, n=32, dataset="toy")

    def example_input(self, batch: int = 1) -> torch.Tensor:
        return torch.randn(batch, 3, 12, 12)


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 5),
    )


def _zero_filters(model: nn.Module, knob: Knob, amount: float) -> nn.Module:
    new = copy.deepcopy(model)
    conv = new.get_submodule(knob.name)
    k = int(round(amount * conv.out_channels))
    with torch.no_grad():
        order = conv.weight.abs().sum((1, 2, 3)).argsort()[:k]
        conv.weight[order] = 0
        conv.bias[order] = 0
    return new


KNOBS = [Knob(name, (0.25, 0.5, 0.75)) for name in ("0", "2", "4")]


def test_cached_sweep_equals_uncached_and_replays() -> None:
    model = _net()
    task = ToyTask(model)
    a = sensitivity_sweep(model, task, KNOBS, _zero_filters, cache=False, progress=False)
    b = sensitivity_sweep(model, task, KNOBS, _zero_filters, cache=True, progress=False)
    assert [(p.knob, p.amount, p.metric) for p in a.points] == [(p.knob, p.amount, p.metric) for p in b.points]
    assert b.conditions["replayed_modules"] > 0 and a.conditions["replayed_modules"] == 0
    assert a.baseline == 0.0
    assert any(p.drop > 0 for p in a.points)
    # Zeroing more filters of the last conv moves the output further (monotone on this net).
    last = [p.metric for p in a.curve("4")]
    assert last == sorted(last, reverse=True)


def test_resume_skips_finished_points(tmp_path: Path) -> None:
    model = _net()
    task = ToyTask(model)
    path = tmp_path / "sens.json"
    first = sensitivity_sweep(model, task, KNOBS[:1], _zero_filters, resume=path, progress=False)
    calls_before = task.calls
    full = sensitivity_sweep(model, task, KNOBS, _zero_filters, resume=path, progress=False, cache=False)
    # baseline + 2 remaining knobs × 3 amounts
    assert task.calls - calls_before == 1 + 6
    assert len(full.points) == 9 and full.points[:3] == first.points
    assert SensitivityTable.load(path).points == full.points

    # the same model with weight bytes counted another way (compress counts a stage before int8 as the int8
    # file) is a new sweep: its points' bytes would be wrong
    def int8_cost(m: nn.Module, assignment: dict[str, float]) -> tuple[int, int, int]:
        params, macs, wbytes = profile_cost(torch.zeros(1, 3, 12, 12))(m, assignment)
        return params, macs, wbytes // 4 + 17

    calls_before = task.calls
    recounted = sensitivity_sweep(model, task, KNOBS, _zero_filters, resume=path, progress=False, cache=False,
                                   cost=int8_cost)
    assert task.calls - calls_before == 1 + 9 and recounted.base_weight_bytes == full.base_weight_bytes // 4 + 17


def test_workers_give_the_same_numbers() -> None:
    model = _net()
    task = ToyTask(model)
    serial = sensitivity_sweep(model, task, KNOBS, _zero_filters, progress=False)
    parallel = sensitivity_sweep(model, task, KNOBS, _zero_filters, workers=2, progress=False)
    key = lambda t: sorted((p.knob, p.amount, p.metric, p.macs) for p in t.points)  # noqa: E731
    assert key(serial) == key(parallel)


def _unused(*_: Any) -> None:  # keep typing imports honest
    return None
