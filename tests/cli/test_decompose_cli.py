"""``slimcnn decompose``: writes a loadable, faster-or-equal model and a per-layer report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from slimcnn.cli import main


def test_decompose_all_writes_model_and_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "dec"
    rc = main(["decompose", "slimcnn:resnet20", "--all", "--rank-multiple", "4", "--confirm-runs", "3", "--e2e-runs", "3",
               "--threads", "1", "--exclude", "layer2.*", "--exclude", "layer3.*", "--out", str(out), "--json"])
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    assert report["replaced"], "with --all every shrinking layer is replaced"
    assert not any(name.startswith(("layer2.", "layer3.")) for name in report["replaced"])  # --exclude honoured
    assert report["after"]["macs"] < report["before"]["macs"]
    assert all(r["method"] in ("svd", "tucker2", "-") for r in report["layers"])
    timed = [r for r in report["layers"] if r["replaced"]]
    assert all(r["ms_before"] > 0 and r["ms_after"] > 0 for r in timed), "--all still times each replaced layer"
    slower = {r["layer"] for r in timed if r["ms_after"] >= r["ms_before"]}
    assert set(report["slower_layers"]) == slower
    assert report["threads"] == 1 and report["after"]["latency"]["n"] == 3 and report["speedup"] > 0
    assert (out / "model.onnx").exists() and json.loads((out / "result.json").read_text())["replaced"] == report["replaced"]
    from slimcnn.models import load_model

    reloaded = load_model(f"file:{out / 'model.pt'}")
    assert reloaded.model(torch.randn(1, 3, 32, 32)).shape == (1, 10)


def test_decompose_rejects_bad_freeze(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    rc = main(["decompose", "slimcnn:resnet20", "--freeze", "sometimes", "--out", str(tmp_path / "x")])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--freeze" in err[0]
