"""Zoo sweep: every model prunes at --ratio 0.5 and --macs 0.5x; forward works, output shapes are
unchanged, MACs drop, ONNX export runs. A fast subset runs by default; ``-m slow`` sweeps the lists below;
``benchmarks/prune_zoo.py`` runs every torchvision CNN with ``_build`` and these checks (results in
``benchmarks/results/prune_zoo.md``)."""

from __future__ import annotations

import copy
import importlib.util
from typing import Any

import pytest
import torch
import torchvision
from torch.utils._pytree import tree_flatten

from slimcnn.errors import BudgetError
from slimcnn.measure import profile
from slimcnn.models import ZOO
from slimcnn.prune import prune_model_

TV_CLASSIFIERS = [
    "alexnet", "vgg11_bn", "vgg16_bn", "resnet18", "resnet50", "resnext50_32x4d", "wide_resnet50_2",
    "squeezenet1_0", "squeezenet1_1", "densenet121", "googlenet", "inception_v3", "mobilenet_v2",
    "mobilenet_v3_small", "mobilenet_v3_large", "mnasnet0_5", "mnasnet1_0", "shufflenet_v2_x0_5",
    "shufflenet_v2_x1_0", "efficientnet_b0", "efficientnet_b3", "efficientnet_b7", "efficientnet_v2_s",
    "regnet_x_400mf", "regnet_y_400mf", "convnext_tiny",
]
TV_DETECTORS = ["fasterrcnn_mobilenet_v3_large_fpn", "ssdlite320_mobilenet_v3_large", "retinanet_resnet50_fpn",
                "fcos_resnet50_fpn"]
SLIMCNN = sorted(ZOO)  # every zoo model, including ones added later
ULTRA = ["yolov8n.yaml", "yolo11n.yaml"]
TIMM = [  # timm CNNs (and conv-heavy hybrids) of distinct block designs, built with pretrained=False
    "resnet50", "efficientnet_b0", "mobilenetv3_large_100", "mobilenetv4_conv_small", "regnety_008", "convnext_nano",
    "ghostnet_100", "mixnet_s", "rexnet_100", "dla34", "cspresnet50", "cspdarknet53", "res2net50_14w_8s",
    "resnest14d", "skresnet18", "selecsls42b", "dpn68", "tf_efficientnetv2_b0", "lcnet_050", "repvgg_a2",
    "hrnet_w18_small", "xception41", "gernet_s", "fastvit_t8", "efficientvit_b0",
    # added 2026-12-06: ghost v2/v3 and RepGhost, TF-padded MixNet, reparameterisable and NAS-found mobile nets,
    # ResNeXt/SE/ECA/GC attention ResNets, Res2NeXt, TResNet, InceptionNeXt
    "ghostnetv2_100", "ghostnetv3_100", "repghostnet_100", "tf_mixnet_s", "mobileone_s0", "tinynet_a", "fbnetv3_b",
    "hardcorenas_a", "semnasnet_100", "resnext26ts", "seresnext26d_32x4d", "eca_resnet33ts", "gcresnet33ts",
    "res2next50", "tresnet_m", "inception_next_tiny",
]  # NF-ResNets are refused by the check run (weight standardization): tests/graph/test_check_reason.py
TIMM_SIDE = 96
"""timm models run at 96x96 (their pretrained configs say 224: the sweep checks pruning, not accuracy)."""
FAST = {"tv:squeezenet1_0", "slimcnn:espcn",
        "slimcnn:tiny_cnn"}
MACS_FLOOR = {
    # (model, best MACs fraction reachable, why): --macs 0.5x then prunes as far as it can and says so
    "slimcnn:alexnet_bvlc": (0.70, "LocalResponseNorm mixes neighbouring channels: conv1/conv2 stay"),
    # a timm block whose channels the graph ties into whole units (`slimcnn analyze --groups` says which)
    "timm:resnest14d": (0.55, "split attention's conv is grouped by the radix (whole groups only) and the radix "
                              "ties its groups: its input channels stay"),
}


