"""``slimcnn search`` under torchrun: 2 gloo ranks search like one process and rank 0 alone writes --out;
rank 0's resume state (trial log, sweep file) is what every rank resumes from."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from slimcnn.cli import main
from slimcnn.search._trials import TrialLog
from slimcnn.search.sensitivity import SensitivityPoint, SensitivityTable, sensitivity_sweep
from slimcnn.train import world
from slimcnn.train._distributed import on_local_ranks

STRATEGIES = {
    # a latency runtime without a latency limit: every point and the result are timed (on rank 0) but
    # the timings decide nothing, so the runs stay comparable on a loaded machine
    "greedy": ["--macs", "0.5x", "--max-drop", "3", "--runtime", "onnxruntime", "--threads", "1"],
    "cpo": ["--strategy", "cpo", "--criterion", "l1", "--max-drop", "3"],
    "iterative": ["--strategy", "iterative", "--iterations", "2", "--amounts", "0.25,0.5", "--max-drop", "100"],
}


def _args(lenet: Path, strategy: str, out: Path) -> list[str]:
    return ["search", f"file:{lenet}", "--task", "classification", "--data", "digits", "--finetune-steps", "4",
            "--limit", "120", *STRATEGIES[strategy], "--out", str(out)]


def _torchrun(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m", "slimcnn", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=cwd,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


def _run(out: Path) -> dict[str, Any]:
    return {"result": json.loads((out / "result.json").read_text()), "plan": json.loads((out / "plan.json").read_text()),
            "points": json.loads((out / "pareto.json").read_text())["points"],
            "state": torch.load(out / "model.pt", map_location="cpu", weights_only=False)}


def _weights(saved: Any) -> dict[str, torch.Tensor]:
    model = saved["model"] if isinstance(saved, dict) and "model" in saved else saved
    return model.state_dict() if hasattr(model, "state_dict") else saved["state_dict"]


@pytest.mark.slow
@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_search_on_two_ranks_gives_the_search_of_one_process(
        trained_lenet: Path, strategy: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(_args(trained_lenet, strategy, tmp_path / "one")) == 0
    one_err = capsys.readouterr().err
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    done = _torchrun(_args(trained_lenet, strategy, tmp_path / "two"), cwd)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("wrote ") == 1  # rank 1 prints no summary
    points = one_err.count("  point ")  # progress lines: one per greedy point or CPO trial (iterative: none)
    assert done.stderr.count("  point ") == points and (points > 0 or strategy == "iterative")  # rank 1 prints none
    assert not any(cwd.iterdir()) and sorted(p.name for p in tmp_path.iterdir()) == ["cwd", "one", "two"]
    one, two = _run(tmp_path / "one"), _run(tmp_path / "two")
    assert two["result"]["details"]["assignment"] == one["result"]["details"]["assignment"]
    assert two["plan"]["steps"] == one["plan"]["steps"]  # the same channels removed
    # DDP fine-tunes (half a batch per rank, gradients averaged) equal one process's to float rounding
    assert [p["assignment"] for p in two["points"]] == [p["assignment"] for p in one["points"]]
    assert [p["metric"] for p in two["points"]] == pytest.approx([p["metric"] for p in one["points"]], abs=1e-9)
    assert two["result"]["after"]["score"]["value"] == pytest.approx(one["result"]["after"]["score"]["value"], abs=1e-9)
    wa, wb = _weights(one["state"]), _weights(two["state"])
    assert wa.keys() == wb.keys()
    assert max(float((wa[k].double() - wb[k].double()).abs().max()) for k in wa) < 1e-4
    if strategy == "greedy":  # timed on rank 0 only, then shared: the result holds rank 0's timings
        assert two["result"]["after"]["cost"]["latency"]["median_ms"] > 0


@pytest.mark.slow
def test_rank_0_refusing_out_stops_every_rank_with_one_line(trained_lenet: Path, tmp_path: Path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("user file")
    done = _torchrun(_args(trained_lenet, "greedy", out), tmp_path)
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "--out" in errors[0], done.stderr[-3000:]
    assert done.returncode != 0 and sorted(p.name for p in out.iterdir()) == ["notes.txt"]


_toy_spec = importlib.util.spec_from_file_location("sweep_toy", Path(__file__).with_name("sweep_toy.py"))
assert _toy_spec is not None and _toy_spec.loader is not None
sweep_toy = importlib.util.module_from_spec(_toy_spec)
_toy_spec.loader.exec_module(sweep_toy)


def _trial_log_on_ranks(path: Path) -> list[Any]:
    """Each rank's view of a trial log that only rank 0 can see (its path is None on rank 1)."""

    def read() -> Any:
        log = TrialLog(path if world()[0] == 0 else None, {"metric": 1.0})
        log.put("point:b", {"metric": 2.0})  # rank 0 saves, the other rank only keeps it in memory
        from slimcnn.train import all_gather_objects

        return all_gather_objects((sorted(log.records), log.payloads.get("point:a")))

    return on_local_ranks(2, read)


