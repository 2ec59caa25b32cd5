"""Costs of a model as the compact file it is written to stores it, equal to what ``analyze`` counts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from slimcnn.cli import main
from slimcnn.models import load_model
from slimcnn.quantize import quantize_model, save_packed
from slimcnn.search._stored import stored_cost
from slimcnn.search.families import kmeans_spec


def test_kernels_removed_from_a_layer_kmeans_left_alone_are_counted_as_the_slim_stores_them(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A .slim stores a layer k-means did not share densely, its removed kernels as zeros: they count (compress
    counted them gone while `analyze` of the written .slim counted them, 2,599 vs 3,148 params on an ESPCN)."""
    loaded = load_model("slimcnn:lenet5")
    model = loaded.model.eval()
    with torch.no_grad():
        for name in ("conv1", "conv2"):
            w = getattr(model, name).weight
            w[: w.shape[0] // 2] = 0  # whole kernels removed in both layers
    x = torch.randn(1, 1, 32, 32)
    res = quantize_model(model, kmeans_spec({"conv2": 4}))
    path = tmp_path / "model.slim"
    save_packed(path, res, source=loaded.source, info=loaded.info)
    assert main(["analyze", f"file:{path}", "--json", "--no-latency"]) == 0
    analyzed = json.loads(capsys.readouterr().out)
    c = stored_cost(res.model, x, {"conv2": 4}, ["conv1", "conv2"])
    assert (c.params, c.macs) == (analyzed["params"], analyzed["macs"])
    dense = sum(p.numel() for p in model.parameters())
    conv2_gone = model.conv2.weight.shape[0] // 2 * model.conv2.weight[0].numel()
    assert c.params == dense - conv2_gone  # conv1's zeros are stored, so counted
    slimk = stored_cost(model, x, None, ["conv1", "conv2"])  # a .slimk stores neither layer's removed kernels
    assert slimk.params == dense - conv2_gone - model.conv1.weight.shape[0] // 2 * model.conv1.weight[0].numel()
