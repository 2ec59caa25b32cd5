"""Yolo-FastestV2: architecture matches the released state_dict, decode and loss behave."""

from __future__ import annotations

import pytest
import torch

from slimcnn.errors import ConfigError
from slimcnn.models.yolo_fastestv2 import (
    ANCHORS,
    WEIGHTS,
    YoloFastestV2,
    decode,
    load_yolo_fastestv2_weights,
    unflatten,
    yolo_loss,
)
from slimcnn.paths import shared_path


def need_shared(*parts: str):  # type: ignore[no-untyped-def]
    p = shared_path(*parts)
    if p is None:
        pytest.skip(f"needs {'/'.join(parts)} under $SLIMCNN_DATA or ../shared/data (absent here)")
    return p


def test_param_count_and_output_shapes() -> None:
    m = YoloFastestV2().eval()
    assert sum(p.numel() for p in m.parameters()) == 243_095
    assert len(m.state_dict()) == 444
    with torch.no_grad():
        x = torch.rand(2, 3, 352, 352)
        out = m(x)
        o16, o32 = unflatten(out, 352)
    assert out.shape == (2, 95, 22 * 22 + 11 * 11)
    assert o16.shape == (2, 95, 22, 22) and o32.shape == (2, 95, 11, 11)
    for a, b in zip((o16, o32), m.head_maps(x), strict=True):
        torch.testing.assert_close(a, b)
    with pytest.raises(ConfigError, match="input_size"):
        unflatten(out, 320)


def test_num_classes_changes_only_the_class_conv() -> None:
    m = YoloFastestV2(num_classes=1)
    assert m.output_cls_layers.weight.shape == (1, 72, 1, 1)
    with pytest.raises(ConfigError):
        YoloFastestV2(num_classes=0)


def test_released_weights_load_strictly() -> None:
    path = need_shared("weights", *WEIGHTS.split("/"))
    m = YoloFastestV2()
    load_yolo_fastestv2_weights(m, str(path))  # strict: raises on any mismatch
    sd = torch.load(path, map_location="cpu", weights_only=True)
    assert set(sd) == set(m.state_dict())
    m1 = YoloFastestV2(num_classes=1)
    load_yolo_fastestv2_weights(m1, str(path))
    torch.testing.assert_close(m1.backbone.first_conv[0].weight, sd["backbone.first_conv.0.weight"])
    torch.testing.assert_close(m1.output_obj_layers.weight, sd["output_obj_layers.weight"])


def _planted_output(num_classes: int = 3) -> list[torch.Tensor]:
    """Raw maps with one confident anchor: stride 16, cell (y=5, x=7), anchor 1, class 2."""
    c = 15 + num_classes
    o16, o32 = torch.full((1, c, 22, 22), -10.0), torch.full((1, c, 11, 11), -10.0)
    o16[0, 4:8, 5, 7] = 0.0  # anchor 1 reg: sigmoid 0.5 -> centre offset 0.5, size = anchor
    o16[0, 12 + 1, 5, 7] = 10.0  # obj anchor 1
    o16[0, 15 + 2, 5, 7] = 10.0  # class 2
    return [o16, o32]


def test_decode_recovers_a_planted_box() -> None:
    det = decode(_planted_output(), conf_thres=0.5)[0]
    assert det["labels"].tolist() == [2]
    aw, ah = ANCHORS[0][1]
    cx, cy = (0.5 + 7) * 16, (0.5 + 5) * 16
    torch.testing.assert_close(det["boxes"][0], torch.tensor([cx - aw / 2, cy - ah / 2, cx + aw / 2, cy + ah / 2]))
    assert det["scores"][0] > 0.99


def test_loss_is_low_on_matching_output_and_trains() -> None:
    aw, ah = ANCHORS[0][1]
    cx, cy = (0.5 + 7) * 16, (0.5 + 5) * 16
    target = [{"boxes": torch.tensor([[cx - aw / 2, cy - ah / 2, cx + aw / 2, cy + ah / 2]]),
               "labels": torch.tensor([2])}]
    good = yolo_loss(_planted_output(), target)
    bad = yolo_loss([torch.zeros_like(o) for o in _planted_output()], target)
    assert good < bad
    m = YoloFastestV2(num_classes=3)
    x = torch.rand(1, 3, 128, 128)  # stride-16 map 8x8 still holds cell (5, 7)
    opt = torch.optim.Adam(m.parameters(), 3e-3)
    losses = []
    for _ in range(6):
        loss = yolo_loss(m(x), target, input_size=128)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses))) and min(losses[-3:]) < losses[0]
