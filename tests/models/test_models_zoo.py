"""The built-in zoo: every model builds and forwards; sizes and names fit papers and shared weights."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from slimcnn.errors import ConfigError, ModelLoadError
from slimcnn.models import ZOO, list_models, load_model
from slimcnn.paths import shared_path


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _need(*parts: str) -> None:
    if shared_path(*parts) is None:
        pytest.skip(f"needs {'/'.join(parts)} under $SLIMCNN_DATA or ../shared/data (absent here)")


@pytest.fixture
def no_shared_data(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """Point $SLIMCNN_DATA at an empty folder: the zoo must build untrained models."""
    monkeypatch.setenv("SLIMCNN_DATA", str(tmp_path))


def test_list_models_has_the_zoo() -> None:
    names = list_models()
    for n in (
        "srcnn",
        "fsrcnn",
        "espcn",
        "vdsr",
        "resnet20",
        "resnet56",
        "resnet110",
        "vgg16_bn_cifar",
        "alexnet_bvlc",
        "lenet5",
        "tiny_cnn",
        "tiny_sr",
    ):
        assert n in names
    assert list_models("resnet*") == ["resnet110", "resnet20", "resnet32", "resnet44", "resnet56"]


_SLOW_ZOO = {"resnet110"}  # same class as resnet20/56, only deeper


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(n, marks=pytest.mark.slow) if n in _SLOW_ZOO else n
        for n in list_models()
        if n != "alexnet_bvlc"
    ],
)
def test_zoo_model_forwards_on_its_input_shape(name: str) -> None:
    loaded = load_model(f"slimcnn:{name}")
    info = loaded.info
    assert not loaded.model.training
    x = torch.rand(info.input_shape)
    with torch.inference_mode():
        y = loaded.model(x)
    assert torch.isfinite(y).all()
    if info.task == "sr":
        n, c, h, w = info.input_shape
        factor = info.scale if info.sr_input == "lr" else 1
        assert info.scale is not None and info.sr_input in ("lr", "upsampled")
        assert tuple(y.shape) == (n, c, h * factor, w * factor)
    elif info.task == "classification":
        assert tuple(y.shape) == (1, info.num_classes)
        assert info.mean is not None and len(info.mean) == info.input_shape[1]


def test_untrained_zoo_model_says_so(no_shared_data: None, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        loaded = load_model("slimcnn:vdsr")
    assert loaded.info.pretrained is False
    assert any(
        "untrained: no weights found at" in n and "vdsr_x234_state_dict.pth" in n for n in loaded.info.notes
    )
    assert "untrained" in caplog.text


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_sr_scales_change_the_output(scale: int) -> None:
    for name in ("fsrcnn", "espcn", "tiny_sr"):
        m = load_model(f"slimcnn:{name}", scale=scale)
        assert m.info.scale == scale
        assert tuple(m.model(torch.rand(1, 1, 10, 12)).shape) == (1, 1, 10 * scale, 12 * scale)


def test_options_that_do_not_apply_are_refused() -> None:
    with pytest.raises(ConfigError, match="no --scale option"):
        load_model("slimcnn:resnet20", scale=2)
    with pytest.raises(ConfigError, match="no --num-classes option"):
        load_model("slimcnn:vdsr", num_classes=3)


def test_param_counts_are_the_papers() -> None:
    assert _params(load_model("slimcnn:vdsr").model) == 664_704
    assert _params(load_model("slimcnn:fsrcnn").model) == 12_809
    assert _params(load_model("slimcnn:resnet20").model) == 269_722
    assert _params(load_model("slimcnn:resnet56").model) == 853_018
    assert _params(load_model("slimcnn:lenet5").model) == 61_706


def test_resnet_option_a_shortcut_has_no_parameters() -> None:
    m = load_model("slimcnn:resnet20").model
    sc = m.layer2[0].shortcut
    assert _params(sc) == 0
    x = torch.randn(2, 16, 8, 8)
    y = sc(x)
    assert tuple(y.shape) == (2, 32, 4, 4)
    torch.testing.assert_close(y[:, 8:24], x[:, :, ::2, ::2])
    assert y[:, :8].abs().sum() == 0 and y[:, 24:].abs().sum() == 0


def test_resnet_num_classes() -> None:
    m = load_model("slimcnn:resnet32", num_classes=100)
    assert m.info.num_classes == 100
    assert m.model(torch.rand(2, 3, 32, 32)).shape == (2, 100)


def test_vgg16_bn_cifar_matches_chip_baseline() -> None:
    """CHIP reports 14.98 M params and 313.73 M FLOPs (conv+linear, biases included) at 32x32."""
    model = load_model("slimcnn:vgg16_bn_cifar").model
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 13
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    params = sum(_params(m) for m in layers)
    assert round(params / 1e6, 2) == 14.98
    macs = 0
    hooks = []

    def count(mod: nn.Module, _inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal macs
        per_out = mod.weight[0].numel()  # MACs per output element (in/groups * k * k, or in_features)
        macs += out.numel() * (per_out + (1 if mod.bias is not None else 0))

    for m in layers:
        hooks.append(m.register_forward_hook(count))
    with torch.inference_mode():
        model(torch.rand(1, 3, 32, 32))
    for h in hooks:
        h.remove()
    assert abs(macs / 1e6 - 313.73) < 0.05


# Tomè et al., "Deep convolutional neural networks for pedestrian detection", Table I (fp32 MiB).
TOME_TABLE_I = {
    "conv1": 0.13,
    "conv2": 1.17,
    "conv3": 3.38,
    "conv4": 2.53,
    "conv5": 1.69,
    "fc6": 144.02,
    "fc7": 64.02,
}


def test_alexnet_bvlc_layer_sizes_match_tome_table_i() -> None:
    model = load_model("slimcnn:alexnet_bvlc").model
    sizes = {name: _params(getattr(model, name)) * 4 / 2**20 for name in TOME_TABLE_I}
    for name, mib in TOME_TABLE_I.items():
        assert round(sizes[name], 2) == mib, name
    assert round(sum(sizes.values()), 2) == 216.94
    assert model.conv2.groups == 2 and model.conv4.groups == 2 and model.conv5.groups == 2
    assert model.fc8 is None
    with torch.inference_mode():
        assert model(torch.rand(1, 3, 227, 227)).shape == (1, 4096)


def test_alexnet_bvlc_fc8_with_num_classes() -> None:
    loaded = load_model("slimcnn:alexnet_bvlc", num_classes=2)
    names = [n for n, _ in loaded.model.named_children()]
    assert {"conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"} <= set(names)
    assert loaded.info.task == "classification" and loaded.info.num_classes == 2
    with torch.inference_mode():
        assert loaded.model(torch.rand(1, 3, 227, 227)).shape == (1, 2)


def test_vdsr_weights_load_strictly() -> None:
    _need("weights", "vdsr", "vdsr_x234_state_dict.pth")
    loaded = load_model("slimcnn:vdsr", scale=3)
    assert loaded.info.pretrained and loaded.info.weights.endswith("vdsr_x234_state_dict.pth")
    sd = torch.load(loaded.info.weights, map_location="cpu", weights_only=True)
    torch.testing.assert_close(
        loaded.model.residual_layer[17].conv.weight, sd["residual_layer.17.conv.weight"]
    )
    assert set(sd) == set(loaded.model.state_dict())


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_fsrcnn_weights_load_per_scale(scale: int) -> None:
    _need("weights", "fsrcnn", f"fsrcnn_x{scale}.pth")
    loaded = load_model("slimcnn:fsrcnn", scale=scale)
    assert loaded.info.pretrained and loaded.info.weights.endswith(f"fsrcnn_x{scale}.pth")
    assert loaded.model.last_part.stride == (scale, scale)
    assert loaded.model.last_part.output_padding == (scale - 1, scale - 1)
    sd = torch.load(loaded.info.weights, map_location="cpu", weights_only=True)
    assert sum(v.numel() for v in sd.values()) == 12_809
    # a smooth image stays close to its upscaled self: trained weights, not noise
    lr = torch.linspace(0.2, 0.8, 16).view(1, 1, 1, 16).expand(1, 1, 16, 16).contiguous()
    with torch.inference_mode():
        sr = loaded.model(lr)
    assert (sr[..., 8:-8, 8:-8] - 0.5).abs().max() < 0.5


@pytest.mark.parametrize("depth", [20, 56])
def test_cifar_resnet_weights_load_strictly(depth: int) -> None:
    files = {20: "resnet20-12fca82f.th", 56: "resnet56-4bfd9763.th"}
    _need("weights", "cifar10-resnet", files[depth])
    loaded = load_model(f"slimcnn:resnet{depth}")
    assert loaded.info.pretrained and loaded.info.weights.endswith(files[depth])
    ckpt = torch.load(loaded.info.weights, map_location="cpu", weights_only=True)
    sd = {k.removeprefix("module."): v for k, v in ckpt["state_dict"].items()}
    torch.testing.assert_close(loaded.model.linear.weight, sd["linear.weight"])
    torch.testing.assert_close(
        loaded.model.layer3[-1].bn2.running_var, sd[f"layer3.{(depth - 2) // 6 - 1}.bn2.running_var"]
    )


def test_wrong_zoo_weights_name_the_keys() -> None:
    _need("weights", "cifar10-resnet", "resnet20-12fca82f.th")
    path = str(shared_path("weights", "cifar10-resnet", "resnet20-12fca82f.th"))
    with pytest.raises(ModelLoadError, match=r"missing keys 'layer1\.3\.conv1\.weight'"):
        load_model("slimcnn:resnet56", weights=path)


def test_weights_override_and_zoo_entry_metadata(tmp_path) -> None:
    src = load_model("slimcnn:tiny_cnn").model
    with torch.no_grad():
        src.fc.bias.fill_(0.25)
    p = tmp_path / "w.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in src.state_dict().items()}}, p)
    loaded = load_model("slimcnn:tiny_cnn", weights=str(p))
    assert loaded.info.pretrained and loaded.info.weights == str(p)
    assert torch.all(loaded.model.fc.bias == 0.25)
    assert not any(n.startswith("untrained") for n in loaded.info.notes)
    for name in ZOO:
        entry = ZOO.get(name)
        assert entry.description and entry.info.input_shape[0] == 1


def test_a_file_made_from_an_untrained_model_says_so_without_the_sources_advice(tmp_path) -> None:
    from slimcnn.models import save_model

    untrained = load_model("slimcnn:tiny_cnn")
    assert any(n.startswith("untrained") and "--weights" in n for n in untrained.info.notes)
    save_model(untrained, tmp_path / "a" / "model.pt")
    loaded = load_model(f"file:{tmp_path / 'a' / 'model.pt'}")
    (note,) = [n for n in loaded.info.notes if n.startswith("untrained")]
    assert note.startswith("untrained: model.pt was made from an untrained model (") and "--weights" not in note
    save_model(loaded, tmp_path / "b" / "model.pt")  # a file of a file says it once, not nested
    (again,) = [n for n in load_model(f"file:{tmp_path / 'b' / 'model.pt'}").info.notes if n.startswith("untrained")]
    assert again == note
