"""Learning-rate schedules as pure functions of the step (so resuming needs only the step)."""

from __future__ import annotations

import math
from typing import Literal

Schedule = Literal["cosine", "constant", "step"]
SCHEDULES: tuple[str, ...] = ("cosine", "constant", "step")


def lr_at(step: int, *, steps: int, lr: float, warmup_steps: int = 0, schedule: Schedule = "cosine") -> float:
    """The learning rate for optimiser step ``step`` (0-based) of ``steps``.

    Warm-up is linear from ``lr / warmup_steps`` to ``lr`` over the first ``warmup_steps`` steps.
    After it, ``"cosine"`` anneals from ``lr`` to 0 at the last step, ``"constant"`` keeps ``lr``,
    and ``"step"`` multiplies by 0.1 at 50 % and again at 75 % of the post-warm-up steps.

    Args:
        step: The 0-based step about to be taken.
        steps: Total number of steps.
        lr: Peak learning rate.
        warmup_steps: Length of the linear warm-up.
        schedule: ``"cosine"``, ``"constant"`` or ``"step"``.

    Returns:
        The learning rate (>= 0).

    Raises:
        ValueError: For an unknown schedule.
    """
    if schedule not in SCHEDULES:
        from slimcnn.errors import unknown_name

        raise unknown_name("schedule", str(schedule), SCHEDULES)
    if warmup_steps > 0 and step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    if schedule == "constant":
        return lr
    span = max(1, steps - warmup_steps)
    progress = min(1.0, max(0.0, (step - warmup_steps) / span))
    if schedule == "cosine":
        return lr * 0.5 * (1.0 + math.cos(math.pi * progress))
    return lr * (0.1 ** (int(progress >= 0.5) + int(progress >= 0.75)))
