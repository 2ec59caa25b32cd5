"""``slimcnn evaluate`` and ``slimcnn train`` end to end on the built-in digits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from slimcnn.cli import main


def test_evaluate_json_and_untrained_note(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["evaluate", "slimcnn:lenet5", "--task", "classification", "--data", "digits", "--limit", "50", "--json"])
    out, err = capsys.readouterr()
    assert rc == 0
    obj = json.loads(out)
    assert {"metric", "value", "metrics", "n", "dataset", "source", "pretrained"} <= obj.keys()
    assert obj["metric"] == "top1" and obj["n"] == 50 and obj["dataset"] == "digits:val"
    assert obj["source"] == "slimcnn:lenet5" and obj["pretrained"] is False
    assert set(obj["metrics"]) == {"top1", "top5"} and 0 <= obj["value"] <= 100
    assert "untrained" in err


def test_evaluate_errors_are_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["evaluate", "slimcnn:lenet5", "--task", "clasification", "--data", "digits"]) == 2
    err = capsys.readouterr().err.strip()
    assert "Did you mean ['classification']" in err and "\n" not in err
    assert main(["evaluate", "slimcnn:lenet5", "--data", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: data directory") and "'digits'" in err and "\n" not in err


def test_train_writes_a_loadable_model(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    torch.set_num_threads(1)  # tiny net: one thread is fastest on a busy 2-core box
    out = tmp_path / "run"
    rc = main(["train", "slimcnn:lenet5", "--task", "classification", "--data", "digits", "--steps", "100",
               "--lr", "0.05", "--batch-size", "64", "--out", str(out), "--json"])
    stdout, _ = capsys.readouterr()
    assert rc == 0
    res = json.loads(stdout)
    assert res["after"]["score"]["value"] > 85 > res["before"]["score"]["value"]
    assert res["details"]["train"]["steps"] == 100 and res["options"]["lr"] == 0.05
    assert json.loads((out / "result.json").read_text())["after"] == res["after"]
    assert (out / "model.pt").is_file() and (out / "model.json").is_file()

    rc = main(["evaluate", f"file:{out / 'model.pt'}", "--data", "digits", "--json"])
    again = json.loads(capsys.readouterr().out)
    assert rc == 0 and again["value"] == pytest.approx(res["after"]["score"]["value"]) and again["pretrained"] is True

    # never over the input model
    assert main(["train", f"file:{out / 'model.pt'}", "--data", "digits", "--steps", "1", "--out", str(out)]) == 2
    assert "holds the input" in capsys.readouterr().err


def test_commands_are_registered(capsys: pytest.CaptureFixture[str]) -> None:
    for cmd, flag in (("evaluate", "--data"), ("train", "--train-data")):
        assert main([cmd, "--help"]) == 0
        assert flag in capsys.readouterr().out


@pytest.mark.parametrize("command", [
    ["evaluate", "slimcnn:lenet5", "--data", "digits"],
    ["train", "slimcnn:lenet5", "--data", "digits", "--steps", "1"],
    ["search", "slimcnn:lenet5", "--task", "classification", "--data", "digits", "--max-drop", "1"],
])
def test_unusable_device_is_a_one_line_error(command: list[str], capsys: pytest.CaptureFixture[str],
                                            tmp_path: Path) -> None:
    out = ["--out", str(tmp_path / "out")] if command[0] != "evaluate" else []
    assert main([*command, *out, "--device", "gpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--device expects cpu, cuda or cuda:N, got 'gpu'" in err and "\n" not in err
    if not torch.cuda.is_available():
        assert main([*command, *out, "--device", "cuda"]) == 2
        err = capsys.readouterr().err.strip()
        assert "no CUDA GPU is usable here" in err and "\n" not in err
    assert not (tmp_path / "out").exists()


def _digit_folder(root: Path, per_class: int = 2) -> Path:
    """The last digits of scikit-learn's set as a class-per-folder PNG set (folders 0..9)."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    for c in range(10):
        (root / str(c)).mkdir(parents=True)
        for j, i in enumerate(np.flatnonzero(digits.target == c)[-per_class:]):
            Image.fromarray((digits.images[i] * 255 / 16).astype(np.uint8)).save(root / str(c) / f"{j}.png")
    return root


