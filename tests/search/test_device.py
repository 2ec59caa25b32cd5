"""``SearchSpec.device``: every fine-tune and evaluation of a search runs where the user asked."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from slimcnn.models import load_model
from slimcnn.search import Budget, SearchSpec, search
from slimcnn.tasks import make_task
from slimcnn.train._loop import _deterministic_cudnn


class DeviceLog:
    """Delegates to a real task, records the device each call asked for, and runs on CPU."""

    def __init__(self, task: Any) -> None:
        self.task = task
        self.calls: list[tuple[str, str]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.task, name)

    def evaluate(self, model: nn.Module, *, limit: int | None = None, device: str = "cpu") -> Any:
        self.calls.append(("evaluate", device))
        return self.task.evaluate(model, limit=limit)

    def finetune(self, model: nn.Module, steps: int, **options: Any) -> Any:
        self.calls.append(("finetune", options.pop("device", "cpu")))
        return self.task.finetune(model, steps, **options)


def test_search_fine_tunes_and_evaluates_on_the_spec_device() -> None:
    torch.manual_seed(0)
    loaded = load_model("slimcnn:lenet5")
    task = DeviceLog(make_task("classification", "digits", info=loaded.info, batch_size=32))
    spec = SearchSpec(strategy="greedy", amounts=(0.5,), finetune_steps=1, limit=40, device="cuda:3")
    search(loaded.model, task, Budget.from_options(max_drop="100"), spec, progress=False)
    kinds = {kind for kind, _ in task.calls}
    assert kinds == {"evaluate", "finetune"}
    assert {device for _, device in task.calls} == {"cuda:3"}


def test_deterministic_cudnn_is_scoped() -> None:
    cudnn = torch.backends.cudnn
    before = cudnn.deterministic, cudnn.benchmark
    with _deterministic_cudnn(True):
        assert cudnn.deterministic and not cudnn.benchmark
    with _deterministic_cudnn(False):
        assert (cudnn.deterministic, cudnn.benchmark) == before
    assert (cudnn.deterministic, cudnn.benchmark) == before
