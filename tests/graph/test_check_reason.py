"""When the trace proves the pruned shapes, pruning skips its check run; everything else still gets one (issue 16)."""

from __future__ import annotations

import copy
import warnings
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from slimcnn.errors import UnsupportedLayerError
from slimcnn.graph import ChannelRule, register_channel_rule, trace, zeroed_forward
from slimcnn.prune import prune_, prune_model_

from ._nets import Concat, Residual, cbr, randomize_


class Counted(nn.Module):
    """Wraps a model and counts its forward calls (the check run is one) in a list: a refused pruning puts every
    module's attributes back, a plain int counter too."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.runs: list[int] = []

    @property
    def calls(self) -> int:
        return len(self.runs)

    def forward(self, x: Tensor) -> Tensor:
        self.runs.append(1)
        return self.inner(x)


def _calls_of_pruning(model: nn.Module) -> tuple[str | None, int]:
    m = Counted(randomize_(model))
    x = torch.randn(2, 3, 8, 8)
    graph = trace(m, x)
    before = m.calls
    prune_model_(m, x, criterion="l1", prune_ratio=0.5, graph=graph)
    return graph.check_reason, m.calls - before


@pytest.mark.parametrize("net", [Residual, Concat])
def test_a_proven_trace_prunes_without_a_check_run(net: type[nn.Module]) -> None:
    reason, runs = _calls_of_pruning(net())
    assert reason is None
    assert runs == 0


class BranchOnWidth(nn.Module):
    """Takes another path once ``a`` is pruned: only a check run can see it."""

    def __init__(self) -> None:
        super().__init__()
        self.a = cbr(3, 8)
        self.head = nn.Conv2d(8, 4, 1)
        self.wide = nn.Conv2d(8, 4, 1)

    def forward(self, x: Tensor) -> Tensor:
        y = self.a(x)
        if self.a[0].out_channels == 8:
            return self.head(y)
        return torch.cat([self.head(y), self.head(y)], 2)  # a taller output: a changed shape


class _Small(nn.Module):
    """conv-bn-relu ``a`` then a 1x1 ``head``; each case below changes only the forward between them."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.head = cbr(3, 8), nn.Conv2d(8, 4, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.a(x))


class ReadsShape(_Small):
    def forward(self, x: Tensor) -> Tensor:
        y = self.a(x)
        return self.head(y) * (y.shape[1] / 8)


class Squeezes(_Small):
    """``squeeze()`` drops every size-1 axis: a channel axis pruned to width 1 would go too."""

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.a(x).unsqueeze(0).squeeze(0))


class WeightOutside(_Small):
    """Uses a layer's weight outside the layer (``self.a[1].weight``): its shape changes with pruning."""

    def forward(self, x: Tensor) -> Tensor:
        y = self.a(x)
        return self.head(y) + self.a[1].weight.sum()


class ValueBranch(_Small):
    def forward(self, x: Tensor) -> Tensor:
        z = self.head(self.a(x))
        return z if bool(z.mean() > -1e9) else z.mean(2)  # z's values follow the pruning of a