def test_every_rank_resumes_from_the_trial_log_rank_0_read(tmp_path: Path) -> None:
    path = tmp_path / "search-trials.pt"
    first = TrialLog(path, {"metric": 1.0})
    first.put("point:a", {"metric": 0.5}, torch.nn.Linear(2, 2))
    ranks = _trial_log_on_ranks(path)
    assert [r[0] for r in ranks] == [["point:a", "point:b"]] * 2  # rank 1 resumed without reading the file
    assert all(isinstance(r[1], torch.nn.Linear) for r in ranks)  # with the payloads
    saved = torch.load(path, weights_only=False)
    assert sorted(saved["records"]) == ["point:a", "point:b"]  # and rank 0 kept writing it


def test_every_rank_skips_the_sweep_points_rank_0_read(tmp_path: Path) -> None:
    full = sweep_toy.sweep()
    resume = tmp_path / "sensitivity.json"
    first_knob = full.knobs()[0]
    partial = SensitivityTable(full.metric, full.baseline, full.higher_is_better, full.base_params, full.base_macs,
                               full.base_weight_bytes, [p for p in full.points if p.knob == first_knob])
    partial.points = [SensitivityPoint(**{**vars(p), "metric": -1.0}) for p in partial.points]  # marks the resumed
    partial.save(resume)
    model = sweep_toy.net()
    task = sweep_toy.ToyTask(model)

    def sweep() -> Any:
        from slimcnn.train import all_gather_objects

        table = sensitivity_sweep(model, task, sweep_toy.KNOBS, sweep_toy.zero_filters, progress=False,
                                  resume=resume if world()[0] == 0 else None)
        return all_gather_objects([(p.knob, p.amount, p.metric) for p in table.points])

    tables = on_local_ranks(2, sweep)
    assert tables[0] == tables[1]  # rank 1 has no resume path, yet skips the same points
    resumed = [p for p in tables[0] if p[0] == first_knob]
    assert resumed and all(metric == -1.0 for _, _, metric in resumed)
    assert [p[:2] for p in tables[0]] == [(p.knob, p.amount) for p in full.points]


def test_a_resumed_search_on_two_ranks_replays_every_trial_from_rank_0s_log(trained_lenet: Path, tmp_path: Path) -> None:
    from slimcnn.models import load_model
    from slimcnn.search import Budget, SearchSpec, search
    from slimcnn.tasks import make_task
    from slimcnn.train import all_gather_objects

    lenet = load_model(f"file:{trained_lenet}")
    task = make_task("classification", "digits", info=lenet.info)
    spec = SearchSpec(finetune_steps=2, limit=60, finetune={"batch_size": 32})
    budget = Budget.from_options(max_drop="2", macs="0.3x")
    log = tmp_path / "search-trials.pt"
    one = search(lenet.model, task, budget, spec, progress=False, trials=str(log))  # as a killed run left it
    tuned: list[int] = []
    real = task.finetune

    def counted(*args: Any, **kwargs: Any) -> Any:
        tuned.append(1)
        return real(*args, **kwargs)

    task.finetune = counted  # type: ignore[method-assign]

    def resumed() -> Any:
        res = search(lenet.model, task, budget, spec, progress=False, trials=str(log) if world()[0] == 0 else None)
        return all_gather_objects((len(tuned), [(p["assignment"], p["metric"]) for p in res.tried]))

    ranks = on_local_ranks(2, resumed)
    points = [(p["assignment"], p["metric"]) for p in one.tried]
    assert ranks[0][1] == ranks[1][1] == points and len(points) >= 2
    assert ranks[0][0] == ranks[1][0] == 1  # only the final model's fine-tune ran, on both ranks (DDP)
