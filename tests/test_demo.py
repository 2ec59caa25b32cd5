"""``slimcnn demo --quick`` runs the whole flow on built-in data and reports measured numbers."""

from __future__ import annotations

import json
from pathlib import Path

from slimcnn.cli import main


def test_quick_demo_runs_end_to_end(tmp_path: Path) -> None:
    import torch

    from slimcnn.measure import profile
    from slimcnn.models import load_model
    from slimcnn.tasks import make_task

    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out), "--json"]) == 0
    report = json.loads((out / "demo.json").read_text())
    tasks = {"classification": lambda info: make_task("classification", "digits", info=info),
             "super_resolution": lambda info: make_task("sr", "photos-train", info=info, scale=2, val_data="photos-val")}
    for name, make in tasks.items():
        row = report[name]
        # the quantities the README quotes
        for key in ("before", "after", "macs_before", "macs_after", "weight_bytes_before", "weight_bytes_after",
                    "latency_ms_before", "latency_ms_after", "activation_bytes_before", "activation_bytes_after"):
            assert isinstance(row[key], (int, float)), key
        folder = out / row["out"]
        assert (folder / "report.html").is_file() and (folder / "result.json").is_file()
        result = json.loads((folder / "result.json").read_text())
        # every check is true of the written artifact, re-measured from the files
        loaded = load_model(f"file:{folder / 'model.pt'}")
        score = make(loaded.info).evaluate(loaded.model)
        cost = profile(loaded.model, torch.zeros(result["plan"]["input_shape"]))
        checks = {c["name"]: c for c in result["checks"]}
        assert score.value == row["after"] == result["after"]["score"]["value"]
        assert checks["macs"]["value"] == cost.macs == row["macs_after"]
        drop = result["before"]["score"]["value"] - score.value
        assert checks["max_drop"]["value"] == drop and checks["max_drop"]["met"] == (drop <= checks["max_drop"]["limit"] + 1e-12)
        assert row["met"] == all(c["met"] for c in checks.values())
    cls = report["classification"]
    assert cls["stages"] == ["prune", "kmeans"] and (out / cls["out"] / "model.slim").is_file()
    assert cls["slim"]["decodes_to_model_pt"] is True


def test_demo_never_replaces_another_commands_run(tmp_path: Path, capsys) -> None:
    out = tmp_path / "p"
    assert main(["prune", "slimcnn:tiny_cnn", "--ratio", "0.3", "--no-latency", "--out", str(out)]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert main(["demo", "--quick", "--out", str(out)]) == 2
    assert "holds a `prune` run" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_the_demo_is_library_code() -> None:
    import subprocess
    import sys

    code = "import sys, slimcnn.demo; print(any(m.startswith('slimcnn.cli') for m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"
