"""Custom layer types made prunable with ``register_channel_rule`` (issue 12, item 4)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from slimcnn.errors import ConfigError, UnknownNameError
from slimcnn.graph import (
    ChannelRule,
    get_channel_rule,
    list_channel_rules,
    register_channel_rule,
    trace,
    zeroed_forward,
)
from slimcnn.prune import prune_, prune_model_

from ._nets import cbr, randomize_


class ChannelScale(nn.Module):
    """Per-channel scale with its own parameter (unknown to slimcnn)."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.rand(c) + 0.5)
        self.shift = nn.Parameter(torch.randn(c) * 0.3)

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale.view(1, -1, 1, 1) + self.shift.view(1, -1, 1, 1)


class MyPointwise(nn.Module):
    """A 1x1 conv with its own weight layout ``[in, out]`` and an einsum forward."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(cin, cout) / cin**0.5)
        self.b = nn.Parameter(torch.randn(cout) * 0.1)

    def forward(self, x: Tensor) -> Tensor:
        return torch.einsum("nchw,co->nohw", x, self.w) + self.b.view(1, -1, 1, 1)


class Net(nn.Module):
    def __init__(self, scale: type[nn.Module], pw: type[nn.Module]) -> None:
        super().__init__()
        self.a = cbr(3, 8)
        self.s = scale(8)
        self.pw = pw(8, 12)
        self.head = nn.Conv2d(12, 4, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(F.silu(self.pw(F.relu(self.s(self.a(x))))))


def _slice_scale(m: nn.Module, kept_out: list[int], kept_in: list[int]) -> None:
    m.scale = nn.Parameter(m.scale.detach()[kept_in].clone())
    m.shift = nn.Parameter(m.shift.detach()[kept_in].clone())


def _slice_pw(m: nn.Module, kept_out: list[int], kept_in: list[int]) -> None:
    m.w = nn.Parameter(m.w.detach()[kept_in][:, kept_out].clone())
    m.b = nn.Parameter(m.b.detach()[kept_out].clone())


def test_custom_layers_protected_before_and_prunable_after_registering() -> None:
    # fresh subclasses so the global registry of other tests is not affected
    Scale = type("Scale", (ChannelScale,), {})
    Pw = type("Pw", (MyPointwise,), {})
    model = randomize_(Net(Scale, Pw))
    x = torch.randn(2, 3, 8, 8)
    g = trace(model, x)
    fixed_a = g.group(g.producer_group("a.0"))
    assert not fixed_a.prunable and "register_channel_rule" in str(fixed_a.reason)
    assert "'s.scale'" in str(fixed_a.reason) or "'s.shift'" in str(fixed_a.reason)
    with pytest.raises(ConfigError, match="register_channel_rule"):
        prune_(copy.deepcopy(model), x, {"a.0": [0]})
    with pytest.raises(UnknownNameError, match="channel rule"):
        get_channel_rule(Scale)

    register_channel_rule(Scale, ChannelRule(slice=_slice_scale))
    register_channel_rule(Pw, ChannelRule(slice=_slice_pw, couples="producer", filters=lambda m: m.w.t()))
    assert get_channel_rule(model.s).slice is _slice_scale
    assert any(n.endswith(".Scale") for n in list_channel_rules())
    with pytest.raises(ConfigError, match="already registered"):
        register_channel_rule(Scale, ChannelRule(slice=_slice_scale))
    with pytest.raises(ConfigError, match="built-in"):
        register_channel_rule(nn.Conv2d, ChannelRule(slice=_slice_scale))

    g = trace(model, x)
    ga, gp = g.group(g.producer_group("a.0")), g.group(g.producer_group("pw"))
    assert ga.prunable and {"a.0", "a.1", "s", "pw"} <= set(ga.layers())
    assert gp.prunable and set(gp.layers()) == {"pw", "head"}
    removal = {ga.id: [1, 5, 6], gp.id: [0, 7, 11]}
    ref = zeroed_forward(model, x, g, removal)
    pruned = copy.deepcopy(model)
    prune_(pruned, x, removal, graph=g)
    assert pruned.s.scale.shape == (5,) and pruned.pw.w.shape == (5, 9) and pruned.head.in_channels == 9
    with torch.no_grad():
        out = pruned(x)
        orig = model(x)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(ref, orig)
    # prune_model_ scores the custom producer through its rule's filters
    again = copy.deepcopy(model)
    res = prune_model_(again, x, criterion="l1", prune_ratio=0.5)
    assert res.prunable_groups == 2 and again.pw.w.shape == (4, 6)


def test_channelwise_rule_that_changes_channel_count_is_blocked() -> None:
    class Bad(nn.Module):
        def forward(self, x: Tensor) -> Tensor:
            return x[:, :4]

    def no_slice(m: nn.Module, ko: list[int], ki: list[int]) -> None:
        pass

    register_channel_rule(Bad, ChannelRule(slice=no_slice))
    model = nn.Sequential(nn.Conv2d(3, 8, 1), Bad(), nn.Conv2d(4, 2, 1)).eval()
    g = trace(model, torch.randn(1, 3, 4, 4))
    grp = g.group(g.producer_group("0"))
    assert not grp.prunable and "declared channel-wise but changes the channel count" in str(grp.reason)


def test_rule_validation() -> None:
    with pytest.raises(ConfigError, match="couples"):
        ChannelRule(slice=_slice_scale, couples="mixed")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="producer"):
        ChannelRule(slice=_slice_scale, groups=lambda m: 2)
    with pytest.raises(ConfigError, match="nn.Module subclass"):
        register_channel_rule(int, ChannelRule(slice=_slice_scale))  # type: ignore[arg-type]