def test_train_and_val_data_override_data_on_every_training_command(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """One grammar: --data for both sides, --train-data / --val-data override one (train and decompose had no
    --val-data, search and compress no --train-data)."""
    import typer.main

    from slimcnn.cli import app

    commands = typer.main.get_command(app).commands  # type: ignore[attr-defined]
    for name in ("train", "decompose", "search", "compress"):
        flags = {o for p in commands[name].params for o in p.opts}
        assert {"--data", "--train-data", "--val-data"} <= flags, name
    torch.set_num_threads(1)
    val = _digit_folder(tmp_path / "val")
    rc = main(["train", "slimcnn:lenet5", "--task", "classification", "--data", "digits", "--val-data", str(val),
               "--steps", "2", "--out", str(tmp_path / "run"), "--json"])
    res = json.loads(capsys.readouterr().out)
    assert rc == 0 and res["before"]["score"]["n"] == res["after"]["score"]["n"] == 20  # scored on the folder
    assert res["options"]["val_data"] == str(val)
    # both sides named: --data would serve neither, so it is not asked for (it was: "Missing option '--data'")
    rc = main(["train", "slimcnn:lenet5", "--task", "classification", "--train-data", "digits", "--val-data",
               str(val), "--steps", "2", "--out", str(tmp_path / "run2"), "--json"])
    assert rc == 0 and json.loads(capsys.readouterr().out)["after"]["score"]["n"] == 20
    rc = main(["decompose", "slimcnn:lenet5", "--task", "classification", "--train-data", "digits", "--val-data",
               str(val), "--runtime", "torch", "--out", str(tmp_path / "dec"), "--json"])
    assert rc == 0 and json.loads(capsys.readouterr().out)["before"]["score"]["n"] == 20
    for name, required in (("train", "--steps"), ("search", "--max-drop"), ("compress", "--max-drop")):
        # one of the two is not enough
        assert main([name, "slimcnn:lenet5", "--task", "classification", "--val-data", str(val), required, "2",
                     "--out", str(tmp_path / "x")]) == 2
        assert "give --data (trained on and scored), or both --train-data and --val-data" in capsys.readouterr().err


def test_scores_print_percent_and_db_to_2_decimals_fractions_to_4_digits() -> None:
    """`map50 0.02` hid a 0.0196 mAP and `ssim 0.88` an SSIM of 0.8826: fractions get 4 significant digits."""
    from slimcnn.cli.evaluate import format_score
    from slimcnn.types import Score

    det = Score("map50_95", 0.007574, metrics={"map50_95": 0.007574, "map50": 0.01962, "lamr": 0.9912}, n=40,
                dataset="raccoon:test")
    assert format_score(det) == "map50_95 0.007574  map50 0.01962  lamr 0.9912  (n=40, raccoon:test)"
    sr = Score("psnr", 31.406, metrics={"psnr": 31.406, "ssim": 0.88264}, n=5, dataset="Set5 x3")
    assert format_score(sr) == "psnr 31.41 dB  ssim 0.8826  (n=5, Set5 x3)"
    assert format_score(Score("top1", 83.2, metrics={"top1": 83.2}, n=10)) == "top1 83.20 %  (n=10, )"


@pytest.mark.parametrize("how", [["prune", "--granularity", "kernel", "--ratio", "0.6", "--no-latency"],
                                 ["quantize", "--bits", "3"]])
def test_training_a_compressed_file_keeps_its_compression(how: list[str], trained_lenet: Path, tmp_path: Path) -> None:
    """`slimcnn train file:model.slimk` trained the removed kernels back (0 % zero after 20 steps; prune's hint
    suggested exactly that command) and `train file:model.slim` the codebooks away. The fine-tune now keeps what
    the file holds, and the trained model is written in the same format, decoding to its model.pt."""
    from slimcnn.models import load_model

    made = tmp_path / "made"
    assert main([how[0], f"file:{trained_lenet}", *how[1:], "--out", str(made)]) == 0
    compact = "model.slimk" if how[0] == "prune" else "model.slim"
    trained = tmp_path / "trained"
    assert main(["train", f"file:{made / compact}", "--task", "classification", "--data", "digits", "--steps", "20",
                 "--lr", "0.05", "--out", str(trained)]) == 0
    before = load_model(f"file:{made / compact}").model
    after = load_model(f"file:{trained / 'model.pt'}").model
    assert not all(torch.equal(a, b) for a, b in zip(before.state_dict().values(), after.state_dict().values(),
                                                      strict=True)), "it did not train"
    for name, m in after.named_modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)) and m.weight.dim() >= 2:
            w, w0 = m.weight.detach(), before.get_submodule(name).weight.detach()
            assert torch.equal(w[w0 == 0], torch.zeros_like(w[w0 == 0])), name  # removed stays removed
            if how[0] == "quantize":
                assert w[w != 0].unique().numel() <= 2**3, name  # codebooks kept
    details = json.loads((trained / "result.json").read_text())["details"]
    assert details[compact.removeprefix("model.")]["decodes_to_model_pt"]
    again = load_model(f"file:{trained / compact}").model
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), after.state_dict().values(), strict=True))
