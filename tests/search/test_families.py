"""Search families: single-knob and combined appliers produce working, cheaper models."""

from __future__ import annotations

import torch
from torch import nn

from slimcnn.search.families import FAMILIES, KMeansFamily, LowRankFamily


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10),
    )


def test_lowrank_family_cuts_macs_and_keeps_shapes() -> None:
    model, x = _net(), torch.randn(1, 3, 16, 16)
    fam = LowRankFamily(x, rank_multiple=4)
    knobs = fam.knobs(model, x)
    assert "2" in [k.name for k in knobs]
    cost = fam.cost(x)
    new = fam.apply_many(model, {"2": 0.75})
    assert isinstance(new[2], nn.Sequential) and isinstance(model[2], nn.Conv2d)
    assert new(x).shape == model(x).shape
    assert cost(new, {"2": 0.75})[1] < cost(model, {})[1]
    assert fam.details(new, {"2": 0.75})["ranks"]["2"]


def test_kmeans_family_counts_bits_in_weight_bytes() -> None:
    model, x = _net(), torch.randn(1, 3, 16, 16)
    fam = KMeansFamily(x)
    cost = fam.cost(x)
    new = fam.apply(model, fam.knobs(model, x)[1], 4)
    assert new[2].weight.unique().numel() <= 16
    dense_bytes = cost(model, {})[2]
    # 4-bit indices + the 16-centroid float32 codebook model.slim stores with them
    assert cost(new, {"2": 4})[2] == dense_bytes - 32 * 32 * 9 * 4 + 32 * 32 * 9 * 4 // 8 + 16 * 4
    assert set(FAMILIES.names()) >= {"lowrank", "kmeans"}