class CatAlongSpace(nn.Module):
    """Joins two differently pruned tensors along height: their channel counts must agree."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.head = cbr(3, 8), cbr(3, 8), nn.Conv2d(8, 4, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(torch.cat([self.a(x), self.b(x)], 2))


class Scripted(_Small):
    """A TorchScript block: its ops are invisible to the trace."""

    def __init__(self) -> None:
        super().__init__()
        with warnings.catch_warnings():  # torch.jit.script is deprecated, and still what users have
            warnings.simplefilter("ignore", FutureWarning)
            self.act = torch.jit.script(nn.Hardswish())

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.act(self.a(x)))


class Hooked(_Small):
    def __init__(self) -> None:
        super().__init__()
        self.a[0].register_forward_hook(lambda m, i, o: o * 1.0)


@pytest.mark.parametrize(("net", "why"), [
    (BranchOnWidth, "a.0.out_channels"),
    (ReadsShape, "reads 'shape'"),
    (Squeezes, "'squeeze'"),
    (WeightOutside, "'a.1.weight' outside a layer"),
    (ValueBranch, "reads 'bool' of a computed tensor"),
    (CatAlongSpace, "'cat'"),
    (Scripted, "did not see made"),
    (Hooked, "forward hooks"),
])
def test_what_the_trace_cannot_prove_gets_a_check_run(net: type[nn.Module], why: str) -> None:
    m = randomize_(net())
    x = torch.randn(2, 3, 8, 8)
    reason = trace(m, x).check_reason
    assert reason is not None and why in reason
    counted = Counted(copy.deepcopy(m))
    graph = trace(counted, x)
    before = counted.calls
    try:
        prune_model_(counted, x, criterion="l1", prune_ratio=0.5, graph=graph)
    except UnsupportedLayerError:
        pass  # refused by the check run: what it is for
    assert counted.calls > before


def test_the_width_watch_catches_a_branch_the_labels_do_not_show() -> None:
    """Without the check run the pruned BranchOnWidth would return a taller output; with it, pruning refuses."""
    m = randomize_(BranchOnWidth())
    x = torch.randn(2, 3, 8, 8)
    with pytest.raises(UnsupportedLayerError, match="changed|fails"):
        prune_(m, x, {"a.0": [0, 1, 2]})
    assert m.a[0].out_channels == 8 and type(m.a[0].out_channels) is int  # unchanged, the plain int is back


class SameShapeBranch(nn.Module):
    """Doubles its features once ``a`` is pruned, and every shape stays: only comparing values can see it."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.head = cbr(3, 8), nn.Conv2d(8, 4, 1)

    def forward(self, x: Tensor) -> Tensor:
        y = self.a(x)
        if self.a[0].out_channels != 8:
            y = 2 * y
        return self.head(y)


class Noisy(_Small):
    """Draws noise in eval mode (of a size read from channel data, so it gets a check run): the check compares the
    pruned and the zeroed forward on the same draws."""

    def forward(self, x: Tensor) -> Tensor:
        z = self.head(self.a(x))
        return z + 0.5 * torch.randn(z.shape)


def test_a_branch_that_keeps_every_shape_is_refused_by_its_values() -> None:
    m = randomize_(SameShapeBranch())
    x = torch.randn(2, 3, 8, 8)
    state = {k: v.clone() for k, v in m.state_dict().items()}
    with pytest.raises(UnsupportedLayerError, match="computes something else.*the trace noted: .*out_channels"):
        prune_(m, x, {"a.0": [0, 1, 2]})
    assert m.a[0].out_channels == 8 and all(torch.equal(v, state[k]) for k, v in m.state_dict().items())
    plain = randomize_(_Small())
    plain.load_state_dict(state)
    prune_(plain, x, {"a.0": [0, 1, 2]})  # the same pruning of the same weights without the branch passes
    assert plain.a[0].out_channels == 5


def test_a_forward_that_draws_noise_passes_the_value_check() -> None:
    m = randomize_(Noisy())
    x = torch.randn(2, 3, 8, 8)
    graph = trace(m, x)
    assert graph.check_reason is not None and "shape" in graph.check_reason
    prune_(m, x, {"a.0": [0, 1, 2]}, graph=graph)
    assert m.a[0].out_channels == 5


class WritesItsInput(_Small):
    """Scales its input in place and reads a size (so it gets a check run): each run must get the same input."""

    def forward(self, x: Tensor) -> Tensor:
        x.mul_(0.5)
        y = self.a(x)
        return self.head(y.view(y.shape))


def test_a_forward_that_writes_into_its_input_passes_the_value_check() -> None:
    m = randomize_(WritesItsInput())
    x = torch.randn(2, 3, 8, 8)
    graph = trace(m, x)
    assert graph.check_reason is not None
    prune_(m, x, {"a.0": [0, 1, 2]}, graph=graph)
    assert m.a[0].out_channels == 5


