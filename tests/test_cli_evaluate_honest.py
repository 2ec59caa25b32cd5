"""``slimcnn evaluate`` refuses a model that does not fit --task or the data's classes, in one line,
and never calls a trained file: model untrained (issue 12)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from slimcnn.cli import main
from slimcnn.data.classification import CIFAR10_CLASSES
from slimcnn.errors import DataError
from slimcnn.tasks._classes import check_classes


def _one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = [line for line in capsys.readouterr().err.strip().splitlines() if not line.startswith("note:")]
    assert len(err) == 1, err
    assert err[0].startswith("error: ") and "Traceback" not in err[0]
    return err[0]


@pytest.mark.parametrize(("model", "task", "data", "hint"), [
    ("slimcnn:lenet5", "sr", "photos", "--task classification"),
    ("slimcnn:tiny_sr", "classification", "digits", "--task sr"),
    ("slimcnn:yolo_fastestv2", "classification", "digits", "--task detection"),
])
def test_model_task_mismatch_is_one_line(model: str, task: str, data: str, hint: str,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", model, "--task", task, "--data", data, "--limit", "2"]) == 2
    err = _one_line_error(capsys)
    assert f"--task {task} expects a model that" in err and err.endswith(f"pass {hint}")


_FACTORY = """
from torch import nn
def classifier():
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10))
def cat_dog():
    from slimcnn.models import LoadedModel, ModelInfo
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    info = ModelInfo(task="classification", input_shape=(1, 3, 16, 16), num_classes=2, classes=("dog", "cat"))
    return LoadedModel(net, "python:x", info)
def two_class():
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
"""


def test_task_is_guessed_from_the_output_when_the_model_does_not_say(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "nets.py").write_text(_FACTORY)
    rc = main(["evaluate", f"python:{tmp_path / 'nets.py'}:classifier", "--task", "sr", "--data", "photos",
               "--limit", "1"])
    assert rc == 2
    err = _one_line_error(capsys)
    assert "this model outputs (1, 10): pass --task classification" in err


def _image_folder(root: Path, classes: tuple[str, ...], per_class: int = 3) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(root / c / f"{i}.png")
    return root


def test_class_folders_that_are_not_the_models_classes_are_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = _image_folder(tmp_path / "pets", ("cat", "dog"))
    # a 10-class CIFAR model on 2 class folders used to score 0 % silently
    assert main(["evaluate", "slimcnn:resnet20", "--task", "classification", "--data", str(folder)]) == 2
    err = _one_line_error(capsys)
    assert "holds 2 classes (cat, dog) but the model outputs 10 classes (airplane, automobile" in err

    # the model's own class names in another order
    (tmp_path / "nets.py").write_text(_FACTORY)
    assert main(["evaluate", f"python:{tmp_path / 'nets.py'}:cat_dog", "--data", str(folder)]) == 2
    err = _one_line_error(capsys)
    assert "not the model's classes in its order (dog, cat)" in err and "'cat' is output 1 but label 0" in err

    # a 2-class model that names no classes: the folders are taken as its classes
    rc = main(["evaluate", f"python:{tmp_path / 'nets.py'}:two_class", "--task", "classification",
               "--data", str(folder), "--json"])
    assert rc == 0 and json.loads(capsys.readouterr().out)["n"] == 6


def test_check_classes_rules() -> None:
    check_classes(CIFAR10_CLASSES, "cifar", 10, None)  # sorted CIFAR folders = CIFAR order
    check_classes(tuple("0123456789"), "digits", 10, CIFAR10_CLASSES)  # names the model does not know
    with pytest.raises(DataError, match="'cat' is output 3 but label 0"):
        check_classes(("cat", "dog", *(f"x{i}" for i in range(8))), "d", 10, None)  # CIFAR names misplaced
    with pytest.raises(DataError, match="holds 2 classes.*--num-classes 2"):
        check_classes(("a", "b"), "d", 3, None)
    for outputs in (3, 1):  # not "train one with --num-classes 1": that trains to 100 % at loss 0
        with pytest.raises(DataError, match=r"holds one class folder \(a\): a classifier is trained and scored on"):
            check_classes(("a",), "d", outputs, None)


def test_trained_file_models_are_not_called_untrained(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert main(["train", "slimcnn:lenet5", "--task", "classification", "--data", "digits", "--steps", "5",
                 "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["evaluate", f"file:{out / 'model.pt'}", "--data", "digits", "--limit", "20"]) == 0
    assert "untrained" not in capsys.readouterr().err

    from slimcnn.models import load_model

    assert not any("untrained" in n for n in load_model(f"file:{out / 'model.pt'}").info.notes)
    sd = tmp_path / "sd.pt"
    torch.save(load_model(f"file:{out / 'model.pt'}").model.state_dict(), sd)
    assert main(["evaluate", f"file:{sd}", "--arch", "slimcnn:lenet5", "--data", "digits", "--limit", "20"]) == 0
    err = capsys.readouterr().err
    assert "untrained" not in err and "random init" not in err


def test_evaluate_seed_fixes_a_random_init(capsys: pytest.CaptureFixture[str]) -> None:
    def top1(seed: str) -> float:
        assert main(["evaluate", "slimcnn:lenet5", "--data", "digits", "--seed", seed, "--json"]) == 0
        return float(json.loads(capsys.readouterr().out)["value"])

    a, b, c = top1("3"), top1("3"), top1("4")
    assert a == b and a != c
