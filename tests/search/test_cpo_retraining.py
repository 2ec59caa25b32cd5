"""CPO on a real model returns the model it measured for the accepted state; with ``accumulate`` each
trial prunes the retrained model of the state it extends (the paper), else a copy of the original."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from slimcnn.models import load_model
from slimcnn.run import apply_plan
from slimcnn.search import Budget, SearchSpec, search
from slimcnn.search.plan import search_plan
from slimcnn.tasks import make_task


class StepCounter:
    """A real task that counts fine-tuning steps per model object and stamps each model with its total."""

    def __init__(self, task: Any) -> None:
        self.task = task

    def __getattr__(self, name: str) -> Any:
        return getattr(self.task, name)

    def finetune(self, model: nn.Module, steps: int, **options: Any) -> Any:
        model.trained_steps = getattr(model, "trained_steps", 0) + steps  # type: ignore[assignment]
        return self.task.finetune(model, steps, **options)


@pytest.mark.parametrize("accumulate", [True, False])
def test_cpo_returns_the_measured_model(accumulate: bool) -> None:
    torch.manual_seed(0)
    loaded = load_model("slimcnn:lenet5")
    task = StepCounter(make_task("classification", "digits", info=loaded.info, batch_size=32))
    spec = SearchSpec(strategy="cpo", criterion="l1", finetune_steps=2, limit=60, accumulate=accumulate)
    res = search(loaded.model, task, Budget.from_options(max_drop="100"), spec, progress=False)
    log = res.strategy_log
    accepted = [s for s in log["steps"] if s["action"] in ("raise", "switch", "step_back", "budget")]
    assert res.assignment and accepted
    # accumulate: retrained once per trial along its chain; else the 2 steps of its own trial, not retrained again
    steps = res.model.trained_steps  # type: ignore[attr-defined]
    assert steps > spec.finetune_steps if accumulate else steps == spec.finetune_steps
    assert not hasattr(loaded.model, "trained_steps")  # the original is never trained
    # its plans rebuild its structure from the original
    plan = search_plan(loaded.model, spec, res, task.example_input(), source=loaded.source)
    replay = apply_plan(loaded.model, plan, task.example_input())
    shapes = {n: p.shape for n, p in res.model.named_parameters()}
    assert {n: p.shape for n, p in replay.named_parameters()} == shapes
    assert len(log["plans"]) >= len(res.assignment) if accumulate else len(log["plans"]) == 1
