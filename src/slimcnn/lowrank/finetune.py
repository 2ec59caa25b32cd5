"""Recovery fine-tuning of decomposed models with frozen factors, and training-step throughput.

Freezing the outer 1×1 factors (first of each SVD pair; first and last of each Tucker-2 triple)
skips their weight gradients, which is where Hajimolahoseini et al.'s training speed-up comes from;
"sequential" freezing alternates which factors train, phase by phase.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import nn

from slimcnn.errors import ConfigError
from slimcnn.lowrank import LowRankResult, freeze_factors_
from slimcnn.tasks.base import Task, TrainStats


def finetune_frozen(
    model: nn.Module,
    result: LowRankResult,
    task: Task,
    steps: int,
    *,
    freeze: str = "outer",
    phases: int = 2,
    lr: float | None = None,
    **options: Any,
) -> list[TrainStats]:
    """Fine-tune in place with the chosen freezing; every parameter is trainable again afterwards.

    Args:
        freeze: ``"outer"`` (outer factors frozen throughout), ``"sequential"`` (``phases`` equal
            phases alternating outer-frozen / inner-frozen), or ``"none"``.
    """
    if freeze not in ("outer", "sequential", "none"):
        raise ConfigError(f"--freeze must be outer, sequential or none, got '{freeze}'")
    if lr is not None:
        options["lr"] = lr
    plan = [("outer", steps)] if freeze == "outer" else [("none", steps)]
    if freeze == "sequential":
        n = max(1, phases)
        plan = [("outer" if i % 2 == 0 else "inner", steps // n + (1 if i < steps % n else 0)) for i in range(n)]
    stats = []
    try:
        for which, n_steps in plan:
            if n_steps <= 0:
                continue
            trainable = freeze_factors_(model, result, which)
            stats.append(task.finetune(model, n_steps, params=trainable, **options))
    finally:
        freeze_factors_(model, result, "none")
    return stats


def training_throughput(model: nn.Module, result: LowRankResult, task: Task, *, steps: int = 5) -> dict[str, float]:
    """Forward+backward samples/s with nothing frozen and with the outer factors frozen (same batches)."""
    batches = task.training_batches(steps + 1)
    out: dict[str, float] = {}
    was_training = model.training
    try:
        for which in ("none", "outer"):
            freeze_factors_(model, result, which)
            model.train()
            n = 0
            for i, batch in enumerate(batches):
                if i == 1:  # first batch is warm-up
                    t0 = time.perf_counter()
                    n = 0
                model.zero_grad(set_to_none=True)
                task.loss(model, batch).backward()
                n += int(batch[0].shape[0]) if isinstance(batch[0], torch.Tensor) else 1
            out[f"samples_per_s_{'no_freeze' if which == 'none' else 'outer_frozen'}"] = n / (time.perf_counter() - t0)
    finally:
        freeze_factors_(model, result, "none")
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    return out