def test_without_a_zeroed_reference_the_shapes_are_still_checked(monkeypatch, caplog) -> None:
    import slimcnn.prune._verify as verify

    def fails(*args, **kwargs):
        raise RuntimeError("the masked run failed\nmore")

    monkeypatch.setattr(verify, "zeroed_forward", fails)
    ok = randomize_(WritesItsInput())
    prune_(ok, torch.randn(2, 3, 8, 8), {"a.0": [0, 1, 2]})
    assert ok.a[0].out_channels == 5
    assert "no value check of the pruned model: the zeroed original did not run (the masked run failed)" in caplog.text
    with pytest.raises(UnsupportedLayerError, match="changed"):  # the shape check still refuses
        prune_(randomize_(BranchOnWidth()), torch.randn(2, 3, 8, 8), {"a.0": [0, 1, 2]})


class ScaledConv(nn.Conv2d):
    """A Conv2d subclass with its own per-output-channel tensor (as timm's ``ScaledStdConv2d.gain``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gain = nn.Parameter(torch.rand(self.out_channels, 1, 1, 1) + 0.5)

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight * self.gain, self.bias, self.stride, self.padding)


class WithScaledConv(_Small):
    def __init__(self) -> None:
        super().__init__()
        self.a[0] = ScaledConv(3, 8, 3, padding=1)


def test_a_subclass_of_a_builtin_layer_gets_a_check_run_and_its_own_per_channel_tensors_sliced() -> None:
    m = randomize_(WithScaledConv())
    x = torch.randn(2, 3, 8, 8)
    graph = trace(m, x)
    assert graph.check_reason is not None and "'a.0' is a ScaledConv, a subclass" in graph.check_reason
    ref = zeroed_forward(m, x, graph, {"a.0": [0, 1, 2]})
    prune_(m, x, {"a.0": [0, 1, 2]}, graph=graph)
    assert m.a[0].gain.shape == (5, 1, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(m(x), ref, rtol=1e-4, atol=1e-5)


def test_a_weight_standardized_conv_is_refused_by_its_values() -> None:
    """timm's NF-ResNet standardizes each filter over its inputs: pruning inputs changes the other weights."""
    timm = pytest.importorskip("timm", reason="timm is an optional extra")
    m = timm.create_model("nf_resnet26", pretrained=False).eval()
    x = torch.randn(1, 3, 64, 64)
    state = {k: v.clone() for k, v in m.state_dict().items()}
    with pytest.raises(UnsupportedLayerError, match="computes something else.*ScaledStdConv2d, a subclass"):
        prune_model_(m, x, criterion="l1", prune_ratio=0.5)
    assert all(torch.equal(v, state[k]) for k, v in m.state_dict().items())


def test_a_custom_layer_rule_always_gets_a_check_run() -> None:
    class Scale(nn.Module):
        def __init__(self, c: int) -> None:
            super().__init__()
            self.s = nn.Parameter(torch.ones(c))

        def forward(self, x: Tensor) -> Tensor:
            return x * self.s.view(1, -1, 1, 1)

    def slice_scale(m: nn.Module, kept_out: list[int], kept_in: list[int]) -> None:
        m.s = nn.Parameter(m.s.detach()[kept_in].clone())

    register_channel_rule(Scale, ChannelRule(slice=slice_scale))  # a local type: the global registry stays clean

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.s, self.head = cbr(3, 8), Scale(8), nn.Conv2d(8, 4, 1)

        def forward(self, x: Tensor) -> Tensor:
            return self.head(F.relu(self.s(self.a(x))))

    reason = trace(Net(), torch.randn(1, 3, 8, 8)).check_reason
    assert reason is not None and "custom layer type" in reason


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2", "efficientnet_b0"])
def test_torchvision_classifiers_are_proven(name: str) -> None:
    """Their forwards pass channel data only through shape-exact ops: pruning them needs no check run."""
    import torchvision

    model = torchvision.models.get_model(name, weights=None).eval()
    assert trace(model, torch.randn(1, 3, 32, 32)).check_reason is None
