"""The file: source: pickled modules + JSON sidecar, TorchScript, state_dict + arch, suffix hooks."""

from __future__ import annotations

import json

import pytest
import torch

from slimcnn.errors import ConfigError, ModelLoadError
from slimcnn.models import FILE_LOADERS, LoadedModel, ModelInfo, load_model, register_file_loader, save_model


def test_save_model_round_trips_module_and_info(tmp_path) -> None:
    orig = load_model("slimcnn:tiny_sr", scale=3)
    path = save_model(orig, tmp_path / "run")
    assert path == tmp_path / "run" / "model.pt" and path.is_file()
    side = json.loads((tmp_path / "run" / "model.json").read_text())
    assert side["format"] == "slimcnn-model-info" and side["source"] == "slimcnn:tiny_sr"
    back = load_model(f"file:{path}")
    assert back.source == f"file:{path}"
    assert back.info.task == "sr" and back.info.scale == 3 and back.info.sr_input == "lr"
    assert back.info.input_shape == (1, 1, 32, 32) and isinstance(back.info.input_shape, tuple)
    x = torch.rand(1, 1, 8, 8)
    torch.testing.assert_close(back.model(x), orig.model(x))
    assert not back.model.training
    with pytest.raises(ConfigError, match="x3 model"):
        load_model(f"file:{path}", scale=2)


def test_sidecar_keeps_classification_preprocessing(tmp_path) -> None:
    orig = load_model("slimcnn:tiny_cnn")
    path = save_model(orig, tmp_path / "model.pt")
    back = load_model(f"file:{path}")
    assert back.info.mean == orig.info.mean and back.info.std == orig.info.std
    assert back.info.num_classes == 10 and back.info.task == "classification"


def test_pickled_module_without_sidecar_guesses_and_says_so(tmp_path) -> None:
    model = load_model("slimcnn:lenet5").model
    p = tmp_path / "net.pt"
    torch.save(model, p)
    back = load_model(f"file:{p}")
    assert back.info.input_shape[1] == 1
    assert any("no sidecar" in n for n in back.info.notes)
    with pytest.raises(ConfigError, match="drop --arch"):
        load_model(f"file:{p}", arch="slimcnn:lenet5")


def test_state_dict_needs_arch_and_loads_strictly(tmp_path) -> None:
    src = load_model("slimcnn:resnet20", num_classes=10).model
    with torch.no_grad():
        src.linear.bias.fill_(0.5)
    p = tmp_path / "sd.pth"
    torch.save(src.state_dict(), p)
    with pytest.raises(ConfigError, match="--arch"):
        load_model(f"file:{p}")
    back = load_model(f"file:{p}", arch="slimcnn:resnet20")
    assert back.info.pretrained and back.info.weights == str(p)
    assert back.info.input_shape == (1, 3, 32, 32) and back.info.mean is not None
    assert torch.all(back.model.linear.bias == 0.5)
    with pytest.raises(ModelLoadError, match=r"missing keys 'layer1\.3"):
        load_model(f"file:{p}", arch="slimcnn:resnet56")


def test_a_checkpoint_fine_tuned_to_k_classes_loads_with_k_classes(tmp_path) -> None:
    """Most users' checkpoints have their own classifier: the only rows that differ set num_classes."""
    five = load_model("slimcnn:tiny_cnn", num_classes=5).model
    p = tmp_path / "sd.pth"
    torch.save({"epoch": 3, "state_dict": five.state_dict()}, p)
    for back in (load_model(f"file:{p}", arch="slimcnn:tiny_cnn"), load_model("slimcnn:tiny_cnn", weights=str(p))):
        assert back.info.num_classes == 5 and "num_classes=5: the checkpoint's fc has 5 outputs" in back.info.notes
        torch.testing.assert_close(back.model(torch.ones(1, 3, 32, 32)), five.eval()(torch.ones(1, 3, 32, 32)))
    told = load_model(f"file:{p}", arch="slimcnn:tiny_cnn", num_classes=5)
    assert told.info.num_classes == 5 and not any(n.startswith("num_classes=") for n in told.info.notes)


