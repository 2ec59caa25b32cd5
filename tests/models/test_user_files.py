"""A user's own model file (``python:nets.py:build``) through the CLI: its input size comes from the data,
not a 224x224 guess, and every file written from it loads again in a fresh process (its classes re-imported)."""

from __future__ import annotations

import json
import re
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from slimcnn.cli import main
from slimcnn.data.classification import native_size
from slimcnn.models import ModelInfo, load_model
from slimcnn.models._user_modules import PREFIX
from slimcnn.tasks import fit_input

NETS = textwrap.dedent("""
    from torch import nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                                          nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                                          nn.AdaptiveAvgPool2d(1))
            self.fc = nn.Linear(16, 2)

        def forward(self, x):
            return self.fc(self.features(x).flatten(1))

    def build():
        return Net()
""")


def _folder(root: Path, sizes: tuple[tuple[int, int], ...] = ((12, 20),), per_class: int = 4) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in ("cat", "dog"):
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            h, w = sizes[i % len(sizes)]
            Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(root / c / f"{i}.png")
    return root


def _forget_user_modules() -> None:
    """As in a new process: the user's file is not imported yet."""
    for name in [n for n in sys.modules if n.startswith(PREFIX)]:
        del sys.modules[name]


def test_a_model_file_that_imports_its_neighbours_loads_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``nets.py`` doing ``from blocks import Block``: the file's folder is on the path, as ``python nets.py`` has it."""
    from slimcnn.models import save_model

    code = tmp_path / "code"
    code.mkdir()
    (code / "blocks_for_slimcnn_test.py").write_text(
        "from torch import nn\nclass Block(nn.Sequential):\n    pass\n")
    (code / "nets.py").write_text("from torch import nn\nfrom blocks_for_slimcnn_test import Block\n"
                                  "def build():\n    return Block(nn.Conv2d(3, 4, 3), nn.ReLU())\n")
    saved = list(sys.path)
    loaded = load_model(f"python:{code / 'nets.py'}:build")
    save_model(loaded, tmp_path / "out")
    monkeypatch.setattr(sys, "path", saved)  # a new process: neither the folder nor the modules
    _forget_user_modules()
    sys.modules.pop("blocks_for_slimcnn_test", None)
    back = load_model(f"file:{tmp_path / 'out' / 'model.pt'}")
    assert type(back.model).__name__ == "Block"
    sys.modules.pop("blocks_for_slimcnn_test", None)


def test_native_size_is_the_one_size_the_images_share(tmp_path: Path) -> None:
    assert native_size("digits") == (8, 8)
    assert native_size(_folder(tmp_path / "same")) == (12, 20)
    assert native_size(_folder(tmp_path / "mixed", sizes=((12, 20), (16, 16)))) is None


def test_fit_input_settles_only_a_guess(tmp_path: Path) -> None:
    data = _folder(tmp_path / "d")
    guess = ModelInfo(input_shape=(1, 3, 224, 224), input_guessed=True)
    fitted, said = fit_input(guess, "classification", data)
    assert fitted.input_shape == (1, 3, 12, 20) and not fitted.input_guessed
    assert said == "input size: taken from the data, whose images are 12x20 (1x3x12x20 instead of the 224x224 guess)"
    assert fit_input(guess, "classification", data, input_shape=(4, 3, 40, 40))[0].input_shape == (1, 3, 40, 40)
    assert fit_input(guess, "sr", "photos") == (guess, None)  # SR nets take any size: nothing to settle
    known = ModelInfo(input_shape=(1, 3, 224, 224))
    assert fit_input(known, "classification", data) == (known, None)  # a model that says its size keeps it
    bare_file = ModelInfo(input_guessed=True, notes=("input size not declared (no sidecar model.json): ...", "other"))
    assert fit_input(bare_file, "classification", data)[0].notes == ("other",)  # not carried into its outputs
    mixed = _folder(tmp_path / "m", sizes=((12, 20), (16, 16)))
    assert fit_input(guess, "classification", mixed) == (guess, None)


