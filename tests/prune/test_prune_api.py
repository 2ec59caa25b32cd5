"""Criteria, amounts, plans."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import torchvision
from graph._nets import Concat, Residual, randomize_

from slimcnn.errors import ConfigError
from slimcnn.graph import trace
from slimcnn.prune import CRITERIA, PrunePlan, ScoreContext, apply_plan, prune_, prune_model_, score_groups


def test_registry_names() -> None:
    assert set(CRITERIA.names()) >= {"l1", "l2", "bn_scale", "taylor", "random", "sparsity", "chip"}


@pytest.mark.parametrize("criterion", ["l1", "l2", "bn_scale", "random", "sparsity", "chip"])
def test_criteria_prune_and_run(criterion: str) -> None:
    m = randomize_(Residual())
    x = torch.randn(2, 3, 8, 8)
    out = prune_model_(m, x, criterion=criterion, prune_ratio=0.5)
    assert out.macs_after < out.macs_before
    assert m(x).shape == (2, 5, 8, 8)


def test_sparsity_matches_definition() -> None:
    m = Residual().eval()
    g = trace(m, torch.randn(1, 3, 8, 8))
    s = CRITERIA.get("sparsity")(ScoreContext(m, g))[("a.0", "out")]
    w = m.a[0].weight.detach().abs()
    expected = -(w < w.mean()).float().reshape(12, -1).mean(1)
    torch.testing.assert_close(s, expected)


def test_taylor_uses_task_batches() -> None:
    class T:
        def training_batches(self, n):
            return [(torch.randn(2, 3, 8, 8), None) for _ in range(n)]

        def loss(self, model, batch):
            return model(batch[0]).pow(2).mean()

    m = randomize_(Residual())
    g = trace(m, torch.randn(1, 3, 8, 8))
    scores = score_groups(ScoreContext(m, g, task=T(), calib=2), "taylor")
    assert all(torch.isfinite(v).all() for v in scores.values()) and any(v.sum() > 0 for v in scores.values())
    with pytest.raises(ConfigError):
        CRITERIA.get("taylor")(ScoreContext(m, g))


def test_random_is_seeded() -> None:
    m = Residual().eval()
    g = trace(m, torch.randn(1, 3, 8, 8))
    a = score_groups(ScoreContext(m, g, seed=3), "random")
    b = score_groups(ScoreContext(m, g, seed=3), "random")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_round_to_and_never_zero() -> None:
    m = torchvision.models.resnet18().eval()
    x = torch.randn(1, 3, 32, 32)
    g = trace(m, x)
    prune_model_(m, x, prune_ratio=0.9, round_to=8, graph=g)
    for mod in m.modules():
        if isinstance(mod, torch.nn.Conv2d):
            assert mod.out_channels % 8 == 0 and mod.out_channels >= 8


def test_macs_target_and_global_scope() -> None:
    m = torchvision.models.resnet18().eval()
    x = torch.randn(1, 3, 32, 32)
    out = prune_model_(m, x, prune_ratio=None, macs=0.5, scope="global")
    assert 0.45 <= out.macs_after / out.macs_before <= 0.5
    assert m(x).shape == (1, 1000)


def test_a_macs_target_past_a_rounding_step_gets_channels_back() -> None:
    # three 16-channel groups at round_to 8: every ratio under 0.5 keeps all 16, 0.5 halves all three (0.28x MACs)
    m = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(16, 16, 3, padding=1),
                            torch.nn.ReLU(), torch.nn.Conv2d(16, 16, 3, padding=1), torch.nn.ReLU(),
                            torch.nn.Conv2d(16, 10, 1)).eval()
    with torch.no_grad():  # L1 scores: conv1's and conv3's cut halves far below their means, conv2's all equal
        for conv in (m[0], m[4]):
            conv.weight.fill_(0.01)[:8] = 1.0
        m[2].weight.fill_(0.5)
    x = torch.randn(1, 3, 8, 8)
    ref = m(x)
    uniform = prune_model_(copy.deepcopy(m), x, prune_ratio=0.5, round_to=8)
    assert uniform.macs_after / uniform.macs_before == pytest.approx(1448 / 5200)
    out = prune_model_(m, x, macs=0.6, round_to=8)
    # the group whose cut channels score highest against its mean goes back first: conv2 (2600 of 5200 MACs); conv1 or
    # conv3 on top would be 0.76x / 0.74x; widths stay on the 8-channel grid
    assert out.macs_after / out.macs_before == pytest.approx(2600 / 5200)
    assert [m[i].out_channels for i in (0, 2, 4)] == [8, 16, 8]
    assert m(x).shape == ref.shape


def test_protected_channel_refused() -> None:
    m = Residual().eval()
    x = torch.randn(1, 3, 8, 8)
    with pytest.raises(ConfigError, match="model output"):
        prune_(m, x, {"head": [0]})
    with pytest.raises(ConfigError, match="zero channels"):
        prune_(m, x, {"a.0": list(range(12))})


def test_plan_round_trip_and_apply(tmp_path) -> None:
    base = randomize_(Concat())
    x = torch.randn(1, 3, 8, 8)
    m = copy.deepcopy(base)
    out = prune_model_(m, x, prune_ratio=0.5, criterion="l2", source="test:concat")
    path = out.plan.save(tmp_path / "plan.json")
    plan = PrunePlan.load(path)
    assert plan == out.plan and json.loads(path.read_text())["_type"] == "PrunePlan"
    again = copy.deepcopy(base)
    apply_plan(again, plan, x)
    with torch.no_grad():
        torch.testing.assert_close(again(x), m(x))
    with pytest.raises(ConfigError, match="does not match"):
        apply_plan(Residual(), plan, x)


def test_nothing_prunable_warns_and_leaves_model_unchanged() -> None:
    from slimcnn.prune import NothingPrunableWarning

    class OnlyHead(torch.nn.Module):  # every channel reaches the output
        def __init__(self) -> None:
            super().__init__()
            self.head = torch.nn.Conv2d(3, 4, 1)

        def forward(self, x):
            return self.head(x)

    x = torch.randn(1, 3, 8, 8)
    m = OnlyHead().eval()
    sd = {k: v.clone() for k, v in m.state_dict().items()}
    with pytest.warns(NothingPrunableWarning, match="nothing to prune: all 1 channel groups are protected") as rec:
        out = prune_model_(m, x, prune_ratio=0.5)
    assert rec[0].filename == __file__  # stacklevel points at the caller
    assert out.prunable_groups == 0 and out.removal == {} and out.plan.layers == {}
    assert out.macs_after == out.macs_before
    assert all(torch.equal(v, m.state_dict()[k]) for k, v in sd.items())
    # every prunable group excluded: same, for a MACs target too (no BudgetError)
    r = randomize_(Residual())
    with pytest.warns(NothingPrunableWarning, match="outside --exclude"):
        out = prune_model_(r, x, macs=0.5, exclude=["*"])
    assert out.prunable_groups == 0
    with pytest.raises(ConfigError, match="--ratio"):
        prune_model_(OnlyHead(), x, prune_ratio=1.5)
    out = prune_model_(randomize_(Residual()), x, prune_ratio=0.5)
    assert out.prunable_groups > 0
