"""Search families: single-knob and combined appliers produce working, cheaper models."""

from __future__ import annotations

import torch
from torch import nn

from slimcnn.search.families import FAMILIES, KMeansFamily, LowRankFamily, PruneFamily
from slimcnn.search.plan import search_steps


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


def test_prune_family_details_name_the_plan_of_the_model_it_returned() -> None:
    """An empty assignment prunes nothing and has no plan: it reported the last trial's, which compress and
    search then wrote to plan.json beside a model that had not been pruned."""
    model, x = _net(), torch.randn(1, 3, 16, 16)
    fam = PruneFamily(x)
    pruned = fam.apply_many(model, {"0": 0.5})
    assert pruned[0].out_channels == 16 and fam.details(pruned, {"0": 0.5})["prune_plan"]["layers"]["0"]
    same = fam.apply_many(model, {})
    assert same[0].out_channels == 32 and fam.details(same, {})["prune_plan"] is None

    class _Result:  # what search_steps reads of a search that chose no knob after trying one
        assignment: dict[str, float] = {}
        strategy_log: dict[str, list[object]] = {}
        details = fam.details(same, {})

    class _Spec:
        method = "prune"

    assert search_steps(same, _Spec(), _Result(), x) == ()
