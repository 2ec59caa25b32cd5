"""Pruned model == original with the same channels zeroed, for every coupling pattern."""

from __future__ import annotations

import copy

import pytest
import torch

from slimcnn.graph import trace, zeroed_forward
from slimcnn.prune import prune_, select_removal

from ._nets import INPUT_SHAPES, PATTERNS, randomize_


def _random_removal(graph, ratio: float = 0.5, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    scores = {g.id: torch.rand(g.size, generator=gen) for g in graph.groups() if g.prunable}
    return select_removal(graph, scores, ratio)


@pytest.mark.parametrize("name", sorted(PATTERNS))
def test_pruned_equals_zeroed(name: str) -> None:
    model = randomize_(PATTERNS[name]())
    x = torch.randn(INPUT_SHAPES.get(name, (2, 1 if "pixel" in name else 3, 16, 16)))
    graph = trace(model, x)
    removal = _random_removal(graph)
    assert removal, f"{name}: nothing prunable\n{graph.summary()}"
    ref = zeroed_forward(model, x, graph, removal)
    with torch.no_grad():
        orig = model(x)
    pruned = copy.deepcopy(model)
    prune_(pruned, x, removal, graph=graph)
    with torch.no_grad():
        out = pruned(x)
    assert out.shape == orig.shape
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(ref, orig), "zeroing must change the output (test would be vacuous)"
    n0 = sum(p.numel() for p in model.parameters())
    assert sum(p.numel() for p in pruned.parameters()) < n0


def test_linear_reshaped_into_conv_channels_prunes_in_blocks() -> None:
    from ._nets import LinearToConv

    model = randomize_(LinearToConv())
    z = torch.randn(2, 10)
    graph = trace(model, z)
    gid = graph.producer_group("fc")
    fc = next(m for m in graph.group(gid).members if m.layer == "fc")
    assert fc.index == tuple(c // 16 for c in range(8 * 16))  # channel c = features 16c .. 16c+15
    pruned = copy.deepcopy(model)
    prune_(pruned, z, {gid: [1, 6]}, graph=graph)
    assert pruned.fc.out_features == 6 * 16 and pruned.bn.num_features == 6 and pruned.up.in_channels == 6
    keep = [c for c in range(128) if c // 16 not in (1, 6)]
    torch.testing.assert_close(pruned.fc.weight, model.fc.weight[keep])
    with torch.no_grad():
        torch.testing.assert_close(pruned(z), zeroed_forward(model, z, graph, {gid: [1, 6]}), rtol=1e-4, atol=1e-5)
