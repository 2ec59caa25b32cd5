"""profile(): hand-computed MACs per layer type, params, bytes, liveness, containers, references."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from slimcnn.errors import ConfigError
from slimcnn.measure import profile, weight_bytes


def _macs(module: nn.Module, *shape: int) -> int:
    return profile(module, torch.randn(*shape)).macs


@pytest.mark.parametrize(
    ("module", "shape", "expected"),
    [
        # out 1x8x8x8 = 512 elements, each 3 in-channels x 3x3
        (nn.Conv2d(3, 8, 3, stride=2, padding=1), (1, 3, 16, 16), 512 * 27),
        # grouped: out 16x10x10, each (8/4) x 3x3
        (nn.Conv2d(8, 16, 3, padding=1, groups=4), (1, 8, 10, 10), 1600 * 18),
        # dilated 3x3 @ d=2 covers 5x5: out 4x6x6, each 4 x 9
        (nn.Conv2d(4, 4, 3, dilation=2), (1, 4, 10, 10), 144 * 36),
        # depthwise: out 6x5x5, each 1 x 9
        (nn.Conv2d(6, 6, 3, groups=6, padding=1), (1, 6, 5, 5), 150 * 9),
        # batch 2, 1-d conv: out 2x3x8, each 2 x 3
        (nn.Conv1d(2, 3, 3), (2, 2, 10), 48 * 6),
        # transposed: in elements (4x5x5=100) x C_out/groups (6) x 3x3
        (nn.ConvTranspose2d(4, 6, 3, stride=2), (1, 4, 5, 5), 100 * 6 * 9),
        (nn.ConvTranspose2d(4, 6, 3, stride=2, groups=2, output_padding=1), (1, 4, 5, 5), 100 * 3 * 9),
        # FSRCNN-style deconvolution x3 with padding: 56x8x8 inputs x 1 x 9x9
        (nn.ConvTranspose2d(56, 1, 9, stride=3, padding=4, output_padding=2), (1, 56, 8, 8), 56 * 64 * 81),
        (nn.Linear(10, 5), (2, 10), 2 * 5 * 10),
        (nn.Linear(10, 5, bias=False), (2, 7, 10), 2 * 7 * 5 * 10),
        (nn.BatchNorm2d(3), (1, 3, 8, 8), 0),
        (nn.Sequential(nn.ReLU(), nn.MaxPool2d(2), nn.AdaptiveAvgPool2d(1)), (1, 3, 8, 8), 0),
    ],
)
def test_hand_computed_macs(module: nn.Module, shape: tuple[int, ...], expected: int) -> None:
    assert _macs(module, *shape) == expected


class _Functional(nn.Module):
    """Functional conv + matmul + bmm inside one non-leaf-free module."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(4, 3, 3, 3))
        self.b = nn.Parameter(torch.randn(4, 5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.conv2d(x, self.w, padding=1)  # 1x4x6x6 out x 27 = 3888
        a = y.flatten(2)  # [1, 4, 36]
        s = torch.bmm(a, a.transpose(1, 2))  # [1,4,4] x 36 = 576
        return s @ self.b  # [1,4,5] x 4 = 80


def test_functional_ops_counted_and_attributed() -> None:
    cost = profile(_Functional(), torch.randn(1, 3, 6, 6))
    assert cost.macs == 3888 + 576 + 80
    assert cost.params == 4 * 27 + 20
    (row,) = cost.layers
    assert row.name == "" and row.macs == cost.macs and row.params == cost.params


def test_shared_weights_counted_once_but_macs_per_call() -> None:
    lin = nn.Linear(4, 4)
    model = nn.Sequential(lin, nn.ReLU(), lin)
    cost = profile(model, torch.randn(3, 4))
    assert cost.params == 20
    assert cost.macs == 2 * 3 * 4 * 4
    assert [r.name for r in cost.layers] == ["0"]  # the same module, one row, both calls
    assert cost.layers[0].macs == cost.macs


def test_weight_bytes_rounds_up_and_bits_validated() -> None:
    assert weight_bytes(13, 4) == 7
    assert weight_bytes(13, 32) == 52
    cost = profile(nn.Linear(3, 3), torch.randn(1, 3), bits=4)  # 12 params
    assert cost.weight_bytes == 6 and cost.layers[0].weight_bytes == 6
    with pytest.raises(ConfigError, match="bits"):
        profile(nn.Linear(3, 3), torch.randn(1, 3), bits=0)


def test_layer_rows_fqn_types_shapes() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(64, 2))
    cost = profile(model, torch.randn(1, 3, 4, 4))
    assert [(r.name, r.type) for r in cost.layers] == [("0", "Conv2d"), ("1", "BatchNorm2d"), ("4", "Linear")]
    conv, bn, fc = cost.layers
    assert conv.output_shape == (1, 4, 4, 4) and conv.activation_bytes == 64 * 4
    assert bn.macs == 0 and bn.params == 8
    assert sum(r.params for r in cost.layers) == cost.params
    assert sum(r.macs for r in cost.layers) == cost.macs


def test_peak_activation_liveness() -> None:
    # input 64 B; conv out 128 B; relu out 128 B while conv out is still alive -> 320 B peak;
    # then conv out is freed and the last conv writes 64 B (64 + 128 + 64 = 256 < 320).
    model = nn.Sequential(nn.Conv2d(1, 2, 1), nn.ReLU(), nn.Conv2d(2, 1, 1))
    cost = profile(model, torch.randn(1, 1, 4, 4))
    assert cost.activation_bytes == 320


def test_inplace_ops_not_double_counted() -> None:
    model = nn.Sequential(nn.Conv2d(1, 2, 1), nn.ReLU(inplace=True), nn.Conv2d(2, 1, 1))
    assert profile(model, torch.randn(1, 1, 4, 4)).activation_bytes == 64 + 128 + 64


class _Multi(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 2, 1)
        self.b = nn.Linear(3, 2)

    def forward(self, images: list[torch.Tensor], *, scale: float = 1.0) -> dict[str, object]:
        x = torch.stack(images)
        return {"map": self.a(x) * scale, "rest": [self.b(x.mean((2, 3))), (x.sum(),)]}


def test_list_and_dict_inputs_and_container_outputs() -> None:
    model = _Multi()
    imgs = [torch.randn(3, 4, 4), torch.randn(3, 4, 4)]
    cost = profile(model, imgs)  # a list is ONE argument
    assert cost.macs == 2 * 2 * 16 * 3 + 2 * 2 * 3
    assert cost.input_shape == (3, 4, 4)
    cost_kw = profile(model, {"images": imgs, "scale": 2.0})  # a dict is keyword arguments
    assert cost_kw.macs == cost.macs


def test_model_mode_restored_and_forward_error() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Dropout())
    model.train()
    profile(model, torch.randn(1, 3, 8, 8))
    assert model.training and model[1].training
    with pytest.raises(ConfigError, match=r"1x1x8x8.*expects 3 input channels"):
        profile(model, torch.randn(1, 1, 8, 8))
    assert model.training


