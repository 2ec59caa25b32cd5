"""``benchmarks/sr_liu2018.py``: a run saved with ``--save-models`` merges with ``--import``, timed here."""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import pytest

from slimcnn.paths import shared_path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "sr_liu2018.py"


def _run(monkeypatch: pytest.MonkeyPatch, *argv: str) -> None:
    monkeypatch.setattr(sys, "argv", [str(SCRIPT), *argv])
    runpy.run_path(str(SCRIPT), run_name="__main__")


def test_saved_run_imports_with_latency_measured_here(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    sr = shared_path("sr")
    if sr is None or shared_path("weights", "fsrcnn") is None:
        pytest.skip("needs ../shared/data/sr and weights/fsrcnn (benchmark data); absent here")
    away, home = tmp_path / "gpu_run", tmp_path / "results"
    common = ["--model", "fsrcnn", "--data", str(sr), "--threads", "1"]
    _run(monkeypatch, *common, "--rows", "ur", "--retrain-steps", "0", "--limit", "1", "--test-limit", "1",
         "--runs", "0", "--out", str(away), "--save-models", str(away / "models.pt"))
    saved = json.loads((away / "sr_liu2018.json").read_text())["fsrcnn"]
    assert len(saved["rows"]) == 3 and all("latency_ratio" not in r for r in saved["rows"])

    _run(monkeypatch, *common, "--import", str(away), "--runs", "3", "--out", str(home))
    merged = json.loads((home / "sr_liu2018.json").read_text())["fsrcnn"]
    assert [r["row"] for r in merged["rows"]] == [r["row"] for r in saved["rows"]]
    assert all(r["latency_ratio"] > 0 for r in merged["rows"])
    run = merged["runs"][0]
    assert run["baseline"]["latency_ms"] > 0 and run["latency_machine"]["threads"] == 1
    assert "latency timed on" in (home / "sr_liu2018.md").read_text()

    (away / "models.pt").unlink()
    with pytest.raises(FileNotFoundError):
        _run(monkeypatch, *common, "--import", str(away), "--out", str(home))
