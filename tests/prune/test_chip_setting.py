"""CHIP's published ResNet-56 setting through the keep-count helper (PAPERS.md §5.4)."""

from __future__ import annotations

import torch

from slimcnn.measure import profile
from slimcnn.models import load_model
from slimcnn.prune import chip_cifar_resnet_keep, parse_sparsity, prune_model_


def test_parse_sparsity() -> None:
    sp = parse_sparsity("[0.]+[0.15]*2+[0.4]*27")
    assert len(sp) == 30 and sp[:4] == [0.0, 0.15, 0.15, 0.4]


def test_chip_resnet56_setting() -> None:
    m = load_model("slimcnn:resnet56").model.eval()
    x = torch.randn(1, 3, 32, 32)
    base = profile(m, x)
    assert (base.params, base.macs) == (853018, 125485696)
    keep = chip_cifar_resnet_keep(m, "[0.]+[0.15]*2+[0.4]*27")
    assert keep["layer1.0.conv1"] == 9 and keep["layer2.0.conv1"] == 19 and keep["layer3.8.conv1"] == 38
    prune_model_(m, x, criterion="l1", keep=keep)
    cost = profile(m, x)
    # Published: 0.48 M params / 65.94 M FLOPs. Exact coupled pruning gives 65-66 M MACs but 0.474 M params:
    # CHIP keeps the stem at 16 and the stage-3 stream at 64 with misaligned residual channels (not exact).
    assert 65e6 <= cost.macs <= 66e6
    assert 0.47e6 <= cost.params <= 0.49e6
    assert m(x).shape == (1, 10)