def test_a_python_file_model_trains_at_its_datas_size_and_its_files_load_again(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    torch.set_num_threads(1)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))  # the user file's folder goes on it: not for later tests
    (tmp_path / "mynets.py").write_text(NETS)
    data = str(_folder(tmp_path / "pets"))
    assert main(["train", "python:mynets.py:build", "--task", "classification", "--data", data, "--steps", "2",
                 "--out", "trained"]) == 0
    err = capsys.readouterr().err
    assert "input size not declared: (1, 3, 224, 224) is a guess" not in err  # settled before it was said
    assert "taken from the data, whose images are 12x20 (1x3x12x20 instead of the 224x224 guess)" in err
    side = json.loads((tmp_path / "trained" / "model.json").read_text())
    assert side["info"]["input_shape"] == [1, 3, 12, 20] and side["info"]["task"] == "classification"
    assert list(side["modules"].values()) == [str(tmp_path / "mynets.py")]

    _forget_user_modules()  # it crashed here: ModuleNotFoundError: No module named '_slimcnn_user_mynets'
    loaded = load_model("file:trained/model.pt")
    assert loaded.info.input_shape == (1, 3, 12, 20) and loaded.model(torch.rand(2, 3, 12, 20)).shape == (2, 2)

    # a pruned copy is no longer what the factory builds: the .slim stores the pickled architecture
    assert main(["prune", "file:trained/model.pt", "--ratio", "0.5", "--no-latency", "--out", "pruned"]) == 0
    assert main(["quantize", "file:pruned/model.pt", "--bits", "4", "--no-onnx", "--out", "packed"]) == 0
    _forget_user_modules()
    slim = load_model("file:packed/model.slim")
    assert slim.model.features[0].out_channels == 8
    assert torch.equal(slim.model(torch.ones(1, 3, 12, 20)), load_model("file:packed/model.pt").model(torch.ones(1, 3, 12, 20)))

    # without data, --input settles it (apply: the plan's input), and no note calls it a guess
    capsys.readouterr()
    assert main(["prune", "python:mynets.py:build", "--ratio", "0.5", "--no-latency", "--input", "1x3x12x20",
                 "--out", "no_data"]) == 0
    assert "is a guess" not in capsys.readouterr().err
    info = json.loads((tmp_path / "no_data" / "model.json").read_text())["info"]
    assert info["input_shape"] == [1, 3, 12, 20] and info["input_guessed"] is False
    assert main(["apply", "no_data/plan.json", "python:mynets.py:build", "--no-latency", "--out", "applied"]) == 0
    assert "is a guess" not in capsys.readouterr().err
    assert json.loads((tmp_path / "applied" / "model.json").read_text())["info"]["input_shape"] == [1, 3, 12, 20]
    assert main(["prune", "python:mynets.py:build", "--ratio", "0.5", "--no-latency", "--out", "guessed"]) == 0
    assert "note: input size not declared: (1, 3, 224, 224) is a guess" in capsys.readouterr().err

    (tmp_path / "mynets.py").rename(tmp_path / "moved.py")
    _forget_user_modules()
    assert main(["evaluate", "file:trained/model.pt", "--data", data]) == 2
    err = capsys.readouterr().err.strip()
    assert "holds classes from" in err and "mynets.py, which is not there any more" in err and "\n" not in err


UPSCALER = textwrap.dedent("""
    from torch import nn

    class Upscaler(nn.Module):
        def __init__(self, scale=3):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.PReLU(8),
                                      nn.Conv2d(8, scale * scale, 3, padding=1), nn.PixelShuffle(scale))

        def forward(self, x):
            return self.body(x)

    def build():
        return Upscaler(3)
""")


