"""Runs are transactions: one result.json schema, manifest-checked re-runs, nothing half-written."""

from __future__ import annotations

import errno
import hashlib
import json
from pathlib import Path

import pytest
import torch

from slimcnn.cli import main
from slimcnn.models import load_model, save_model

TRAIN = ["train", "slimcnn:lenet5", "--task", "classification", "--data", "digits", "--steps", "6", "--limit", "50"]
PRUNE = ["prune", "slimcnn:tiny_cnn", "--ratio", "0.3", "--no-latency"]


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _errors(err: str) -> list[str]:
    return [line for line in err.splitlines() if line and not line.startswith(("note:", "warning:"))]


def test_result_json_schema_and_artifact_hashes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "p"
    assert main([*PRUNE, "--out", str(out), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["_type"] == "RunResult" and res["schema"] == 1 and res["command"] == "prune"
    assert {"before", "after", "plan", "checks", "met", "options", "details", "environment", "artifacts"} <= res.keys()
    assert res["plan"]["_type"] == "Plan" and res["environment"]["torch"] == torch.__version__
    files = {a["path"]: a for a in res["artifacts"]}
    assert {"model.pt", "model.onnx", "plan.json"} <= files.keys() and "result.json" not in files
    for path, a in files.items():
        data = (out / path).read_bytes()
        assert a["bytes"] == len(data) and a["sha256"] == hashlib.sha256(data).hexdigest()
    assert json.loads((out / "manifest.json").read_text())["command"] == "prune"
    assert not (tmp_path / ".p.slimcnn-partial").exists()


def test_other_options_are_refused_force_replaces(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "t"
    assert main([*TRAIN, "--lr", "0.05", "--out", str(out)]) == 0
    before = _snapshot(out)
    capsys.readouterr()
    assert main([*TRAIN, "--lr", "0.1", "--out", str(out)]) == 2  # was: 0 steps trained, new --lr recorded
    (line,) = _errors(capsys.readouterr().err)
    assert "--lr: 0.05 then 0.1" in line and "--force" in line and "--resume" in line
    assert _snapshot(out) == before
    assert main([*TRAIN, "--lr", "0.1", "--out", str(out), "--force", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["options"]["lr"] == 0.1 and res["details"]["train"]["steps"] == 6
    assert main([*TRAIN, "--lr", "0.2", "--out", str(out), "--resume"]) == 0  # continues, and says what it reuses
    assert "--resume: --out was made with other options (--lr: 0.1 then 0.2)" in capsys.readouterr().err
    assert main([*TRAIN, "--lr", "0.1", "--out", str(out), "--force", "--resume"]) == 2
    assert "one of them" in capsys.readouterr().err


def test_the_same_command_again_reruns(tmp_path: Path) -> None:
    out = tmp_path / "p"
    assert main([*PRUNE, "--out", str(out)]) == 0
    first = json.loads((out / "result.json").read_text())["artifacts"]
    assert main([*PRUNE, "--out", str(out)]) == 0
    assert json.loads((out / "result.json").read_text())["artifacts"] == first


def test_a_foreign_folder_is_never_replaced(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    for extra in ([], ["--force"]):
        assert main([*PRUNE, "--out", str(out), *extra]) == 2
        assert "did not write" in capsys.readouterr().err
    assert (out / "notes.txt").read_text() == "keep me" and len(list(out.iterdir())) == 1


def test_full_disk_leaves_out_as_it_was(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "deep" / "p"
    assert main([*PRUNE, "--out", str(out)]) == 0
    before = _snapshot(out)
    import slimcnn.measure

    def no_space(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(slimcnn.measure, "export_onnx", no_space)
    capsys.readouterr()
    assert main([*PRUNE, "--out", str(out), "--force"]) == 2
    (line,) = _errors(capsys.readouterr().err)
    assert "No space left on device" in line and "--out" in line
    assert _snapshot(out) == before
    assert sorted(p.name for p in out.parent.iterdir()) == ["p"]  # no staging folder left behind
    fresh = tmp_path / "new" / "q"
    assert main([*PRUNE, "--out", str(fresh)]) == 2
    assert not (tmp_path / "new").exists()  # no empty folders either
    capsys.readouterr()


def test_train_seed_seeds_the_initial_weights(tmp_path: Path) -> None:
    for name, seed in (("a", "3"), ("b", "3"), ("c", "4")):
        assert main([*TRAIN, "--seed", seed, "--out", str(tmp_path / name)]) == 0
    w = {n: load_model(f"file:{tmp_path / n / 'model.pt'}").model.state_dict() for n in "abc"}
    assert all(torch.equal(w["a"][k], w["b"][k]) for k in w["a"])
    assert not all(torch.equal(w["a"][k], w["c"][k]) for k in w["a"])


def test_older_prune_plans_still_replay(tmp_path: Path) -> None:
    src = tmp_path / "net.pt"
    save_model(load_model("slimcnn:tiny_cnn", seed=1), src)
    out = tmp_path / "p"
    assert main(["prune", f"file:{src}", "--ratio", "0.5", "--no-latency", "--out", str(out)]) == 0
    plan = json.loads((out / "plan.json").read_text())
    legacy = tmp_path / "legacy.json"
    legacy.write_text(json.dumps(plan["steps"][0]["params"]))  # the v1 PrunePlan file format
    assert main(["apply", str(legacy), f"file:{src}", "--no-latency", "--out", str(tmp_path / "a")]) == 0
    a = load_model(f"file:{out / 'model.pt'}").model.state_dict()
    b = load_model(f"file:{tmp_path / 'a' / 'model.pt'}").model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_write_run_from_python(tmp_path: Path) -> None:
    from slimcnn.run import Plan, RunResult, read_result, write_run

    out = write_run(tmp_path / "r", RunResult("custom", "slimcnn:tiny_cnn", plan=Plan(source="slimcnn:tiny_cnn")))
    res = read_result(out)
    assert res["command"] == "custom" and [a["path"] for a in res["artifacts"]] == ["plan.json"]


def test_train_records_the_classes_it_was_trained_on(tmp_path: Path) -> None:
    assert main([*TRAIN, "--out", str(tmp_path / "t")]) == 0
    info = load_model(f"file:{tmp_path / 't' / 'model.pt'}").info
    assert info.classes is not None and len(info.classes) == 10 and info.pretrained


def test_a_second_run_on_the_same_out_is_refused_while_the_first_writes(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import subprocess
    import sys

    out = tmp_path / "p"
    # another process holds a RunDir on --out (as a long prune or train would) until we close its stdin
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys\nfrom slimcnn.run import RunDir, Manifest\n"
         f"with RunDir({str(out)!r}, Manifest.of('prune', model='x')):\n"
         "    print('in', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "in"
        assert main([*PRUNE, "--out", str(out)]) == 2
        (line,) = _errors(capsys.readouterr().err)
        assert f"being written by another slimcnn run (pid {holder.pid})" in line and "another --out" in line
    finally:
        holder.communicate("")
    assert holder.returncode == 0 and (out / "manifest.json").is_file()
    assert main([*PRUNE, "--out", str(out), "--force"]) == 0  # the lock went with the first run
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p"]  # no lock file left behind


def test_commands_without_shared_work_refuse_torchrun_on_every_rank(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")  # as torchrun sets it; no rank may wait on a collective the others skip
    assert main([*PRUNE, "--out", str(tmp_path / "p")]) == 2
    (line,) = _errors(capsys.readouterr().err)
    assert "slimcnn prune does not run under torchrun yet (only train and search do)" in line
    assert not any(tmp_path.iterdir())


def test_an_sr_models_model_onnx_takes_any_image_size(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Every command's model.onnx was fixed at the 32x32 example, so a super-resolution net's file could not run
    a photo (`evaluate file:model.onnx` refused). Now it takes any size and scores what model.pt scores."""
    import onnx

    out = tmp_path / "p"
    assert main(["prune", "slimcnn:tiny_sr", "--task", "sr", "--data", "photos", "--ratio", "0.25", "--limit", "2",
                 "--no-latency", "--out", str(out)]) == 0
    dims = onnx.load(str(out / "model.onnx")).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["batch", 1, "height", "width"]
    scores = []
    for name in ("model.onnx", "model.pt"):
        capsys.readouterr()
        assert main(["evaluate", f"file:{out / name}", "--data", "photos", "--limit", "2", "--json"]) == 0
        scores.append(json.loads(capsys.readouterr().out)["value"])
    assert scores[0] == pytest.approx(scores[1], abs=1e-3)
    classifier = tmp_path / "c"
    assert main([*PRUNE, "--out", str(classifier)]) == 0  # a classifier's file keeps the example's size
    dims = onnx.load(str(classifier / "model.onnx")).graph.input[0].type.tensor_type.shape.dim
    assert all(d.dim_value for d in dims)


def test_a_model_onnx_that_fails_its_parity_check_is_left_out_not_the_run(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """model.onnx is a convenience copy: a graph ONNX Runtime runs differently from torch (an untrained detector's
    tied scores, here a forward that changes under export) used to abort the run at its end, losing model.pt."""
    (tmp_path / "nets.py").write_text(
        "import torch\n"
        "from torch import nn\n"
        "class Net(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.a, self.b = nn.Conv2d(3, 8, 3), nn.Conv2d(8, 4, 3)\n"
        "    def forward(self, x):\n"
        "        y = self.b(torch.relu(self.a(x)))\n"
        "        return y + 1 if torch.onnx.is_in_onnx_export() else y\n"
        "def build():\n"
        "    return Net()\n"
    )
    out = tmp_path / "p"
    with caplog.at_level("WARNING"):
        assert main(["prune", f"python:{tmp_path / 'nets.py'}:build", "--input", "1x3x16x16", "--ratio", "0.5",
                     "--no-latency", "--out", str(out)]) == 0
    assert (out / "model.pt").is_file() and not (out / "model.onnx").exists()
    (record,) = [r for r in caplog.records if "model.onnx not written" in r.getMessage()]
    assert record.levelname == "WARNING" and "diverges from torch" in record.getMessage()
    assert "model.pt holds the result" in record.getMessage()
    assert load_model(f"file:{out / 'model.pt'}").model.a.out_channels == 4
