"""``slimcnn demo --quick`` runs the whole flow on built-in data and reports measured numbers."""

from __future__ import annotations

import json
from pathlib import Path

from slimcnn.cli import main


def test_quick_demo_runs_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out), "--json"]) == 0
    report = json.loads((out / "demo.json").read_text())
    cls, mem, sr = report["classification"], report["memory"], report["super_resolution"]
    assert cls["macs_after"] <= cls["macs_before"] and cls["latency_ms_before"] > 0
    assert mem["payload_bytes"] < mem["file_bytes"] < mem["fp32_bytes"]
    assert sr["metric"] == "psnr" and sr["macs_after"] <= sr["macs_before"]
    for section in ("classification-search", "sr-search"):
        assert (out / section / "result.json").exists() and (out / section / "model.onnx").exists()
    assert (out / "memory" / "model.slim").exists()


def test_demo_never_replaces_another_commands_run(tmp_path: Path, capsys) -> None:
    out = tmp_path / "p"
    assert main(["prune", "slimcnn:tiny_cnn", "--ratio", "0.3", "--no-latency", "--out", str(out)]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert main(["demo", "--quick", "--out", str(out)]) == 2
    assert "holds a `prune` run" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
