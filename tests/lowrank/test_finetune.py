"""Fine-tuning with frozen factors (outer / sequential / none) and the training-throughput report."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from slimcnn.errors import ConfigError
from slimcnn.lowrank import LowRankSpec, decompose, factor_groups
from slimcnn.lowrank.finetune import finetune_frozen, freeze_plan, training_throughput
from slimcnn.tasks.base import TrainStats


class _Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(16, 16, 3, padding=1)  # -> Tucker-2 triple
        self.bn = nn.BatchNorm2d(16)
        self.pw = nn.Conv2d(16, 16, 1)  # -> SVD pair
        self.fc = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pw(self.bn(self.conv(x)).relu()).mean((2, 3)))


class _FakeTask:
    """Records, per ``finetune`` call, which parameters were trainable and what was passed."""

    name = "fake"

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        gen = torch.Generator().manual_seed(0)
        self._batches = [(torch.randn(4, 16, 6, 6, generator=gen), torch.randint(0, 3, (4,), generator=gen))
                         for _ in range(8)]

    def finetune(self, model: nn.Module, steps: int, *, params: Any = None, seed: int = 0, lr: float = 0.1) -> TrainStats:
        trainable = {id(p) for p in model.parameters() if p.requires_grad}
        given = list(params)
        self.calls.append({"steps": steps, "seed": seed, "lr": lr, "trainable": trainable,
                           "given": {id(p) for p in given}})
        opt = torch.optim.SGD(given, lr=lr)
        for i in range(steps):
            opt.zero_grad()
            self.loss(model, self._batches[i % len(self._batches)]).backward()
            opt.step()
        return TrainStats(steps, 0.0, 0.0, 0.0, "cpu")

    def training_batches(self, n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [self._batches[i % len(self._batches)] for i in range(n)]

    def loss(self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x, y = batch
        return nn.functional.cross_entropy(model(x), y)


def _decomposed() -> tuple[nn.Module, Any]:
    torch.manual_seed(0)
    spec = LowRankSpec(rank=4, rank_multiple=1, only_faster=False, include=("conv", "pw"))
    return decompose(_Tiny(), torch.randn(1, 16, 6, 6), spec, runtime=None)


def test_freeze_plan_phases() -> None:
    assert freeze_plan("outer", 10) == [("outer", 10)]
    assert freeze_plan("none", 10) == [("none", 10)]
    assert freeze_plan("sequential", 10, 3) == [("outer", 4), ("inner", 3), ("outer", 3)]
    assert freeze_plan("sequential", 1, 2) == [("outer", 1)]
    with pytest.raises(ConfigError, match="--freeze"):
        freeze_plan("sometimes", 10)
    with pytest.raises(ConfigError, match="phases"):
        freeze_plan("sequential", 10, 0)


def test_sequential_alternates_the_frozen_set_and_unfreezes_after() -> None:
    model, result = _decomposed()
    assert set(result.replaced) == {"conv", "pw"}
    outer, inner = (set(map(id, g)) for g in factor_groups(model, result))
    # outer = conv[0], conv[2] (+bias), pw[0]; inner = conv[1] (core), pw[1] (+bias)
    assert id(model.conv[0].weight) in outer and id(model.conv[2].weight) in outer and id(model.pw[0].weight) in outer
    assert id(model.conv[1].weight) in inner and id(model.pw[1].weight) in inner
    task = _FakeTask()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    stats = finetune_frozen(model, result, task, 6, freeze="sequential", phases=3, lr=0.05)  # type: ignore[arg-type]
    assert [c["steps"] for c in task.calls] == [2, 2, 2] and len(stats) == 3
    first, second, third = task.calls
    assert outer.isdisjoint(first["trainable"]) and inner <= first["trainable"]
    assert inner.isdisjoint(second["trainable"]) and outer <= second["trainable"]
    assert first["trainable"] == third["trainable"]
    assert all(c["given"] == c["trainable"] for c in task.calls)  # the optimiser only sees trainable params
    assert [c["seed"] for c in task.calls] == [0, 1, 2] and all(c["lr"] == 0.05 for c in task.calls)
    assert all(p.requires_grad for p in model.parameters())
    # both groups moved (each trained in some phase); untouched layers (fc, bn) trained throughout
    assert not torch.equal(before["conv.0.weight"], model.conv[0].weight)
    assert not torch.equal(before["conv.1.weight"], model.conv[1].weight)
    assert not torch.equal(before["fc.weight"], model.fc.weight)


def test_outer_freezing_keeps_outer_factors_fixed() -> None:
    model, result = _decomposed()
    task = _FakeTask()
    before = model.pw[0].weight.detach().clone(), model.conv[2].weight.detach().clone(), model.conv[1].weight.detach().clone()
    finetune_frozen(model, result, task, 3, freeze="outer")  # type: ignore[arg-type]
    assert len(task.calls) == 1 and task.calls[0]["steps"] == 3
    assert torch.equal(before[0], model.pw[0].weight) and torch.equal(before[1], model.conv[2].weight)
    assert not torch.equal(before[2], model.conv[1].weight)
    assert all(p.requires_grad for p in model.parameters())


def test_unfreezes_even_when_training_fails() -> None:
    model, result = _decomposed()

    class Boom(_FakeTask):
        def finetune(self, model: nn.Module, steps: int, **kw: Any) -> TrainStats:
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        finetune_frozen(model, result, Boom(), 2, freeze="outer")  # type: ignore[arg-type]
    assert all(p.requires_grad for p in model.parameters())


def test_training_throughput_reports_every_mode() -> None:
    model, result = _decomposed()
    model.eval()
    out = training_throughput(model, result, _FakeTask(), steps=2, modes=("none", "outer", "inner"))  # type: ignore[arg-type]
    assert set(out) == {"samples_per_s_no_freeze", "samples_per_s_outer_frozen", "samples_per_s_inner_frozen",
                        "speedup_outer_frozen", "speedup_inner_frozen", "batch_size", "steps"}
    assert all(v > 0 for v in out.values()) and out["batch_size"] == 4 and out["steps"] == 2
    assert out["speedup_outer_frozen"] == pytest.approx(out["samples_per_s_outer_frozen"] / out["samples_per_s_no_freeze"])
    assert not model.training  # training flag restored
    assert all(p.requires_grad and p.grad is None for p in model.parameters())
    with pytest.raises(ConfigError, match="modes"):
        training_throughput(model, result, _FakeTask(), modes=("everything",))  # type: ignore[arg-type]
