"""The shared fine-tune loop: convergence, schedules, checkpoint/resume, options."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from slimcnn.errors import ConfigError, UnknownNameError
from slimcnn.train import TrainingDivergedError, fit_, lr_at


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    """Toy nets: one thread is fastest, and immune to OpenMP spin-waits on a busy 2-core box."""
    torch.set_num_threads(1)


def _toy_data(n: int = 256, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=g)
    y = (x[:, 0] + x[:, 1] > 0).long()
    return x, y


def _factory(bs: int = 32, seed: int = 1):
    x, y = _toy_data()

    def make() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        g = torch.Generator().manual_seed(seed)
        while True:
            perm = torch.randperm(len(x), generator=g)
            for i in range(0, len(x), bs):
                yield x[perm[i : i + bs]], y[perm[i : i + bs]]

    return make


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(0.1), nn.Linear(16, 2))


def _ce(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    return F.cross_entropy(model(batch[0]), batch[1])


def _full_loss(model: nn.Module) -> float:
    x, y = _toy_data()
    with torch.no_grad():
        return float(F.cross_entropy(model.eval()(x), y))


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw"])
def test_loss_decreases_and_model_ends_in_eval(optimizer: str) -> None:
    model = _net()
    before = _full_loss(model)
    model.train()
    stats = fit_(model, _factory(), _ce, steps=60, lr=0.05 if optimizer == "sgd" else 0.01,
                 optimizer=optimizer, progress=False)  # type: ignore[arg-type]
    assert _full_loss(model) < 0.6 * before
    assert not model.training
    assert stats.steps == 60 and stats.final_loss < before and stats.samples_per_s > 0 and stats.device == "cpu"


def test_resume_after_interruption_matches_uninterrupted(tmp_path: Path) -> None:
    ref = _net()
    fit_(ref, _factory(), _ce, steps=20, lr=0.05, progress=False, seed=3)

    calls = {"n": 0}

    class Interrupted(Exception):
        pass

    def flaky(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        calls["n"] += 1
        if calls["n"] == 13:
            raise Interrupted
        return _ce(model, batch)

    ckpt = tmp_path / "run" / "ckpt.pt"
    first = _net()
    with pytest.raises(Interrupted):
        fit_(first, _factory(), flaky, steps=20, lr=0.05, progress=False, seed=3, checkpoint=ckpt, checkpoint_every=5)
    assert torch.load(ckpt, weights_only=True)["step"] == 10
    assert first.training is False  # restored even on error

    resumed = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(0.1), nn.Linear(16, 2))  # other init
    stats = fit_(resumed, _factory(), _ce, steps=20, lr=0.05, progress=False, seed=3, checkpoint=ckpt, checkpoint_every=5)
    assert stats.steps == 10
    for a, b in zip(ref.state_dict().values(), resumed.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert torch.load(ckpt, weights_only=True)["step"] == 20


def test_same_seed_same_weights_and_caller_rng_untouched() -> None:
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a, b = _net(), _net()
    torch.set_rng_state(state)
    fit_(a, _factory(), _ce, steps=10, lr=0.05, progress=False, seed=7)
    assert torch.equal(torch.get_rng_state(), state)
    fit_(b, _factory(), _ce, steps=10, lr=0.05, progress=False, seed=7)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))


def test_cycles_a_list_and_a_one_shot_iterator() -> None:
    x, y = _toy_data(64)
    batches = [(x[:32], y[:32]), (x[32:], y[32:])]
    for source in (batches, iter(list(batches))):
        model = _net()
        stats = fit_(model, source, _ce, steps=7, lr=0.05, progress=False)
        assert stats.steps == 7


def test_params_subset_only_trains_those() -> None:
    model = _net()
    first = model[0].weight.detach().clone()
    last = model[3].weight.detach().clone()
    fit_(model, _factory(), _ce, steps=5, lr=0.1, progress=False, params=model[3].parameters())
    assert torch.equal(model[0].weight, first)
    assert not torch.equal(model[3].weight, last)
    assert model[0].weight.requires_grad  # frozen only during the call


def test_grad_clip_and_divergence() -> None:
    model = _net()
    fit_(model, _factory(), _ce, steps=3, lr=0.05, grad_clip=0.1, progress=False)

    def bad(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return _ce(model, batch) * float("nan")

    with pytest.raises(TrainingDivergedError, match="step 1"):
        fit_(_net(), _factory(), bad, steps=3, lr=0.05, progress=False)


def test_bad_options() -> None:
    with pytest.raises(UnknownNameError, match="adam"):
        fit_(_net(), _factory(), _ce, steps=1, lr=0.1, optimizer="adma", progress=False)  # type: ignore[arg-type]
    with pytest.raises(UnknownNameError, match="cosine"):
        fit_(_net(), _factory(), _ce, steps=1, lr=0.1, schedule="cosin", progress=False)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="--lr"):
        fit_(_net(), _factory(), _ce, steps=1, lr=0.0, progress=False)
    with pytest.raises(ConfigError, match="empty"):
        fit_(_net(), [], _ce, steps=1, lr=0.1, progress=False)


def test_lr_schedules() -> None:
    assert lr_at(0, steps=100, lr=1.0, warmup_steps=10) == pytest.approx(0.1)
    assert lr_at(9, steps=100, lr=1.0, warmup_steps=10) == pytest.approx(1.0)
    assert lr_at(10, steps=100, lr=1.0, warmup_steps=10) == pytest.approx(1.0)
    assert lr_at(55, steps=100, lr=1.0, warmup_steps=10) == pytest.approx(0.5)
    assert lr_at(100, steps=100, lr=1.0) == pytest.approx(0.0)
    cos = [lr_at(s, steps=50, lr=1.0) for s in range(50)]
    assert all(a >= b for a, b in zip(cos, cos[1:], strict=False))
    assert lr_at(70, steps=100, lr=1.0, schedule="constant") == 1.0
    assert [lr_at(s, steps=100, lr=1.0, schedule="step") for s in (49, 50, 75)] == pytest.approx([1.0, 0.1, 0.01])
