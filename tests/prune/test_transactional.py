"""A refused pruning leaves the caller's model exactly as it was (issue 12, item 4)."""

from __future__ import annotations

import time

import pytest
import torch
import torch.nn.functional as F
from graph._nets import cbr, randomize_
from torch import Tensor, nn

from slimcnn.errors import UnsupportedLayerError
from slimcnn.graph import ModuleSnapshot, rollback_on_error
from slimcnn.prune import prune_, prune_model_


class HardCoded(nn.Module):
    """The forward hard-codes the width of ``b`` (``view(n, 12, h, w)``): tracing works, pruning cannot."""

    def __init__(self) -> None:
        super().__init__()
        self.a = cbr(3, 8)
        self.b = cbr(8, 12)
        self.head = nn.Conv2d(12, 4, 1)

    def forward(self, x: Tensor) -> Tensor:
        y = self.b(self.a(x))
        n, _, h, w = y.shape
        return self.head(F.relu(y.view(n, 12, h, w)))


def _state(m: nn.Module) -> dict[str, Tensor]:
    return {k: v.clone() for k, v in m.state_dict().items()}


def _structure(m: nn.Module) -> list[tuple[str, str]]:
    return [(n, repr(mod)) for n, mod in m.named_modules()]


@pytest.mark.parametrize("how", ["prune_", "prune_model_"])
def test_refused_pruning_leaves_model_untouched(how: str) -> None:
    m = randomize_(HardCoded())
    x = torch.randn(1, 3, 8, 8)
    state, structure = _state(m), _structure(m)
    params = [id(p) for p in m.parameters()]
    with torch.no_grad():
        ref = m(x)
    # the refusal names what the trace saw in the forward's code: where to look
    why = "hard-codes a channel count; the trace noted: the forward reads 'shape'.*left unchanged"
    with pytest.raises(UnsupportedLayerError, match=why):
        if how == "prune_":
            prune_(m, x, {"b.0": [0, 3]})
        else:
            prune_model_(m, x, prune_ratio=0.5)
    after = m.state_dict()
    assert after.keys() == state.keys()
    for k, v in state.items():
        assert after[k].shape == v.shape and torch.equal(after[k], v), k
    assert _structure(m) == structure
    assert [id(p) for p in m.parameters()] == params  # the very same Parameter objects (optimizers keep working)
    assert m.b[0].out_channels == 12 and m.b[1].num_features == 12 and m.head.in_channels == 12
    with torch.no_grad():
        torch.testing.assert_close(m(x), ref, rtol=0, atol=0)


def test_rollback_restores_replaced_and_rebound_tensors() -> None:
    m = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4))
    w = m[0].weight
    with pytest.raises(RuntimeError, match="boom"), rollback_on_error(m):
        m[0].weight = nn.Parameter(torch.zeros(2, 3, 1, 1))
        m[0].out_channels = 2
        m[1].running_mean = torch.zeros(2)
        m[1].weight.data = torch.zeros(2)
        m[1].extra = 1
        raise RuntimeError("boom")
    assert m[0].weight is w and m[0].out_channels == 4 and not hasattr(m[1], "extra")
    assert m[1].running_mean.shape == (4,) and m[1].weight.shape == (4,)


def test_snapshot_is_cheap_on_resnet50() -> None:
    import torchvision

    m = torchvision.models.resnet50()
    t = time.perf_counter()
    ModuleSnapshot(m).restore()
    assert time.perf_counter() - t < 0.5  # ~1-5 ms measured; deepcopy takes ~100x longer
