"""``SearchSpec.recovery`` / ``--recovery``: the search's fine-tuning distils from its ORIGINAL model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from slimcnn.cli import main
from slimcnn.errors import ConfigError
from slimcnn.models import load_model
from slimcnn.search import Budget, SearchSpec, search
from slimcnn.tasks import make_task


class Recorder:
    """A real task that records the options of every fine-tune."""

    def __init__(self, task: Any) -> None:
        self.task, self.calls = task, []  # type: ignore[var-annotated]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.task, name)

    def finetune(self, model: nn.Module, steps: int, **options: Any) -> Any:
        self.calls.append((model, options))
        return self.task.finetune(model, steps, **options)


def test_recovery_is_validated() -> None:
    with pytest.raises(ConfigError, match="--recovery must be one of plain, kd"):
        SearchSpec(recovery="distill")


def test_cli_refuses_a_bad_recovery_before_loading(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "o"
    rc = main(["search", f"file:{tmp_path / 'absent.pt'}", "--task", "classification", "--data", "digits",
               "--max-drop", "1", "--recovery", "distill", "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and "--recovery" in err and "absent.pt" not in err and not out.exists()


@pytest.mark.parametrize("recovery", ["plain", "kd"])
def test_search_finetunes_with_the_original_as_teacher(recovery: str) -> None:
    torch.manual_seed(0)
    loaded = load_model("slimcnn:lenet5")
    task = Recorder(make_task("classification", "digits", info=loaded.info, batch_size=32))
    spec = SearchSpec(amounts=(0.5,), finetune_steps=2, limit=60, max_evaluations=2, recovery=recovery,
                      finetune={"lr": 0.01})
    res = search(loaded.model, task, Budget.from_options(max_drop="100"), spec, progress=False)
    assert task.calls and res.model is not loaded.model
    for model, options in task.calls:
        assert model is not loaded.model
        if recovery == "kd":
            assert options["teacher"] is loaded.model and options["recovery"] == "kd"
        else:
            assert "teacher" not in options


def test_a_point_nothing_was_done_to_is_not_fine_tuned(trained_lenet: Path) -> None:
    """Fine-tuning an untouched model can only move it off its optimum (an untouched CIFAR net lost 1.2 points in
    20 steps inside a compress stage): a point with no knob applied scores as the baseline, exactly."""
    loaded = load_model(f"file:{trained_lenet}")
    task = Recorder(make_task("classification", "digits", info=loaded.info, batch_size=32))
    spec = SearchSpec(amounts=(0.25, 0.5), finetune_steps=2, limit=60, finetune={"lr": 0.5})
    # a drop no pruned point keeps: the search comes down to its empty prefix
    res = search(loaded.model, task, Budget.from_options(max_drop="0.001", macs="0.7x"), spec, progress=False)
    untouched = [p for p in res.tried if not any(p["assignment"].values())]
    touched = [p for p in res.tried if any(p["assignment"].values())]
    assert untouched and touched
    assert all(p["drop"] == 0 for p in untouched)
    # every touched point is fine-tuned, and the chosen model unless it is untouched; never an untouched one
    assert len(task.calls) == len(touched) + bool(any(res.assignment.values()))
