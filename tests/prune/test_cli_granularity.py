"""``slimcnn prune --granularity kernel|grouped``: compact file, grouped convs, unchanged output shapes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from slimcnn.cli import main
from slimcnn.models import load_model


def test_kernel_granularity_writes_a_smaller_compact_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "k"
    rc = main(["prune", "slimcnn:vdsr", "--granularity", "kernel", "--criterion", "sparsity", "--ratio", "0.5",
               "--no-latency", "--out", str(out), "--json"])
    assert rc == 0
    result = json.loads(capsys.readouterr().out)
    cf = result["details"]["slimk"]
    assert cf["kernels_kept"] < cf["kernels_total"] and cf["decodes_to_model_pt"] and cf["rebuilds_architecture"]
    assert cf["file_bytes"] < 0.7 * result["before"]["cost"]["weight_bytes"]
    assert result["after"]["cost"]["weight_bytes"] == cf["weight_bytes"]  # judged on the file written
    assert (out / "model.slimk").exists() and json.loads((out / "plan.json").read_text())["steps"][0]["transform"] == "prune_kernels"
    pruned = load_model(f"file:{out / 'model.pt'}").model
    assert pruned(torch.rand(1, 1, 24, 24)).shape == (1, 1, 24, 24)


def test_a_kernel_pruned_file_stores_the_written_model_and_loads_without_its_source(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """model.slimk was written before emptied channels were dropped (it rebuilt the source's widths, unlike model.pt)
    and rebuilt its architecture from the source, so a `file:` model's .slimk failed to load once that file moved
    (or from another directory: the path was relative). It now records the written model's architecture."""
    src = tmp_path / "src"
    assert main(["train", "slimcnn:espcn", "--task", "sr", "--data", "photos", "--steps", "2", "--out", str(src)]) == 0
    monkeypatch.chdir(tmp_path)
    assert main(["prune", "file:src/model.pt", "--granularity", "kernel", "--ratio", "0.6", "--no-latency",
                 "--out", "k"]) == 0
    again = tmp_path / "again"
    assert main(["apply", "k/plan.json", "file:src/model.pt", "--no-latency", "--out", str(again)]) == 0
    (src / "model.pt").unlink()
    monkeypatch.chdir(again)
    x = torch.rand(1, 1, 20, 20)
    for folder in (tmp_path / "k", again):
        result = json.loads((folder / "result.json").read_text())
        capsys.readouterr()
        assert main(["analyze", f"file:{folder / 'model.slimk'}", "--json", "--no-latency"]) == 0
        stored_cost = json.loads(capsys.readouterr().out)  # the summary counts the kept kernels, as analyze does
        assert (result["after"]["cost"]["params"], result["after"]["cost"]["macs"]) == (
            stored_cost["params"], stored_cost["macs"])
        written = load_model(f"file:{folder / 'model.pt'}")
        stored = load_model(f"file:{folder / 'model.slimk'}")
        assert [p.shape for p in stored.model.parameters()] == [p.shape for p in written.model.parameters()]
        assert sum(p.numel() for p in written.model.parameters()) < 21_284  # emptied channels were dropped
        assert torch.equal(stored.model(x), written.model(x))
        assert stored.info.task == "sr" and stored.info.scale == 2 and stored.info.pretrained


def test_grouped_granularity_halves_macs_of_the_grouped_layers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "g"
    rc = main(["prune", "slimcnn:vdsr", "--granularity", "grouped", "--groups", "2", "--no-latency",
               "--out", str(out), "--json"])
    assert rc == 0
    result = json.loads(capsys.readouterr().out)
    assert 0.45 < result["after"]["cost"]["macs"] / result["before"]["cost"]["macs"] < 0.6
    assert result["details"]["grouped"]["max_abs_error"] < 1e-3
    grouped = load_model(f"file:{out / 'model.pt'}").model
    assert any(getattr(m, "groups", 1) == 2 for m in grouped.modules())


def test_kernel_granularity_rejects_other_criteria(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["prune", "slimcnn:vdsr", "--granularity", "kernel", "--criterion", "chip", "--ratio", "0.5",
               "--out", str(tmp_path / "x")])
    assert rc == 2 and "l1 or sparsity" in capsys.readouterr().err


@pytest.mark.parametrize("how", [["--granularity", "kernel", "--ratio", "0.5"], ["--granularity", "grouped"]])
def test_kernel_and_grouped_plans_replay_bit_identically(tmp_path: Path, how: list[str]) -> None:
    out, again = tmp_path / "p", tmp_path / "a"
    assert main(["prune", "slimcnn:vdsr", *how, "--no-latency", "--out", str(out)]) == 0
    assert main(["apply", str(out / "plan.json"), "slimcnn:vdsr", "--no-latency", "--out", str(again)]) == 0
    a = load_model(f"file:{out / 'model.pt'}").model.state_dict()
    b = load_model(f"file:{again / 'model.pt'}").model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
