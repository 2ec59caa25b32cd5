"""The one interface every method uses to judge and repair a model."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from slimcnn.registry import Registry
from slimcnn.types import Score

Batch = tuple[torch.Tensor, Any]
"""(model-ready inputs, targets) — targets are task-specific (labels, HR images, box lists)."""


@dataclass(frozen=True)
class TrainStats:
    """What a fine-tune did."""

    steps: int
    final_loss: float
    seconds: float
    samples_per_s: float
    device: str


@runtime_checkable
class Task(Protocol):
    """A dataset + metric + loss. Implementations: classification, sr, detection."""

    name: str

    def evaluate(self, model: nn.Module, *, limit: int | None = None, device: str = "cpu") -> Score:
        """Score ``model`` on the validation data (``limit`` = first N images)."""
        ...

    def finetune(self, model: nn.Module, steps: int, **options: Any) -> TrainStats:
        """Train ``model`` in place for ``steps`` optimiser steps with the shared loop."""
        ...

    def calibration_batches(self, n: int) -> list[torch.Tensor]:
        """``n`` model-ready input batches from the training data (for criteria like CHIP, Taylor)."""
        ...

    def training_batches(self, n: int) -> list[Batch]:
        """``n`` (inputs, targets) batches from the training data."""
        ...

    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        """The training loss of ``model`` on one batch (differentiable)."""
        ...

    def example_input(self, batch: int = 1) -> torch.Tensor:
        """A model-ready input of the right shape."""
        ...


TASKS: Registry[Callable[..., Task]] = Registry("task")
"""Task factories: ``TASKS.get("sr")(data, info=..., scale=..., ...)``."""