def test_matches_torch_flop_counter() -> None:
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU6(),
        nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=8), nn.Conv2d(8, 16, 1),
        nn.ConvTranspose2d(16, 6, 4, stride=2, padding=1, groups=2), nn.AdaptiveAvgPool2d(2),
        nn.Flatten(), nn.Linear(24, 10),
    )
    x = torch.randn(2, 3, 32, 32)
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        model.eval()(x)
    assert profile(model, x).macs == fc.get_total_flops() // 2


def test_resnet18_acceptance() -> None:
    tv = pytest.importorskip("torchvision")
    cost = profile(tv.models.resnet18(weights=None), torch.randn(1, 3, 224, 224))
    assert cost.params == 11_689_512
    assert abs(cost.macs - 1.82e9) / 1.82e9 < 0.01
    assert cost.weight_bytes == 11_689_512 * 4
    # peak activations: at least the largest layer output (64x112x112 float) plus the input
    assert cost.activation_bytes >= 64 * 112 * 112 * 4 + 3 * 224 * 224 * 4


def _zoo(name: str):  # noqa: ANN202
    models = pytest.importorskip("slimcnn.models")
    if not hasattr(models, "load_model"):
        pytest.skip("slimcnn.models.load_model is not available yet")
    return models.load_model(name).model


def test_cifar_resnet56_macs() -> None:
    cost = profile(_zoo("slimcnn:resnet56"), torch.randn(1, 3, 32, 32))
    assert abs(cost.macs - 125.49e6) / 125.49e6 < 0.005


def test_vdsr_macs() -> None:
    cost = profile(_zoo("slimcnn:vdsr"), torch.randn(1, 1, 41, 41))
    assert abs(cost.macs - 1.117e9) / 1.117e9 < 0.005


@pytest.mark.slow
def test_torchvision_detector_list_input() -> None:
    tv = pytest.importorskip("torchvision")
    model = tv.models.detection.fasterrcnn_mobilenet_v3_large_320_fpn(weights=None, weights_backbone=None)
    cost = profile(model, [torch.rand(3, 160, 160)])
    assert cost.params == sum(p.numel() for p in model.parameters())
    assert cost.macs > 0 and any(r.name.startswith("backbone.body") for r in cost.layers)
    assert model.training  # built in train mode, profiled in eval, restored
    assert cost.input_shape == (3, 160, 160)


@pytest.mark.slow
def test_ultralytics_detection_model() -> None:
    pytest.importorskip("ultralytics")
    model = _zoo("ultralytics:yolov8n.yaml")
    cost = profile(model, torch.randn(1, 3, 320, 320))
    assert cost.params == sum(p.numel() for p in model.parameters())
    # ultralytics reports 8.7 GFLOPs (= 2 x MACs) at 640; a quarter of the pixels at 320
    assert abs(cost.macs - 8.7e9 / 2 / 4) / (8.7e9 / 8) < 0.02
