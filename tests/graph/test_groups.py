"""Structure of the traced groups: couplings, protection, unmappable ops."""

from __future__ import annotations

import pytest
import torch
import torchvision

from slimcnn.graph import trace

from ._nets import ChannelMix, Concat, Grouped, OptionA, PixelShuffleSimple, Residual, Shuffle, SplitC2f


def _group_of(graph, layer):
    return graph.group(graph.producer_group(layer))


def test_residual_couples_producers_of_the_add() -> None:
    g = trace(Residual().eval(), torch.randn(1, 3, 8, 8))
    grp = _group_of(g, "stem.0")
    assert {"stem.0", "b"} <= {m.layer for m in grp.producers}
    assert grp.size == 8 and grp.prunable
    assert not _group_of(g, "head").prunable  # reaches the output
    assert _group_of(g, "head").reason == "reaches a model output"


def test_concat_offsets_and_fixed_input_channels() -> None:
    g = trace(Concat().eval(), torch.randn(1, 3, 8, 8))
    grp = _group_of(g, "a.0")
    assert grp.id == _group_of(g, "b.0").id and grp.size == 16  # concat -> one consumer -> one group
    head_in = next(m for m in _group_of(g, "c.0").members if m.layer == "head" and m.role == "in")
    assert head_in.index[8:] == (-1, -1, -1)  # the raw image channels are never removed


def test_chunk_ties_halves_position_wise() -> None:
    g = trace(SplitC2f().eval(), torch.randn(1, 3, 8, 8))
    grp = _group_of(g, "cv1.0")
    out = next(m for m in grp.members if m.layer == "cv1.0" and m.role == "out")
    assert out.index[:8] == out.index[8:]  # channel j of each half removed together
    assert grp.size == 8


def test_grouped_and_depthwise_tie_whole_groups() -> None:
    g = trace(Grouped().eval(), torch.randn(1, 3, 8, 8))
    grp = _group_of(g, "a.0")  # 16 channels read by a 4-group conv: 4 units of 4 (+ 6 outputs each)
    assert grp.size == 4
    dw = _group_of(g, "dw.0")
    assert dw.id == _group_of(g, "g.0").id == _group_of(g, "dw2").id  # depthwise passes channels through


def test_pixel_shuffle_blocks_of_r2() -> None:
    g = trace(PixelShuffleSimple().eval(), torch.randn(1, 1, 8, 8))
    grp = _group_of(g, "a")
    assert grp.size == 4  # 16 channels / r^2
    assert not _group_of(g, "c").prunable  # pixel shuffle before the output is protected


def test_pixel_shuffle_shortcut_matches_replay(monkeypatch: pytest.MonkeyPatch) -> None:
    """One label per channel takes a shortcut (no replay on a label map); it must build the same groups."""
    from slimcnn.graph import _rules

    def groups() -> list[tuple[int, tuple[object, ...], tuple[object, ...]]]:
        g = trace(PixelShuffleSimple().eval(), torch.randn(1, 1, 8, 8))
        return [(grp.size, grp.members, grp.fixed) for grp in g.groups()]

    fast = groups()
    monkeypatch.setattr(_rules, "_pixel_shuffle", lambda *a: False)
    assert fast == groups()


def test_channel_shuffle_is_mapped() -> None:
    g = trace(Shuffle().eval(), torch.randn(1, 3, 8, 8))
    assert _group_of(g, "stem.0").prunable
    assert all(grp.prunable for grp in g.groups() if "head" not in grp.layers())


def test_unmappable_op_is_named() -> None:
    g = trace(ChannelMix().eval(), torch.randn(1, 3, 8, 8))
    grp = _group_of(g, "a")
    assert not grp.prunable and "softmax" in (grp.reason or "")
    assert _group_of(g, "b.0").prunable


def test_option_a_pad_protects_padded_positions() -> None:
    g = trace(OptionA().eval(), torch.randn(1, 3, 8, 8))
    grp = _group_of(g, "stem.0")
    assert grp.prunable and len(grp.fixed) == 8  # the 8 pad positions of c2's output stay


def test_channel_scatter_decouples_both_sides() -> None:
    from ._nets import Scatter

    g = trace(Scatter().eval(), torch.randn(1, 3, 8, 8))
    stem, block, down = _group_of(g, "stem.0"), _group_of(g, "a.0"), _group_of(g, "c2")
    assert len({stem.id, block.id, down.id}) == 3  # three widths, not one residual stream
    assert all(grp.prunable and not grp.fixed for grp in (stem, block, down))
    assert down.size == 16 and {m.layer for m in down.producers} == {"c2", "down"}


def test_squeezenet_classifier_conv_is_protected() -> None:
    m = torchvision.models.squeezenet1_0().eval()
    g = trace(m, torch.randn(1, 3, 64, 64))
    assert not _group_of(g, "classifier.1").prunable  # the 1000-class conv keeps its width


def test_macs_estimate_matches_profile() -> None:
    from slimcnn.measure import profile

    m = torchvision.models.resnet18().eval()
    x = torch.randn(1, 3, 32, 32)
    assert trace(m, x).estimate_macs() == profile(m, x).macs
