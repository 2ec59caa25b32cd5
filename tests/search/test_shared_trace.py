"""One trace per model object serves every pruning trial of a sweep (issue 16: cache the trace)."""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from slimcnn.prune import prune_model_
from slimcnn.search.families import PruneFamily, shared_trace


class _Net(nn.Module):
    """A residual add and a chunk: two coupled groups and one plain one."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.a = nn.Conv2d(8, 12, 3, padding=1)
        self.b = nn.Conv2d(12, 8, 3, padding=1)
        self.c = nn.Conv2d(8, 16, 1)
        self.head = nn.Conv2d(8, 5, 1)

    def forward(self, x: Tensor) -> Tensor:
        y = torch.relu(self.stem(x))
        y = y + self.b(torch.relu(self.a(y)))
        p, q = self.c(y).chunk(2, 1)
        return self.head(torch.relu(p) * q + y)


def test_shared_trace_reuses_the_graph_until_structure_or_input_changes() -> None:
    torch.manual_seed(0)
    model, x = _Net().eval(), torch.randn(1, 3, 16, 16)
    g = shared_trace(model, x)
    assert shared_trace(model, x) is g
    assert shared_trace(copy.deepcopy(model), x) is not g  # another object: its own trace
    assert shared_trace(model, x.clone()) is not g  # another example input: traced again
    g2 = shared_trace(model, x)
    prune_model_(model, x, prune_ratio=0.5)  # same object, new widths: the old graph no longer applies
    g3 = shared_trace(model, x)
    assert g3 is not g2
    assert g3.layers["a"].n_out < g2.layers["a"].n_out


def test_prune_family_trials_with_the_shared_graph_equal_fresh_traces() -> None:
    torch.manual_seed(0)
    model, x = _Net().eval(), torch.randn(1, 3, 16, 16)
    fam = PruneFamily(x, criterion="l1")
    knobs = fam.knobs(model, x)
    for k in knobs:
        shared = fam.apply_many(model, {k.name: 0.5})
        fresh = copy.deepcopy(model)
        prune_model_(fresh, x, criterion="l1", prune_ratio={k.name: 0.5})
        assert [p.shape for p in shared.parameters()] == [p.shape for p in fresh.parameters()]
        with torch.no_grad():
            torch.testing.assert_close(shared(x), fresh(x))
    assert shared_trace(model, x) is shared_trace(model, x)
