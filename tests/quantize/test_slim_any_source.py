"""A .slim made from any source (file: model.pt from train, a pruned file, a state_dict + --arch, a
python: factory) reloads as file:model.slim and scores what the in-memory quantised model scored."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from slimcnn.cli import main
from slimcnn.quantize import read_packed


def _quantize_then_evaluate(capsys: pytest.CaptureFixture[str], source: str, out: Path, *extra: str) -> dict:
    rc = main(["quantize", source, "--bits", "4", "--task", "classification", "--data", "digits", "--limit", "60",
               "--no-onnx", "--out", str(out), "--json", *extra])
    assert rc == 0
    res = json.loads(capsys.readouterr().out)
    rc = main(["evaluate", f"file:{out / 'model.slim'}", "--task", "classification", "--data", "digits",
               "--limit", "60", "--json"])
    assert rc == 0
    again = json.loads(capsys.readouterr().out)
    assert again["value"] == res["after"]["score"]["value"] and again["metrics"] == res["after"]["score"]["metrics"]
    return read_packed(out / "model.slim").header


def test_slim_from_trained_file_reloads(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    assert main(["train", "slimcnn:lenet5", "--task", "classification", "--data", "digits", "--steps", "5",
                 "--out", str(run)]) == 0
    capsys.readouterr()
    header = _quantize_then_evaluate(capsys, f"file:{run / 'model.pt'}", tmp_path / "q")
    assert header["arch"] == {"kind": "source", "source": "slimcnn:lenet5", "options": {"num_classes": 10}}

    # a bare state_dict with --arch: rebuilt from the --arch source
    sd = tmp_path / "sd.pt"
    from slimcnn.models import load_model

    torch.save(load_model(f"file:{run / 'model.pt'}").model.state_dict(), sd)
    header = _quantize_then_evaluate(capsys, f"file:{sd}", tmp_path / "q_sd", "--arch", "slimcnn:lenet5")
    assert header["arch"]["kind"] == "source" and header["arch"]["source"] == "slimcnn:lenet5"


def test_slim_from_a_reshaped_file_stores_the_module(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from slimcnn.models import load_model, save_model

    base = load_model("slimcnn:lenet5", seed=0)
    net = base.model
    net.conv1 = nn.Conv2d(1, 4, 5)  # narrower than any slimcnn:lenet5 (as a pruned file is)
    net.conv2 = nn.Conv2d(4, 16, 5)
    path = save_model(base, tmp_path / "narrow" / "model.pt")
    header = _quantize_then_evaluate(capsys, f"file:{path}", tmp_path / "q")
    assert header["arch"]["kind"] == "module" and header["source"] == f"file:{path}"
    path.unlink()  # the .slim needs nothing but itself
    slim = f"file:{tmp_path / 'q' / 'model.slim'}"
    assert main(["evaluate", slim, "--data", "digits", "--limit", "5"]) == 0
    assert main(["analyze", slim, "--json"]) == 0
    assert main(["prune", slim, "--criterion", "l1", "--ratio", "0.25", "--out", str(tmp_path / "p")]) == 0


def test_slim_from_python_factory_reloads_from_anywhere(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "nets.py").write_text(
        "from torch import nn\n"
        "def build():\n"
        "    return nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, 10))\n"
    )
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "q"
    rc = main(["quantize", "python:nets.py:build", "--bits", "4", "--no-onnx", "--out", str(out)])
    assert rc == 0
    capsys.readouterr()
    monkeypatch.chdir(tmp_path.parent)  # a relative python: path must not matter any more
    rc = main(["evaluate", f"file:{out / 'model.slim'}", "--task", "classification", "--data", "digits",
               "--limit", "10"])
    assert rc == 0, capsys.readouterr().err
    assert read_packed(out / "model.slim").header["arch"]["source"] == f"python:{tmp_path / 'nets.py'}:build"
