"""Model sources: prefixes, torchvision/timm/ultralytics/python builders and their errors."""

from __future__ import annotations

import sys
import textwrap

import pytest
import torch
from torch import nn

from slimcnn.errors import ConfigError, ModelLoadError, UnknownNameError
from slimcnn.models import SOURCES, LoadedModel, ModelInfo, ModelSource, load_model, register_model_source


def test_unknown_prefix_lists_every_prefix_with_examples() -> None:
    with pytest.raises(UnknownNameError) as e:
        load_model("nosuch:model")
    msg = str(e.value)
    assert msg.startswith("Unknown model source 'nosuch:model'.")
    for usage in (
        "torchvision:NAME",
        "timm:NAME",
        "ultralytics:FILE",
        "file:PATH",
        "python:pkg.module:factory",
        "slimcnn:NAME",
    ):
        assert usage in msg
    assert "\n" not in msg


def test_missing_prefix_suggests_the_prefixed_name() -> None:
    with pytest.raises(UnknownNameError, match=r"Did you mean slimcnn:resnet56\?"):
        load_model("resnet56")
    with pytest.raises(UnknownNameError, match=r"torchvision:resnet18"):
        load_model("resnet18")


def test_empty_name_after_prefix() -> None:
    with pytest.raises(ConfigError, match="names no model"):
        load_model("torchvision:")


def test_unknown_names_give_close_matches() -> None:
    with pytest.raises(UnknownNameError, match=r"Did you mean \['resnet56'"):
        load_model("slimcnn:resnet57")
    with pytest.raises(
        UnknownNameError, match=r"Unknown torchvision model 'resnet19'.*'resnet18'.*available"
    ):
        load_model("torchvision:resnet19")


def test_torchvision_resnet18() -> None:
    loaded = load_model("torchvision:resnet18")
    assert sum(p.numel() for p in loaded.model.parameters()) == 11_689_512
    assert loaded.info.task == "classification" and loaded.info.input_shape == (1, 3, 224, 224)
    assert loaded.info.mean == (0.485, 0.456, 0.406) and not loaded.info.pretrained
    assert not loaded.model.training


def test_torchvision_num_classes_and_inception_input() -> None:
    loaded = load_model("torchvision:mobilenet_v3_small", num_classes=7)
    assert loaded.model(torch.rand(1, 3, 64, 64)).shape == (1, 7)
    from slimcnn.models.sources import _torchvision_input

    assert _torchvision_input("inception_v3", "classification") == (1, 3, 299, 299)


def test_torchvision_detection_builds_offline() -> None:
    loaded = load_model("torchvision:ssdlite320_mobilenet_v3_large")
    assert loaded.info.task == "detection" and loaded.info.mean is None
    assert loaded.info.input_shape == (1, 3, 320, 320) and loaded.info.num_classes == 91
    assert not loaded.model.training


@pytest.mark.slow
def test_torchvision_detection_forwards() -> None:
    loaded = load_model("torchvision:ssdlite320_mobilenet_v3_large")
    with torch.inference_mode():
        out = loaded.model([torch.rand(3, 320, 320)])
    assert isinstance(out, list) and {"boxes", "scores", "labels"} <= set(out[0])


@pytest.mark.slow
@pytest.mark.parametrize(
    "name", ["fasterrcnn_mobilenet_v3_large_fpn", "retinanet_resnet50_fpn", "fcos_resnet50_fpn"]
)
def test_torchvision_detection_zoo(name: str) -> None:
    loaded = load_model(f"torchvision:{name}", num_classes=3)
    assert loaded.info.task == "detection" and loaded.info.num_classes == 3


def test_timm_source() -> None:
    pytest.importorskip("timm")
    loaded = load_model("timm:resnet18", num_classes=5)
    assert loaded.info.num_classes == 5 and loaded.info.input_shape == (1, 3, 224, 224)
    assert loaded.model(torch.rand(1, 3, 64, 64)).shape == (1, 5)
    with pytest.raises(UnknownNameError, match="Did you mean"):
        load_model("timm:resnet19x")


def test_ultralytics_yaml_builds_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("ultralytics")
    import socket

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("ultralytics tried to reach the network")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    loaded = load_model("ultralytics:yolov8n.yaml", num_classes=3)
    assert type(loaded.model).__name__ == "DetectionModel"
    assert loaded.info.task == "detection" and loaded.info.input_shape == (1, 3, 640, 640)
    assert loaded.info.num_classes == 3 and not loaded.info.pretrained
    with torch.inference_mode():
        y = loaded.model(torch.rand(1, 3, 64, 64))
    assert y[0].shape[1] == 4 + 3


def test_ultralytics_errors() -> None:
    pytest.importorskip("ultralytics")
    with pytest.raises(ModelLoadError, match="not found locally"):
        load_model("ultralytics:nosuch_net.yaml")
    with pytest.raises(ConfigError, match="never downloads"):
        load_model("ultralytics:https://example.com/yolov8n.pt")
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model("ultralytics:/nonexistent/best.pt")
    with pytest.raises(ModelLoadError, match=r"'yolov8n.pt' does not exist; nothing is downloaded.*ultralytics:yolov8n.yaml"):
        load_model("ultralytics:yolov8n.pt")  # a hub name to ultralytics: here the .yaml is the offline way


