"""Recovery fine-tuning of decomposed models with frozen factors, and training-step throughput.

Freezing the outer 1×1 factors (first of each SVD pair; first and last of each Tucker-2 triple)
skips their weight gradients, which is where Hajimolahoseini et al.'s training speed-up comes from
(https://arxiv.org/abs/2309.03824). "sequential" freezing alternates which factors train, phase by
phase; the paper's exact schedule is not public, so this is one reasonable reading of it.
"""

from __future__ import annotations

import inspect
import logging
import time
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from slimcnn.errors import ConfigError
from slimcnn.lowrank import LowRankResult, freeze_factors_
from slimcnn.tasks.base import Task, TrainStats

log = logging.getLogger(__name__)

Freeze = Literal["outer", "sequential", "none"]
FREEZE_MODES: tuple[str, ...] = ("outer", "sequential", "none")


def freeze_plan(freeze: str, steps: int, phases: int = 2) -> list[tuple[str, int]]:
    """The ``(frozen group, steps)`` phases of a fine-tune: ``"outer"``, ``"inner"`` or ``"none"``.

    ``"sequential"`` splits ``steps`` into ``phases`` near-equal phases that alternate
    outer-frozen, inner-frozen, outer-frozen, ... (the first phases take the remainder).

    Raises:
        ConfigError: unknown ``freeze`` or ``phases < 1``.
    """
    if freeze not in FREEZE_MODES:
        raise ConfigError(f"--freeze must be one of {list(FREEZE_MODES)}, got '{freeze}'")
    if phases < 1:
        raise ConfigError(f"phases must be >= 1, got {phases}")
    if freeze != "sequential":
        return [(freeze, steps)]
    plan = [("outer" if i % 2 == 0 else "inner", steps // phases + (1 if i < steps % phases else 0))
            for i in range(phases)]
    return [(which, n) for which, n in plan if n > 0]


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

    Each phase of :func:`freeze_plan` is one ``task.finetune`` call given only the trainable
    parameters (so the optimiser never sees the frozen ones). Phases after the first use a new
    data seed when the task's ``finetune`` takes ``seed``, so they do not replay the same batches.

    Args:
        model: the decomposed model (trained in place).
        result: what :func:`~slimcnn.lowrank.decompose_` replaced (defines the factor groups).
        task: supplies ``finetune``.
        steps: optimiser steps in total.
        freeze: ``"outer"`` (outer factors frozen throughout), ``"sequential"`` (``phases``
            phases alternating outer-frozen / inner-frozen), or ``"none"``.
        phases: number of phases for ``"sequential"``.
        lr: learning rate (default: the task's).
        **options: forwarded to ``task.finetune``.

    Returns:
        One :class:`~slimcnn.tasks.base.TrainStats` per phase.
    """
    plan = freeze_plan(freeze, steps, phases)
    if lr is not None:
        options["lr"] = lr
    takes_seed = "seed" in inspect.signature(task.finetune).parameters
    base_seed = options.pop("seed", 0) if takes_seed else None
    stats = []
    try:
        for i, (which, n_steps) in enumerate(plan):
            trainable = freeze_factors_(model, result, which)
            extra = {"seed": base_seed + i} if base_seed is not None else {}
            log.info("fine-tune phase %d/%d: %d steps, %s factors frozen", i + 1, len(plan), n_steps, which)
            stats.append(task.finetune(model, n_steps, params=trainable, **options, **extra))
    finally:
        freeze_factors_(model, result, "none")
    return stats


def training_throughput(
    model: nn.Module,
    result: LowRankResult,
    task: Task,
    *,
    steps: int = 5,
    modes: tuple[str, ...] = ("none", "outer"),
) -> dict[str, float]:
    """Forward+backward samples/s per freezing mode, timed interleaved on the same batches.

    One untimed warm-up step per mode, then ``steps`` rounds; each round runs one
    forward+backward (no optimiser step) per mode on the same batch, in rotating order, so load
    drift hits every mode alike. Throughput = batch size / median step time.

    Args:
        model: the decomposed model (left in its training flag, nothing frozen, no grads).
        result: defines the factor groups.
        task: supplies ``training_batches`` and ``loss``.
        steps: timed rounds.
        modes: any of ``"none"``, ``"outer"``, ``"inner"`` (which factors are frozen).

    Returns:
        ``samples_per_s_<no_freeze|outer_frozen|inner_frozen>`` per mode, ``speedup_<mode>``
        relative to ``"none"`` when it is measured, ``batch_size`` and ``steps``.
    """
    if steps < 1:
        raise ConfigError(f"steps must be >= 1, got {steps}")
    bad = [m for m in modes if m not in ("none", "outer", "inner")]
    if bad or not modes:
        raise ConfigError(f"modes must be a non-empty subset of ['none', 'outer', 'inner'], got {list(modes)}")
    batches = task.training_batches(steps + 1)
    names = {"none": "no_freeze", "outer": "outer_frozen", "inner": "inner_frozen"}
    times: dict[str, list[float]] = {m: [] for m in modes}
    was_training = model.training
    n = int(batches[0][0].shape[0]) if isinstance(batches[0][0], torch.Tensor) else 1

    def step(which: str, batch: Any) -> float:
        freeze_factors_(model, result, which)
        model.zero_grad(set_to_none=True)
        t0 = time.perf_counter()
        task.loss(model, batch).backward()
        return time.perf_counter() - t0

    try:
        model.train()
        for m in modes:  # warm-up
            step(m, batches[0])
        for i, batch in enumerate(batches[1:]):
            k = i % len(modes)
            for m in modes[k:] + modes[:k]:
                times[m].append(step(m, batch))
    finally:
        freeze_factors_(model, result, "none")
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    out: dict[str, float] = {f"samples_per_s_{names[m]}": n / float(np.median(times[m])) for m in modes}
    if "none" in modes:
        for m in modes:
            if m != "none":
                out[f"speedup_{names[m]}"] = out[f"samples_per_s_{names[m]}"] / out["samples_per_s_no_freeze"]
    out["batch_size"] = float(n)
    out["steps"] = float(steps)
    return out
