"""The one interface every method uses to judge and repair a model."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from slimcnn.errors import ConfigError
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


_EXPECTS = {
    "classification": "outputs class scores [N, classes]",
    "sr": "takes a 1-channel (Y) image [N, 1, H, W] and outputs an image [N, 1, H', W']",
    "detection": "is a detector (boxes out: Yolo-FastestV2, torchvision or ultralytics detection models)",
}


def describe_output(output: Any) -> str:
    """``(1, 10)`` for a tensor, ``list of 2 dict`` for a list, else the type name (for messages)."""
    if isinstance(output, torch.Tensor):
        return str(tuple(output.shape))
    if isinstance(output, (list, tuple)):
        inner = {type(o).__name__ for o in output}
        return f"{type(output).__name__} of {len(output)} {'/'.join(sorted(inner)) or 'items'}"
    return type(output).__name__


def guess_task(output: Any) -> str | None:
    """The task a model's output looks made for: ``[N, C]`` -> classification, ``[N, 1|3, H, W]`` -> sr,
    a 3-D map, a list/dict of detections -> detection; None when unclear."""
    if isinstance(output, torch.Tensor):
        if output.dim() == 2:
            return "classification"
        if output.dim() == 4 and output.shape[1] in (1, 3) and output.shape[-1] > 1 and output.shape[-2] > 1:
            return "sr"
        if output.dim() == 3:
            return "detection"
        return None
    if isinstance(output, (list, tuple)) and output:
        if all(isinstance(o, dict) and "boxes" in o for o in output):
            return "detection"
        if isinstance(output[0], torch.Tensor) and output[0].dim() == 3:
            return "detection"
    return None


def task_mismatch(kind: str, got: str, *, info: Any = None, output: Any = None) -> ConfigError:
    """The one-line error for a model that does not fit ``--task kind``.

    Args:
        kind: The task asked for (``--task``).
        got: What the model did, e.g. ``"outputs (1, 10)"`` or ``"fails on input (1, 1, 256, 256) (...)"``.
        info: The model's :class:`~slimcnn.models.ModelInfo` (its ``task`` is the first hint).
        output: The model's output on one example batch, if it produced one (the second hint).

    Returns:
        ``ConfigError("--task sr expects a model that ...; this model outputs (1, 10): pass --task classification")``.
    """
    own = getattr(info, "task", None)
    hint = own if own not in (None, kind) else (guess_task(output) if output is not None else None)
    tail = f": pass --task {hint}" if hint not in (None, kind) else "; check MODEL and --task"
    return ConfigError(f"--task {kind} expects a model that {_EXPECTS.get(kind, 'fits the task')}; this model {got}{tail}")


def is_out_of_memory(error: BaseException) -> bool:
    """True for an allocation failure (not the model's fault, never reported as a ``--task`` mismatch)."""
    return isinstance(error, (MemoryError, torch.cuda.OutOfMemoryError)) or "out of memory" in str(error).lower()


def first_line(error: BaseException) -> str:
    """The first line of an exception's message (torch errors span several)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
