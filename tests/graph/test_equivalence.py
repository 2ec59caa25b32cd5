"""Pruned model == original with the same channels zeroed, for every coupling pattern."""

from __future__ import annotations

import copy

import pytest
import torch

from slimcnn.graph import trace, zeroed_forward
from slimcnn.prune import prune_, select_removal

from ._nets import PATTERNS, randomize_


def _random_removal(graph, ratio: float = 0.5, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    scores = {g.id: torch.rand(g.size, generator=gen) for g in graph.groups() if g.prunable}
    return select_removal(graph, scores, ratio)


@pytest.mark.parametrize("name", sorted(PATTERNS))
def test_pruned_equals_zeroed(name: str) -> None:
    model = randomize_(PATTERNS[name]())
    x = torch.randn(2, 1 if "pixel" in name else 3, 16, 16)
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