def test_a_checkpoint_for_other_classes_gets_a_new_classifier_and_keeps_the_rest(tmp_path) -> None:
    """Transfer learning: an ImageNet-style checkpoint into a model built for the user's classes."""
    ten = load_model("slimcnn:tiny_cnn", num_classes=10, seed=1).model
    p = tmp_path / "sd.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in ten.state_dict().items()}}, p)
    for back in (load_model("slimcnn:tiny_cnn", weights=str(p), num_classes=3),
                 load_model(f"file:{p}", arch="slimcnn:tiny_cnn", num_classes=3)):
        assert back.info.pretrained and back.info.num_classes == 3 and back.model(torch.ones(1, 3, 32, 32)).shape == (1, 3)
        assert any(n.startswith("num_classes=3: fc is new") and "10 outputs" in n for n in back.info.notes)
        own, ref = back.model.state_dict(), ten.state_dict()
        assert [k for k in own if not k.startswith("fc.") and not torch.equal(own[k], ref[k])] == []
    sd = ten.state_dict()
    sd["stem.weight"] = sd["stem.weight"][:8]  # not only the classifier differs: the error stands
    torch.save(sd, p)
    with pytest.raises(ModelLoadError, match=r"stem\.weight"):
        load_model("slimcnn:tiny_cnn", weights=str(p), num_classes=3)


def test_state_dict_with_wrong_shape_names_the_tensor(tmp_path) -> None:
    sd = load_model("slimcnn:tiny_cnn", num_classes=5).model.state_dict()
    sd["stem.weight"] = sd["stem.weight"][:8]  # not the classifier: no number of classes explains it
    p = tmp_path / "sd.pth"
    torch.save(sd, p)
    with pytest.raises(ModelLoadError, match=r"'stem\.weight' has shape \(8, 3, 3, 3\)"):
        load_model(f"file:{p}", arch="slimcnn:tiny_cnn")


def test_torchscript_file(tmp_path) -> None:
    model = load_model("slimcnn:tiny_cnn").model
    p = tmp_path / "scripted.pt"
    torch.jit.script(model).save(str(p))
    back = load_model(f"file:{p}")
    x = torch.rand(1, 3, 32, 32)
    torch.testing.assert_close(back.model(x), model(x))


def test_corrupt_and_missing_files_are_one_line_errors(tmp_path) -> None:
    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"this is not a checkpoint")
    with pytest.raises(ModelLoadError) as e:
        load_model(f"file:{bad}")
    assert str(bad) in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model(f"file:{tmp_path / 'nope.pt'}")
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model("slimcnn:tiny_cnn", weights=str(tmp_path / "nope.pth"))
    truncated = tmp_path / "trunc.pt"
    torch.save(load_model("slimcnn:tiny_cnn").model.state_dict(), truncated)
    truncated.write_bytes(truncated.read_bytes()[:200])
    with pytest.raises(ModelLoadError, match="trunc.pt"):
        load_model("slimcnn:tiny_cnn", weights=str(truncated))


def test_non_state_dict_weights(tmp_path) -> None:
    p = tmp_path / "meta.pth"
    torch.save({"epoch": 3, "lr": 0.1}, p)
    with pytest.raises(ModelLoadError, match="not a state_dict"):
        load_model("slimcnn:tiny_cnn", weights=str(p))


def test_file_suffix_hook(tmp_path) -> None:
    @register_file_loader(".toyslim")
    def _load(path, opts) -> LoadedModel:
        return LoadedModel(
            torch.nn.Identity(), f"file:{path}", ModelInfo(task="sr", input_shape=(1, 1, 4, 4))
        )

    try:
        p = tmp_path / "m.toyslim"
        p.write_bytes(b"packed")
        loaded = load_model(f"file:{p}")
        assert isinstance(loaded.model, torch.nn.Identity) and loaded.info.task == "sr"
    finally:
        FILE_LOADERS._items.pop(".toyslim")
