"""``load_model(..., seed=N)`` makes a random initialisation reproducible without touching global RNG state."""

from __future__ import annotations

import pytest
import torch

from slimcnn.models import load_model


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


@pytest.mark.parametrize("source", ["slimcnn:lenet5", "torchvision:resnet18"])
def test_seed_fixes_the_random_init(source: str) -> None:
    a = load_model(source, seed=3).model
    b = load_model(source, seed=3).model
    c = load_model(source, seed=4).model
    assert _same(a, b)
    assert not _same(a, c)


def test_seed_leaves_the_global_rng_alone() -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    load_model("slimcnn:lenet5", seed=3)
    assert torch.equal(torch.rand(3), expected)
