"""Resume inside a search: a search killed after some trials re-runs only the rest and ends where an
uninterrupted search ends (greedy's measured points, CPO's steps, iterative rounds)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from slimcnn.models import load_model
from slimcnn.search import Budget, SearchSpec, search
from slimcnn.tasks import make_task

SPECS = {
    "greedy": SearchSpec(finetune_steps=2, limit=60, finetune={"batch_size": 32}),
    "cpo": SearchSpec(strategy="cpo", criterion="l1", finetune_steps=2, limit=60, finetune={"batch_size": 32}),
    "cpo-accumulate": SearchSpec(strategy="cpo", criterion="l1", finetune_steps=2, limit=60, accumulate=True,
                                 finetune={"batch_size": 32}),
    "iterative": SearchSpec(strategy="iterative", iterations=3, finetune_steps=2, limit=60, params_layers=1,
                            flops_layers=1, amounts=(0.25, 0.5), finetune={"batch_size": 32}),
}
BUDGETS = {"greedy": "3", "cpo": "100", "cpo-accumulate": "100", "iterative": "100"}


class Trials:
    """A real task that counts fine-tunes (one per trial) and stops the search with Ctrl-C at the ``stop_at``-th."""

    def __init__(self, task: Any, stop_at: int | None = None) -> None:
        self.task, self.stop_at, self.finetunes = task, stop_at, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.task, name)

    def finetune(self, model: nn.Module, steps: int, **options: Any) -> Any:
        self.finetunes += 1
        if self.finetunes == self.stop_at:
            raise KeyboardInterrupt
        return self.task.finetune(model, steps, **options)


@pytest.fixture(scope="module")
def lenet() -> Any:
    torch.manual_seed(0)
    return load_model("slimcnn:lenet5")


def _search(lenet: Any, name: str, task: Trials, trials: Path | None) -> Any:
    return search(lenet.model, task, Budget.from_options(max_drop=BUDGETS[name]), SPECS[name], progress=False,
                  trials=str(trials) if trials is not None else None)


def _final_finetunes(name: str) -> int:
    """Fine-tunes after the trials: greedy fine-tunes its chosen assignment once more."""
    return 1 if name == "greedy" else 0


@pytest.mark.parametrize("name", list(SPECS))
def test_killed_search_reruns_only_the_unfinished_trials(lenet: Any, name: str, tmp_path: Path) -> None:
    task = make_task("classification", "digits", info=lenet.info)
    whole = Trials(task)
    reference = _search(lenet, name, whole, None)
    trials = whole.finetunes - _final_finetunes(name)
    assert trials >= 3, "the search must run enough trials to stop one mid-way"
    log = tmp_path / "search-trials.pt"
    finished = trials // 2
    with pytest.raises(KeyboardInterrupt):
        _search(lenet, name, Trials(task, stop_at=finished + 1), log)
    assert log.is_file()
    rerun = Trials(task)
    resumed = _search(lenet, name, rerun, log)
    assert rerun.finetunes == whole.finetunes - finished  # only the unfinished trials are fine-tuned again
    assert resumed.assignment == reference.assignment
    assert resumed.strategy_log == reference.strategy_log
    assert [(p["assignment"], p["metric"]) for p in resumed.tried] == [(p["assignment"], p["metric"]) for p in reference.tried]
    assert resumed.after["score"].value == reference.after["score"].value
    got, want = resumed.model.state_dict(), reference.model.state_dict()
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)


def test_a_log_of_another_baseline_is_ignored(lenet: Any, tmp_path: Path) -> None:
    task = make_task("classification", "digits", info=lenet.info)
    log = tmp_path / "search-trials.pt"
    _search(lenet, "greedy", Trials(task), log)
    spec = SearchSpec(finetune_steps=2, limit=50, finetune={"batch_size": 32})  # another validation subset
    fresh, other = Trials(task), Trials(task)
    search(lenet.model, fresh, Budget.from_options(max_drop="3"), spec, progress=False)
    search(lenet.model, other, Budget.from_options(max_drop="3"), spec, progress=False, trials=str(log))
    assert other.finetunes == fresh.finetunes >= 2  # every point measured anew, none replayed


def test_cli_search_killed_mid_way_resumes_from_its_trials(trained_lenet: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """Ctrl-C during the third measured point keeps the first two in the staging folder; the same command
    measures only the rest and writes the model an uninterrupted search writes."""
    from slimcnn.cli import main
    from slimcnn.search import run as search_run

    args = ["search", f"file:{trained_lenet}", "--task", "classification", "--data", "digits", "--max-drop", "3",
            "--macs", "0.6x", "--finetune-steps", "2", "--limit", "60"]
    calls: list[int] = []
    real = search_run.SearchContext.finetune

    def counted(self: Any, model: nn.Module, assignment: Any = None) -> None:
        calls.append(1)
        if len(calls) == stop_at:
            raise KeyboardInterrupt
        real(self, model, assignment)

    monkeypatch.setattr(search_run.SearchContext, "finetune", counted)
    stop_at = 0
    assert main([*args, "--out", str(tmp_path / "ref")]) == 0
    total = len(calls)
    out, stop_at = tmp_path / "run", 3
    calls.clear()
    assert main([*args, "--out", str(out)]) == 130
    assert (tmp_path / ".run.slimcnn-partial" / "search-trials.pt").is_file() and not out.exists()
    stop_at = 0
    calls.clear()
    assert main([*args, "--out", str(out)]) == 0
    assert len(calls) == total - 2  # the two finished points are not fine-tuned again
    assert not (out / "search-trials.pt").exists()  # transient: dropped at commit
    capsys.readouterr()
    for name in ("result.json", "pareto.json"):
        ref, got = json.loads((tmp_path / "ref" / name).read_text()), json.loads((out / name).read_text())
        for doc in (ref, got):
            doc.pop("seconds", None)
            doc.pop("environment", None)
        assert got.get("points", got.get("details")) == ref.get("points", ref.get("details"))
        assert got.get("after") == ref.get("after")
    a, b = load_model(f"file:{tmp_path / 'ref' / 'model.pt'}").model, load_model(f"file:{out / 'model.pt'}").model
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
