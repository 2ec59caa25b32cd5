"""timm block patterns the channel graph prunes: channels split by sizes kept on a module (MixNet), sliced to a
whole-width prefix (GhostNet), mixed across a stacked branch axis (SK-ResNet, ResNeSt), and a residual group whose
producers make nested parts of it (a group width asked of the widest one)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from slimcnn.errors import UnsupportedLayerError
from slimcnn.graph import rollback_on_error, slice_layers_, trace, zeroed_forward
from slimcnn.prune import prune_

from ._nets import GhostPrefix, MixedSplit, SelectiveKernel, SplitAttention, cbr, randomize_

X = (2, 3, 8, 8)


def test_split_sizes_are_rewritten_to_the_kept_counts() -> None:
    model = randomize_(MixedSplit())
    x = torch.randn(X)
    graph = trace(model, x)
    assert graph.check_reason is not None  # a check run judges the rewrite
    gid = graph.producer_group("expand.0")
    assert graph.group(gid).prunable
    removal = {"expand.0": [0, 1, 8]}  # two channels of the first part, one of the second
    ref = zeroed_forward(model, x, graph, removal)
    pruned = copy.deepcopy(model)
    prune_(pruned, x, removal, graph=graph)
    assert pruned.splits == [5, 4] and pruned.pw_splits == [4, 5]  # pw_splits counts channels 0-5 / 6-11
    assert [c.in_channels for c in pruned.dw] == [5, 4] and [c.in_channels for c in pruned.pw] == [4, 5]
    assert model.splits == [7, 5]  # the original's lists are untouched
    with torch.no_grad():
        torch.testing.assert_close(pruned(x), ref, rtol=1e-4, atol=1e-5)


def test_a_rolled_back_pruning_restores_the_sizes() -> None:
    model = randomize_(MixedSplit())
    x = torch.randn(X)
    graph = trace(model, x)
    sizes = model.splits
    with pytest.raises(RuntimeError, match="after the surgery"), rollback_on_error(model):
        slice_layers_(model, graph, graph.removed_roots({"expand.0": [0, 8]}))
        assert model.splits == [6, 4]
        raise RuntimeError("after the surgery")
    assert model.splits is sizes and model.splits == [7, 5]


def test_sizes_changed_since_the_trace_are_refused() -> None:
    model = randomize_(MixedSplit())
    x = torch.randn(X)
    graph = trace(model, x)
    model.splits = [6, 6]
    with pytest.raises(UnsupportedLayerError, match=r"'\.splits' changed since the trace"):
        slice_layers_(model, graph, graph.removed_roots({"expand.0": [0]}))


class LiteralSplit(nn.Module):
    """Split sizes written in the forward: nothing to rewrite, so the channels they count stay."""

    def __init__(self) -> None:
        super().__init__()
        self.expand = cbr(3, 12, 1)
        self.dw = nn.ModuleList([nn.Conv2d(7, 7, 3, padding=1, groups=7), nn.Conv2d(5, 5, 3, padding=1, groups=5)])
        self.head = nn.Conv2d(12, 5, 1)

    def forward(self, x: Tensor) -> Tensor:
        parts = torch.split(self.expand(x), [7, 5], 1)
        return self.head(torch.cat([c(p) for c, p in zip(self.dw, parts, strict=True)], 1))


class PartialPrefix(GhostPrefix):
    """A prefix slice that drops channels (``out_chs`` below the concatenation's width) takes fixed positions."""

    def __init__(self) -> None:
        super().__init__()
        self.out_chs = 10
        self.head = nn.Conv2d(10, 5, 1)


@pytest.mark.parametrize(("net", "op"), [(LiteralSplit, "split"), (PartialPrefix, "getitem")])
def test_fixed_sizes_keep_their_channels(net: type[nn.Module], op: str) -> None:
    graph = trace(net(), torch.randn(X))
    group = graph.group(graph.producer_group("primary.0" if net is PartialPrefix else "expand.0"))
    assert not group.prunable
    assert group.reason == f"'{op}' picks fixed positions along a channel axis"


def test_a_whole_prefix_slice_prunes() -> None:
    model = randomize_(GhostPrefix())
    x = torch.randn(X)
    graph = trace(model, x)
    removal = {"primary.0": [1, 4]}
    pruned = copy.deepcopy(model)
    prune_(pruned, x, removal, graph=graph)
    assert pruned.head.in_channels == 8 and pruned.out_chs == 12  # [:, :12] of 8 channels takes all 8
    with torch.no_grad():
        torch.testing.assert_close(pruned(x), zeroed_forward(model, x, graph, removal), rtol=1e-4, atol=1e-5)


class OneListTwoSplits(nn.Module):
    """One list of sizes splits two producers' outputs into different convs: only the list couples them."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = cbr(3, 12, 1), cbr(3, 12, 1)
        self.splits = [7, 5]
        self.dw_a = nn.ModuleList([nn.Conv2d(7, 7, 3, padding=1, groups=7), nn.Conv2d(5, 5, 3, padding=1, groups=5)])
        self.dw_b = copy.deepcopy(self.dw_a)
        self.head = nn.Conv2d(24, 5, 1)

    def forward(self, x: Tensor) -> Tensor:
        ya = [c(p) for c, p in zip(self.dw_a, torch.split(self.a(x), self.splits, 1), strict=True)]
        yb = [c(p) for c, p in zip(self.dw_b, torch.split(self.b(x), self.splits, 1), strict=True)]
        return self.head(F.relu(torch.cat(ya + yb, 1)))


def test_a_list_used_twice_ties_the_channels_it_counts() -> None:
    model = randomize_(OneListTwoSplits())
    x = torch.randn(X)
    graph = trace(model, x)
    assert graph.producer_group("a.0") == graph.producer_group("b.0")
    removal = {"a.0": [0, 8]}  # removes b's channels 0 and 8 too
    pruned = copy.deepcopy(model)
    prune_(pruned, x, removal, graph=graph)
    assert pruned.splits == [6, 4] and pruned.b[0].out_channels == 10
    with torch.no_grad():
        torch.testing.assert_close(pruned(x), zeroed_forward(model, x, graph, removal), rtol=1e-4, atol=1e-5)


class ChannelPool(nn.Module):
    """CBAM-style: a mean and a softmax across the channel axis itself mix every channel: they stay."""

    def __init__(self, op: str) -> None:
        super().__init__()
        self.op = op
        self.a = cbr(3, 8, 1)
        self.head = nn.Conv2d(8, 5, 1)

    def forward(self, x: Tensor) -> Tensor:
        y = self.a(x)
        gate = y.mean(1, keepdim=True) if self.op == "mean" else torch.softmax(y, dim=1)
        return self.head(y * torch.sigmoid(gate))


@pytest.mark.parametrize(("op", "reason"), [("mean", "'mean' reduces across channels"),
                                            ("softmax", "'softmax' mixes channels")])
def test_mixing_across_the_channel_axis_keeps_the_channels(op: str, reason: str) -> None:
    graph = trace(ChannelPool(op), torch.randn(X))
    group = graph.group(graph.producer_group("a.0"))
    assert not group.prunable and group.reason == reason


@pytest.mark.parametrize("net", [SelectiveKernel, SplitAttention])
def test_mixing_across_a_branch_axis_ties_each_channel_across_the_branches(net: type[nn.Module]) -> None:
    model = randomize_(net())
    x = torch.randn(X)
    graph = trace(model, x)
    producer = "paths.0.0" if net is SelectiveKernel else "conv.0"
    group = graph.group(graph.producer_group(producer))
    assert group.prunable
    if net is SelectiveKernel:  # channel c of both paths and of the attention is one unit
        assert graph.producer_group("paths.1.0") == graph.producer_group("select") == group.id
        removal = {"paths.0.0": [2, 7]}
    else:  # channel c of every radix slice
        removal = {"conv.0": [2, 7]}
    pruned = copy.deepcopy(model)
    prune_(pruned, x, removal, graph=graph)
    with torch.no_grad():
        torch.testing.assert_close(pruned(x), zeroed_forward(model, x, graph, removal), rtol=1e-4, atol=1e-5)
    if net is SplitAttention:  # c = 2 and 7 of both radix slices go: 16 -> 12
        assert pruned.conv[0].out_channels == 12 and pruned.fc2.out_channels == 12


def test_a_group_width_is_asked_of_the_widest_producer_and_nested_asks_must_agree() -> None:
    from slimcnn.errors import ConfigError
    from slimcnn.prune import removal_for_keep
    from slimcnn.prune._latency_table import producer_keep

    from ._nets import MixedResidual

    model = randomize_(MixedResidual())
    x = torch.randn(X)
    graph = trace(model, x)
    g = graph.group(graph.producer_group("stem.0"))
    assert {m.layer for m in g.producers} == {"stem.0", "pw.0", "pw.1"}
    assert producer_keep(g.producers, g.size, 4) == {"stem.0": 4}  # pw.0 / pw.1 make parts of stem's channels
    scores = {g.id: torch.tensor([0.0, 1, 9, 9, 2, 3, 9, 9])}  # stem drops 0, 1 (pw.0's) and 4, 5 (pw.1's)
    removal = removal_for_keep(graph, scores, {"stem.0": 4, "pw.0": 2})  # pw.0 keeps 2: what stem leaves it
    assert removal == {g.id: [0, 1, 4, 5]}
    with pytest.raises(ConfigError, match="conflicts with the coupled layers listed before it"):
        removal_for_keep(graph, scores, {"stem.0": 4, "pw.0": 1})
    removal = removal_for_keep(graph, scores, {"pw.0": 1, "stem.0": 4})  # pw.0 first: stem's rest comes from pw.1
    assert removal == {g.id: [0, 1, 2, 4]}
    pruned = copy.deepcopy(model)
    prune_(pruned, x, removal, graph=graph)
    assert [pruned.stem[0].out_channels, pruned.pw[0].out_channels, pruned.pw[1].out_channels] == [4, 1, 3]
    with torch.no_grad():
        torch.testing.assert_close(pruned(x), zeroed_forward(model, x, graph, removal), rtol=1e-4, atol=1e-5)


class Res2Block(nn.Module):
    """timm Res2Net's hierarchical block: a 1x1 conv split by an int width (fixed), each 3x3 conv adding the previous
    one's output into the next chunk, the last chunk passed through, all concatenated."""

    def __init__(self, width: int = 4, scale: int = 4) -> None:
        super().__init__()
        self.width = width
        self.conv1 = cbr(3, width * scale, 1)
        self.convs = nn.ModuleList([nn.Conv2d(width, width, 3, padding=1) for _ in range(scale - 1)])
        self.conv3 = nn.Conv2d(width * scale, 6, 1)

    def forward(self, x: Tensor) -> Tensor:
        spx = torch.split(self.conv1(x), self.width, 1)
        spo, sp = [], spx[0]
        for i, conv in enumerate(self.convs):
            sp = F.relu(conv(sp if i == 0 else sp + spx[i]))
            spo.append(sp)
        return self.conv3(torch.cat([*spo, spx[-1]], 1))


def test_a_group_width_is_shared_over_the_producers_with_free_channels() -> None:
    from slimcnn.prune import prune_model_
    from slimcnn.prune._latency_table import producer_keep

    model = randomize_(Res2Block())
    x = torch.randn(X)
    graph = trace(model, x)
    g = graph.group(graph.producer_group("convs.0"))
    # convs.0 / convs.1 add into fixed chunks of conv1's output; only convs.2's channels may go
    assert {m.layer for m in g.producers} == {"convs.0", "convs.1", "convs.2"} and len(g.fixed) == 8
    keep = producer_keep(g.producers, g.size, 10, g.fixed_set)
    assert keep == {"convs.2": 2}  # was a share of each (convs.0: 3 of 4, refused as protected)
    pruned = copy.deepcopy(model)
    out = prune_model_(pruned, x, keep=keep, graph=graph)
    assert pruned.convs[2].out_channels == 2 and pruned.conv3.in_channels == 14
    with torch.no_grad():
        torch.testing.assert_close(pruned(x), zeroed_forward(model, x, graph, out.removal), rtol=1e-4, atol=1e-5)