def _build(key: str) -> tuple[torch.nn.Module, Any]:
    kind, name = key.split(":", 1)
    if kind == "tv":
        kw: dict[str, Any] = {"aux_logits": False, "init_weights": False} if name in ("googlenet", "inception_v3") else {}
        size = 80 if name == "inception_v3" else 64
        return getattr(torchvision.models, name)(**kw).eval(), torch.randn(1, 3, size, size)
    if kind == "det":
        from torchvision.models import detection

        kw = {"weights": None, "weights_backbone": None}
        if "ssd" not in name:
            kw.update(min_size=128, max_size=128)
        return getattr(detection, name)(**kw).eval(), [torch.rand(3, 128, 128)]
    from slimcnn.models import load_model

    loaded = load_model(f"{kind}:{name}")
    shape = tuple(loaded.info.input_shape)
    if kind == "ultralytics":
        shape = (1, 3, 128, 128)
    if kind == "timm":
        shape = (1, 3, TIMM_SIDE, TIMM_SIDE)
    return loaded.model.eval(), torch.randn(shape)


def _shapes(out: Any) -> list[tuple[int, ...]]:
    return [tuple(t.shape) for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]


ALL = ([f"tv:{n}" for n in TV_CLASSIFIERS] + [f"det:{n}" for n in TV_DETECTORS]
       + [f"slimcnn:{n}" for n in SLIMCNN] + [f"ultralytics:{n}" for n in ULTRA]
       + [f"timm:{n}" for n in (TIMM if importlib.util.find_spec("timm") else [])])


def _params(keys: list[str], fast: bool) -> list[Any]:
    out = []
    for k in keys:
        for mode in ("ratio", "macs"):
            is_fast = k in FAST and mode == "ratio"
            if is_fast == fast:
                marks: list[Any] = [] if fast else [pytest.mark.slow]
                out.append(pytest.param(k, mode, id=f"{k}-{mode}", marks=marks))
    return out


def macs_target(key: str) -> float:
    """0.5, or the documented floor of a model whose protected channels keep it above that."""
    return MACS_FLOOR.get(key, (0.5, ""))[0]


def test_unreachable_macs_target_raises_unless_best_effort() -> None:
    from slimcnn.models import load_model

    m = load_model("slimcnn:alexnet_bvlc").model.eval()
    x = torch.randn(1, 3, 227, 227)
    with pytest.raises(BudgetError, match="cannot reach 0.5x MACs"):
        prune_model_(copy.deepcopy(m), x, macs=0.5)
    out = prune_model_(m, x, macs=0.5, best_effort=True)
    assert 0.5 < out.macs_after / out.macs_before <= MACS_FLOOR["slimcnn:alexnet_bvlc"][0]


def _check(key: str, mode: str, tmp_path: Any) -> None:
    model, x = _build(key)
    with torch.no_grad():
        before = _shapes(model(x))
    pruned = copy.deepcopy(model)
    kw: dict[str, Any] = {"prune_ratio": 0.5} if mode == "ratio" else {"macs": 0.5, "best_effort": True}
    out = prune_model_(pruned, x, **kw)
    with torch.no_grad():
        after = _shapes(pruned(x))
    if not key.startswith("det:"):  # detections after NMS vary in count with the weights
        assert after == before
    assert out.macs_after < out.macs_before
    if mode == "macs":
        assert out.macs_after <= macs_target(key) * out.macs_before * 1.01
    if not key.startswith("det:"):
        assert profile(pruned, x).macs < profile(model, x).macs
        from slimcnn.measure import export_onnx

        export_onnx(pruned, x, tmp_path / "m.onnx")
        assert (tmp_path / "m.onnx").stat().st_size > 0


@pytest.mark.parametrize(("key", "mode"), _params(ALL, fast=True))
def test_zoo_fast(key: str, mode: str, tmp_path: Any) -> None:
    _check(key, mode, tmp_path)


@pytest.mark.parametrize(("key", "mode"), _params(ALL, fast=False))
def test_zoo_full(key: str, mode: str, tmp_path: Any) -> None:
    _check(key, mode, tmp_path)
