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
