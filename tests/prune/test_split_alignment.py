"""``round_to`` with split convs: every part a split conv makes or reads keeps a multiple of the block.

MixNet-style blocks split a group's channels among differently shaped convs; a width off the channel block costs
a whole block on ONNX Runtime, so each part is aligned, not only the group's total (the latency path prunes with
``round_to`` = the table's block)."""

from __future__ import annotations

import copy

import torch
from graph._nets import MixedSplit, randomize_
from torch import nn

from slimcnn.graph import trace, zeroed_forward
from slimcnn.prune import prune_model_

X = (2, 3, 8, 8)


def wide_mixed_split() -> MixedSplit:
    """48 channels: depthwise parts of 32 and 16, then 1x1 parts reading 24 and 24 (crossing cuts: 24 / 8 / 16)."""
    return MixedSplit(splits=(32, 16), pw_splits=(24, 24), pw_out=16)


def _pruned(model: nn.Module, **amount) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    x = torch.randn(X, generator=torch.Generator().manual_seed(1))
    graph = trace(model, x)
    pruned = copy.deepcopy(model)
    out = prune_model_(pruned, x, criterion="l1", graph=graph, **amount)
    with torch.no_grad():
        return pruned, pruned(x), zeroed_forward(model, x, graph, out.removal)


def test_keep_counts_align_every_split_part() -> None:
    model = randomize_(wide_mixed_split())
    plain, _, _ = _pruned(model, keep={"expand.0": 24})
    assert any(n % 8 for n in plain.splits + plain.pw_splits)  # by importance alone the parts land off the block
    pruned, y, ref = _pruned(model, keep={"expand.0": 24}, round_to=8)
    assert sum(pruned.splits) == 24
    assert all(n % 8 == 0 for n in pruned.splits + pruned.pw_splits), (pruned.splits, pruned.pw_splits)
    assert [c.in_channels for c in pruned.dw] == pruned.splits and [c.in_channels for c in pruned.pw] == pruned.pw_splits
    torch.testing.assert_close(y, ref, rtol=1e-4, atol=1e-5)


def test_a_ratio_with_round_to_aligns_every_split_part() -> None:
    model = randomize_(wide_mixed_split())
    pruned, y, ref = _pruned(model, prune_ratio=0.6, round_to=8)
    assert sum(pruned.splits) == 24  # 48 * 0.4 = 19.2 kept, rounded up to 24
    assert all(n % 8 == 0 for n in pruned.splits + pruned.pw_splits), (pruned.splits, pruned.pw_splits)
    torch.testing.assert_close(y, ref, rtol=1e-4, atol=1e-5)


def test_parts_no_wider_than_the_block_are_pruned_by_importance_alone() -> None:
    model = randomize_(MixedSplit())  # 12 channels in parts 7 / 5, read as 6 / 6: no part reaches 8
    pruned, y, ref = _pruned(model, keep={"expand.0": 5}, round_to=8)
    assert sum(pruned.splits) == 5 and sum(pruned.pw_splits) == 5  # nothing to align: the count asked
    torch.testing.assert_close(y, ref, rtol=1e-4, atol=1e-5)


def test_each_part_keeps_at_least_a_block() -> None:
    model = randomize_(wide_mixed_split())
    pruned, y, ref = _pruned(model, keep={"expand.0": 8}, round_to=8)
    assert pruned.splits == [16, 8] and pruned.pw_splits == [8, 16]  # parts of 24, 8 and 16 keep 8 each
    torch.testing.assert_close(y, ref, rtol=1e-4, atol=1e-5)
