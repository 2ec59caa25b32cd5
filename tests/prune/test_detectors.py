"""torchvision detectors prune: the check compares the heads before box selection, not the post-NMS
detections (whose count follows the weights); the pruned heads equal the zeroed original."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from torch import Tensor, nn
from torch.utils._pytree import tree_flatten

from slimcnn.errors import UnsupportedLayerError
from slimcnn.graph import trace, zeroed_forward
from slimcnn.prune import prune_, prune_model_
from slimcnn.prune._verify import check_points

FAST = ["fasterrcnn_resnet50_fpn", "retinanet_resnet50_fpn_v2"]
SLOW = ["fasterrcnn_resnet50_fpn_v2", "maskrcnn_resnet50_fpn", "maskrcnn_resnet50_fpn_v2",
        "keypointrcnn_resnet50_fpn", "retinanet_resnet50_fpn", "fcos_resnet50_fpn"]


def _capture(model: nn.Module, names: list[str], inputs: bool = False) -> tuple[dict[str, list[Tensor]], list[Any]]:
    rec: dict[str, list[Tensor]] = {}
    mods = dict(model.named_modules())

    def hook(name: str) -> Any:
        def fn(m: nn.Module, i: Any, o: Any = None) -> None:
            val = i if inputs else o
            rec.setdefault(name, [t.detach().clone() for t in tree_flatten(val)[0] if isinstance(t, Tensor)])
        return fn

    reg = (lambda m, f: m.register_forward_pre_hook(f)) if inputs else (lambda m, f: m.register_forward_hook(f))
    return rec, [reg(mods[n], hook(n)) for n in names if n in mods]


def _check(name: str) -> None:
    from torchvision.models import detection

    torch.manual_seed(0)
    kw: dict[str, Any] = {"weights": None, "weights_backbone": None, "min_size": 128, "max_size": 128}
    model = getattr(detection, name)(**kw).eval()
    x = [torch.rand(3, 128, 128)]
    points = check_points(model)
    assert points and all("head" in p or "predictor" in p for p in points)
    graph = trace(model, x)
    pruned = copy.deepcopy(model)
    out = prune_model_(pruned, x, criterion="l1", prune_ratio=0.3, graph=graph)
    assert out.macs_after < 0.9 * out.macs_before
    assert sum(p.numel() for p in pruned.parameters()) < 0.8 * sum(p.numel() for p in model.parameters())
    roi = [p for p in points if p.startswith("roi_heads.")]
    roi_in = [p.replace("predictor", "head") for p in roi]
    ref, hs = _capture(model, points)
    feats, hs2 = _capture(model, roi_in, inputs=True)  # pooled RoI features entering each RoI head
    zeroed_forward(model, x, graph, out.removal)
    for h in hs + hs2:
        h.remove()
    got, hs = _capture(pruned, points)
    with torch.no_grad():
        pruned(x)
        for p, head in zip(roi, roi_in, strict=True):
            # the boxes a RoI head sees follow the weights (NMS near-ties), so feed it the reference's features
            if head in feats and feats[head][0].numel():
                mods = dict(pruned.named_modules())
                got[p] = [t for t in tree_flatten(mods[p](mods[head](feats[head][0])))[0] if isinstance(t, Tensor)]
    for h in hs:
        h.remove()
    compared = 0
    for p in points:
        if p not in ref or p not in got:
            continue
        a, b = ref[p], got[p]
        assert [t.shape[1:] for t in a] == [t.shape[1:] for t in b], p
        if any(t.numel() == 0 for t in a):
            continue  # e.g. a mask head on no detection (random weights)
        for u, v in zip(a, b, strict=True):
            torch.testing.assert_close(v, u, rtol=1e-4, atol=1e-4)
        compared += 1
    assert compared >= (2 if roi else 1)


@pytest.mark.parametrize("name", FAST)
def test_detector_prunes_and_heads_equal_zeroed(name: str) -> None:
    _check(name)


@pytest.mark.slow
@pytest.mark.parametrize("name", SLOW)
def test_detector_prunes_and_heads_equal_zeroed_slow(name: str) -> None:
    _check(name)


def test_a_detector_whose_head_steers_on_a_pruned_width_is_refused_by_its_values() -> None:
    """The head's outputs keep their shapes, so only the value check at the dense head can see it."""
    from torchvision.models import detection

    torch.manual_seed(0)
    model = detection.retinanet_resnet50_fpn_v2(weights=None, weights_backbone=None, min_size=128, max_size=128)
    model.eval()
    x = [torch.rand(3, 128, 128)]
    inner = model.backbone.body.layer1[0].conv1
    width = inner.out_channels
    plain = model.head.forward

    def steered(features: list[Tensor]) -> dict[str, Tensor]:
        out = plain(features)
        return out if inner.out_channels == width else {k: 2 * v for k, v in out.items()}

    model.head.forward = steered
    graph = trace(model, x)
    with pytest.raises(UnsupportedLayerError, match="computes something else .*'head' output"):
        prune_(model, x, {"backbone.body.layer1.0.conv1": [0, 1, 2]}, graph=graph)
    assert inner.out_channels == width  # left unchanged
    model.head.forward = plain
    prune_(model, x, {"backbone.body.layer1.0.conv1": [0, 1, 2]}, graph=graph)
    assert inner.out_channels == width - 3
