"""CHIP's published ResNet-56 setting through the keep-count helper (PAPERS.md §5.4)."""

from __future__ import annotations

import copy

import pytest
import torch

from slimcnn.errors import ConfigError
from slimcnn.graph import trace, zeroed_forward
from slimcnn.measure import export_onnx, profile
from slimcnn.models import load_model
from slimcnn.models.cifar import decouple_shortcuts_
from slimcnn.prune import chip_cifar_resnet_keep, parse_sparsity, prune_model_


def test_parse_sparsity() -> None:
    sp = parse_sparsity("[0.]+[0.15]*2+[0.4]*27")
    assert len(sp) == 30 and sp[:4] == [0.0, 0.15, 0.15, 0.4]


def test_chip_resnet56_setting(tmp_path) -> None:
    m = load_model("slimcnn:resnet56").model.eval()
    x = torch.randn(2, 3, 32, 32)
    base = profile(m, x[:1])
    assert (base.params, base.macs) == (853018, 125485696)
    with pytest.raises(ConfigError, match="decouple_shortcuts_"):
        chip_cifar_resnet_keep(m, "[0.]+[0.15]*2+[0.4]*27")
    y0 = m(x)
    decouple_shortcuts_(m)
    torch.testing.assert_close(m(x), y0, rtol=0, atol=0)  # function-preserving
    assert profile(m, x[:1]).params == base.params
    keep = chip_cifar_resnet_keep(m, "[0.]+[0.15]*2+[0.4]*27")
    assert keep["conv1"] == 16 and keep["layer1.3.conv2"] == 13 and keep["layer2.0.conv2"] == 27
    assert keep["layer1.0.conv1"] == 9 and keep["layer2.0.conv1"] == 19 and keep["layer3.8.conv1"] == 38
    assert "layer3.0.conv2" not in keep
    original = copy.deepcopy(m)
    graph = trace(m, x)
    out = prune_model_(m, x, criterion="l1", keep=keep, graph=graph)
    cost = profile(m, x[:1])
    # Published 0.48 M params / 65.94 M FLOPs; PAPERS.md §5.4 recounts 0.4854 M and 65.17 M conv MACs.
    assert 65e6 <= cost.macs <= 66e6
    assert 0.48e6 <= cost.params <= 0.49e6
    with torch.no_grad():
        torch.testing.assert_close(m(x), zeroed_forward(original, x, graph, out.removal), rtol=1e-4, atol=1e-5)
    export_onnx(m, x, tmp_path / "m.onnx")  # the pruned shortcuts (gather + zero fill) run in ORT, parity checked