@pytest.mark.slow
def test_ultralytics_pt_round_trip(tmp_path) -> None:
    pytest.importorskip("ultralytics")
    built = load_model("ultralytics:yolov8n.yaml", num_classes=2).model
    p = tmp_path / "best.pt"
    torch.save({"model": built}, p)
    loaded = load_model(f"ultralytics:{p}")
    assert loaded.info.pretrained and loaded.info.num_classes == 2
    torch.testing.assert_close(
        loaded.model.state_dict()["model.0.conv.weight"], built.state_dict()["model.0.conv.weight"]
    )


def test_python_source(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    pkg = tmp_path / "user_nets_for_slimcnn.py"
    pkg.write_text(
        textwrap.dedent("""
        from torch import nn
        def build(num_classes=4):
            return nn.Sequential(nn.Conv2d(1, 8, 3), nn.Flatten(), nn.LazyLinear(num_classes))
        NOT_A_MODEL = 3
        def bad():
            return 3
        def needs(width, num_classes=4):
            return build(num_classes)
        def fails():
            raise RuntimeError("no such layer")
        def plain():
            return build()
    """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    loaded = load_model("python:user_nets_for_slimcnn:build", num_classes=6)
    assert isinstance(loaded.model, nn.Sequential) and loaded.info.input_shape[1] == 1
    assert loaded.model(torch.rand(1, 1, 8, 8)).shape == (1, 6)
    by_path = load_model(f"python:{pkg}:build")
    assert by_path.model(torch.rand(1, 1, 8, 8)).shape == (1, 4)
    with pytest.raises(UnknownNameError, match="Did you mean \\['build'\\]"):
        load_model("python:user_nets_for_slimcnn:buildd")
    with pytest.raises(ModelLoadError, match="must return an nn.Module"):
        load_model("python:user_nets_for_slimcnn:bad")
    with pytest.raises(ModelLoadError, match="cannot import"):
        load_model("python:no_such_pkg_xyz.mod:build")
    # the factory's own misuse and failures: one line each (they were tracebacks of TypeError / RuntimeError)
    with pytest.raises(ModelLoadError, match=r":needs needs width, .*def make\(\): return needs\(width=...\)"):
        load_model("python:user_nets_for_slimcnn:needs")
    with pytest.raises(ModelLoadError, match=r":fails raised RuntimeError while building the model: no such layer"):
        load_model("python:user_nets_for_slimcnn:fails")
    with pytest.raises(ConfigError, match=r":plain takes no num_classes argument, so --num-classes cannot set it"):
        load_model("python:user_nets_for_slimcnn:plain", num_classes=3)
    with pytest.raises(ConfigError, match="python:pkg.module:factory"):
        load_model("python:just_a_module")
    sys.modules.pop("user_nets_for_slimcnn", None)


def test_a_user_file_that_fails_to_import_is_one_line(tmp_path) -> None:
    """A syntax error or a missing package in the user's file was a traceback with exit code 1."""
    (tmp_path / "syn.py").write_text("def make(:\n    pass\n")
    (tmp_path / "imp.py").write_text("import no_such_package_for_slimcnn\n")
    with pytest.raises(ModelLoadError, match=r"syn.py failed \(line 1\): SyntaxError: invalid syntax \(--debug"):
        load_model(f"python:{tmp_path / 'syn.py'}:make")
    with pytest.raises(ModelLoadError, match=r"imp.py failed: ModuleNotFoundError: No module named "
                                             r"'no_such_package_for_slimcnn'"):
        load_model(f"python:{tmp_path / 'imp.py'}:make")


def test_python_source_not_on_the_path_names_the_file_form(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The console script does not import from the working folder: the error names the form that does."""
    (tmp_path / "mynet_not_on_path.py").write_text("from torch import nn\ndef build():\n    return nn.Conv2d(3, 4, 3)\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))  # loading the file puts its folder on it
    with pytest.raises(ModelLoadError, match="name the file instead: python:mynet_not_on_path.py:build"):
        load_model("python:mynet_not_on_path:build")
    assert isinstance(load_model("python:mynet_not_on_path.py:build").model, nn.Conv2d)


def test_sources_registry_is_extensible() -> None:
    def load(name: str, opts: object) -> LoadedModel:
        return LoadedModel(nn.Linear(2, int(name)), f"toy:{name}", ModelInfo(input_shape=(1, 2)))

    register_model_source(ModelSource("toy_test_src", "toy_test_src:N", "toy_test_src:3", load))
    try:
        assert load_model("toy_test_src:3").model.out_features == 3
        with pytest.raises(ValueError, match="already registered"):
            register_model_source(ModelSource("toy_test_src", "x", "x", load))
    finally:
        SOURCES._items.pop("toy_test_src")


def test_arch_and_scale_only_where_they_apply() -> None:
    with pytest.raises(ConfigError, match="--arch only applies"):
        load_model("torchvision:resnet18", arch="slimcnn:resnet20")
    with pytest.raises(ConfigError, match="--scale only applies"):
        load_model("torchvision:resnet18", scale=2)