def test_fit_sr_measures_how_an_sr_model_is_fed() -> None:
    from torch import nn

    from slimcnn.errors import ConfigError
    from slimcnn.tasks.sr import fit_sr

    class X3(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return nn.functional.interpolate(x, scale_factor=3)

    guessed = ModelInfo(input_shape=(1, 1, 224, 224), input_guessed=True, notes=("input size not declared: ...",))
    info, said = fit_sr(X3(), guessed)
    assert (info.sr_input, info.scale, info.input_shape, info.input_guessed, info.notes) == ("lr", 3, (1, 1, 32, 32), False, ())
    assert said is not None and "x3" in said
    info, said = fit_sr(nn.Conv2d(1, 1, 3, padding=1), ModelInfo(scale=4))  # same size out: the bicubic image, any x
    assert (info.sr_input, info.scale) == ("upsampled", 4) and said is not None
    assert fit_sr(nn.Conv2d(1, 1, 3, padding=1), ModelInfo())[0].scale == 2
    with pytest.raises(ConfigError, match="upscales x3 .* not the --scale 2"):
        fit_sr(X3(), ModelInfo(scale=2))
    declared = ModelInfo(sr_input="lr", scale=2)
    assert fit_sr(X3(), declared) == (declared, None)  # what the model says is not second-guessed
    assert fit_sr(nn.Conv2d(3, 1, 3), ModelInfo()) == (ModelInfo(), None)  # fails on Y: the task's first forward says so


def test_a_python_file_upscaler_is_fed_at_its_own_factor(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """A x3 upscaler from a user's file was fed a x2 bicubic image and scored on a crop of its output (11 dB after
    training, without a word), and --scale 3 was refused for python: sources."""
    torch.set_num_threads(1)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    (tmp_path / "mysr.py").write_text(UPSCALER)
    assert main(["train", "python:mysr.py:build", "--task", "sr", "--data", "photos", "--steps", "2", "--limit", "1",
                 "--out", "trained"]) == 0
    err = capsys.readouterr().err
    assert "the model upscales a 32x32 input to 96x96, so it is fed the low-resolution image, x3" in err
    info = json.loads((tmp_path / "trained" / "model.json").read_text())["info"]
    assert (info["task"], info["sr_input"], info["scale"], info["input_shape"]) == ("sr", "lr", 3, [1, 1, 32, 32])
    assert main(["evaluate", "python:mysr.py:build", "--task", "sr", "--scale", "3", "--data", "photos",
                 "--limit", "1"]) == 0
    assert "x3)" in capsys.readouterr().out
    assert main(["evaluate", "python:mysr.py:build", "--task", "sr", "--scale", "2", "--data", "photos"]) == 2
    assert "upscales x3" in capsys.readouterr().err

    # the trained file says its task: --data alone measures on it (prune, export; compress and search alike)
    assert main(["prune", "file:trained/model.pt", "--ratio", "0.5", "--no-latency", "--data", "photos", "--limit", "1",
                 "--out", "pruned", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["task"] == "sr" and result["after"]["score"]["metric"] == "psnr"


def test_train_builds_a_new_classifier_for_the_datas_classes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A 10-class checkpoint fine-tuned on 2-class data: --num-classes 2 (the data's own error says so)."""
    ckpt = tmp_path / "ten.pth"
    torch.save(load_model("slimcnn:tiny_cnn", num_classes=10).model.state_dict(), ckpt)
    data = str(_folder(tmp_path / "pets"))
    base = ["train", "slimcnn:tiny_cnn", "--weights", str(ckpt), "--data", data, "--steps", "2"]
    assert main([*base, "--out", str(tmp_path / "no")]) == 2
    assert "train one for these with `slimcnn train ... --num-classes 2`" in capsys.readouterr().err
    assert main([*base, "--num-classes", "2", "--out", str(tmp_path / "two")]) == 0
    assert "fc is new" in capsys.readouterr().err
    back = load_model(f"file:{tmp_path / 'two' / 'model.pt'}")
    assert back.info.num_classes == 2 and back.model(torch.ones(1, 3, 32, 32)).shape == (1, 2)
    assert not any("is new" in n for n in back.info.notes)  # trained now: the note no longer holds


def test_a_pickled_module_whose_module_is_beside_it_names_the_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``torch.save(model)`` from ``python`` in the model's folder pickles ``mysr.Upscaler``: ``python`` had that
    folder on its path, the ``slimcnn`` command has not. The error names it."""
    from slimcnn.errors import ModelLoadError

    (tmp_path / "mysr_beside.py").write_text(UPSCALER)
    monkeypatch.setattr(sys, "path", [str(tmp_path), *sys.path])
    import mysr_beside  # type: ignore[import-not-found]

    torch.save(mysr_beside.build(), tmp_path / "bare.pt")
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(tmp_path)])
    del sys.modules["mysr_beside"]
    with pytest.raises(ModelLoadError, match=re.escape(f"'mysr_beside' is in {tmp_path}: run with PYTHONPATH={tmp_path}")):
        load_model(f"file:{tmp_path / 'bare.pt'}")
