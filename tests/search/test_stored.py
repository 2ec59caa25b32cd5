"""Costs of a model as the compact file it is written to stores it, equal to what ``analyze`` counts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from slimcnn.cli import main
from slimcnn.models import load_model
from slimcnn.quantize import load_packed, quantize_model, read_packed, save_packed
from slimcnn.search._stored import stored_cost
from slimcnn.search.families import kmeans_spec


def test_kernels_removed_from_a_layer_kmeans_left_alone_stay_out_of_the_slim_and_are_counted_gone(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A .slim stores a weight k-means did not share without its removed kernels (kind ``kernels``, version 2):
    they count gone in params, MACs and bytes, as for a shared layer and a .slimk. Before, such a layer was stored
    dense with its kernels as zeros, so a kmeans stage after a kernel stage counted them again (an ESPCN through
    kernel,kmeans: 16,388 params where the kernel stage had left 8,599), which could undo a MACs target."""
    loaded = load_model("slimcnn:lenet5")
    model = loaded.model.eval()
    with torch.no_grad():
        for name in ("conv1", "conv2"):
            w = getattr(model, name).weight
            w[: w.shape[0] // 2] = 0  # whole kernels removed in both layers
    x = torch.randn(1, 1, 32, 32)
    res = quantize_model(model, kmeans_spec({"conv2": 4}))
    path = tmp_path / "model.slim"
    report = save_packed(path, res, source=loaded.source, info=loaded.info)
    header = read_packed(path).header
    assert header["version"] == 2 and header["tensors"]["conv1.weight"]["kind"] == "kernels"
    assert all(torch.equal(a, b) for a, b in zip(load_packed(path).model.state_dict().values(),
                                                 res.model.state_dict().values(), strict=True))
    assert main(["analyze", f"file:{path}", "--json", "--no-latency"]) == 0
    analyzed = json.loads(capsys.readouterr().out)
    c = stored_cost(res.model, x, {"conv2": 4}, ["conv1", "conv2"])
    assert (c.params, c.macs, c.weight_bytes) == (analyzed["params"], analyzed["macs"], analyzed["weight_bytes"])
    assert report.weight_bytes == res.weight_bytes == c.weight_bytes
    conv1_gone = model.conv1.weight.shape[0] // 2 * model.conv1.weight[0].numel()
    conv2_gone = model.conv2.weight.shape[0] // 2 * model.conv2.weight[0].numel()
    dense = sum(p.numel() for p in model.parameters())
    assert c.params == dense - conv1_gone - conv2_gone
    assert res.kernel_saved_bytes > 0 and res.kernel_saved_bytes < 4 * conv1_gone  # its keep mask is stored
    slimk = stored_cost(model, x, None, ["conv1", "conv2"])  # a .slimk stores neither layer's removed kernels
    assert slimk.params == c.params


def test_a_slim_without_removed_kernels_in_unshared_weights_is_still_version_1(tmp_path: Path) -> None:
    """The ``kernels`` kind is the only change of version 2: a file that does not use it is written as before."""
    loaded = load_model("slimcnn:lenet5")
    res = quantize_model(loaded.model.eval(), kmeans_spec({"conv2": 4}))
    save_packed(tmp_path / "model.slim", res, source=loaded.source, info=loaded.info)
    header = read_packed(tmp_path / "model.slim").header
    assert header["version"] == 1 and {e["kind"] for e in header["tensors"].values()} == {"raw", "kmeans"}
    assert res.kernel_saved_bytes == 0
