"""``slimcnn quantize`` end to end on a small zoo model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from slimcnn.cli import main


def test_cli_json_and_outputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "q"
    rc = main(["quantize", "slimcnn:lenet5", "--bits", "conv*=6,fc*=2", "--prune", "fc*=3", "--codebook", "fp16",
               "--huffman", "--out", str(out), "--json"])
    assert rc == 0
    obj = json.loads(capsys.readouterr().out)
    for name in ("model.slim", "model.pt", "model.onnx", "result.json"):
        assert (out / name).is_file()
    assert obj["file_bytes"] == (out / "model.slim").stat().st_size
    assert obj["payload_bytes"] == pytest.approx(sum(r["bits"] * r["kept"] / 8 for r in obj["layers"]))
    assert {r["name"] for r in obj["layers"]} == {"conv1", "conv2", "fc1", "fc2", "fc3"}
    assert json.loads((out / "result.json").read_text())["original_bytes"] == obj["original_bytes"]


def test_cli_with_task_reports_metric(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["quantize", "slimcnn:lenet5", "--bits", "4", "--task", "classification", "--data", "digits",
               "--limit", "64", "--no-onnx", "--out", str(tmp_path / "q"), "--json"])
    assert rc == 0
    obj = json.loads(capsys.readouterr().out)
    assert obj["before"]["metric"] == "top1" and obj["drop"] is not None


@pytest.mark.parametrize(
    ("args", "msg"),
    [
        (["--bits", "conv9=4"], "matches no conv/linear layer"),
        (["--bits", "conv*=20"], "--bits"),
        (["--weight-bytes", "4MB"], "--task"),
        (["--bits", "4", "--weight-bytes", "4 parsecs"], "byte size"),
    ],
)
def test_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], msg: str) -> None:
    rc = main(["quantize", "slimcnn:lenet5", *args, "--out", str(tmp_path / "q")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert msg in err[-1] and err[-1].startswith("error:")
