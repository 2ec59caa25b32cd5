"""Liu et al.'s uniform removal (UR) on VDSR: the TCAS Table II "params remaining" arithmetic.

UR removes the same fraction r of filters from every prunable layer (ranked by filter sparsity);
VDSR's 1-filter output layer is never pruned. The paper counts weights and one bias per filter
(664,704 + 1,217 for VDSR): r = 0.25 leaves 56.31 % (PAPERS.md §1.5 gets 56.32 % by arithmetic). Our
VDSR weights carry no biases, so the measured count is weights only: 374,112 / 664,704 = 56.28 %.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from slimcnn.measure import profile
from slimcnn.models import load_model
from slimcnn.prune import prune_model_


def _paper_params(model: nn.Module) -> int:
    """Conv weights plus one bias per filter, as the paper counts them."""
    return sum(m.weight.numel() + m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d))


@pytest.fixture(scope="module")
def vdsr_ur() -> tuple[nn.Module, nn.Module, torch.Tensor]:
    base = load_model("slimcnn:vdsr", scale=2).model
    pruned = copy.deepcopy(base)
    x = torch.rand(1, 1, 41, 41)
    prune_model_(pruned, x, criterion="sparsity", prune_ratio=0.25)
    return base, pruned, x


def test_ur_quarter_keeps_48_filters_and_the_output_layer(vdsr_ur: tuple[nn.Module, nn.Module, torch.Tensor]) -> None:
    base, pruned, x = vdsr_ur
    convs = [m for m in pruned.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 20
    assert [c.out_channels for c in convs] == [48] * 19 + [1]
    assert [c.in_channels for c in convs] == [1] + [48] * 19
    assert pruned(x).shape == base(x).shape == (1, 1, 41, 41)


def test_ur_quarter_matches_the_papers_params_and_macs(vdsr_ur: tuple[nn.Module, nn.Module, torch.Tensor]) -> None:
    base, pruned, x = vdsr_ur
    assert _paper_params(base) == 664_704 + 1_217
    paper_pct = 100.0 * _paper_params(pruned) / _paper_params(base)
    assert paper_pct == pytest.approx(56.31, abs=0.1)  # TCAS Table II, UR r = 0.25
    assert paper_pct == pytest.approx(100.0 * 375_025 / 665_921, abs=1e-9)

    c0, c1 = profile(base, x), profile(pruned, x)
    assert (c0.params, c1.params) == (664_704, 374_112)  # no biases in our weights
    ours_pct = 100.0 * c1.params / c0.params
    assert ours_pct == pytest.approx(56.3, abs=0.1)
    # every conv runs at 41x41 with stride 1 and padding 1, so MACs shrink exactly like the weights
    assert c1.macs * c0.params == c0.macs * c1.params
    assert 100.0 * c1.macs / c0.macs == pytest.approx(56.28, abs=0.01)
