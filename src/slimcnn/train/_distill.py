"""Recovery by knowledge distillation: the student learns the ORIGINAL model's outputs.

Pure losses (:func:`kd_logits_loss`, :func:`output_distill_loss`) plus two small context managers
the tasks' ``finetune`` use: :func:`teacher_on` (the teacher in eval mode, under ``no_grad``, on the
student's device; its device and mode are restored afterwards) and :class:`FeatureTap` (the outputs
of named layers, for intermediate-feature distillation).

References:
    Hinton, Vinyals, Dean, "Distilling the Knowledge in a Neural Network" (2015),
    https://arxiv.org/abs/1503.02531 — softened logits with temperature ``T``, loss scaled by ``T**2``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from slimcnn.errors import ConfigError, unknown_name

Recovery = Literal["plain", "kd"]
RECOVERIES: tuple[str, ...] = ("plain", "kd")
"""``plain``: the task's own loss; ``kd``: distillation from a teacher (the original model)."""
OUTPUT_LOSSES: tuple[str, ...] = ("l2", "l1")


def check_recovery(recovery: str, teacher: nn.Module | None, student: nn.Module | None = None) -> bool:
    """Validate ``recovery``; True when distillation is on.

    Raises:
        ConfigError: an unknown recovery, ``kd`` without a teacher, or the student as its own teacher.
    """
    if recovery not in RECOVERIES:
        raise unknown_name("recovery", recovery, RECOVERIES)
    if recovery != "kd":
        return False
    if teacher is None:
        raise ConfigError("recovery='kd' needs a teacher (the original model): pass teacher=MODEL or recovery='plain'")
    if student is not None and teacher is student:
        raise ConfigError("the teacher is the model being fine-tuned; pass a copy of the original as teacher")
    return True


def check_weight(name: str, value: float) -> float:
    """``value`` in [0, 1] (a mixing weight), else a one-line error naming ``name``."""
    if not 0.0 <= float(value) <= 1.0:
        raise ConfigError(f"{name} mixes the distillation and task losses and must be in [0, 1], got {value}")
    return float(value)


def kd_logits_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    targets: torch.Tensor | None = None,
    *,
    temperature: float = 4.0,
    alpha: float = 0.9,
) -> torch.Tensor:
    """Hinton et al.'s loss: ``alpha * T**2 * KL(p_teacher^T || p_student^T) + (1 - alpha) * CE(student, targets)``.

    Args:
        student (Tensor[N, C]): the student's logits.
        teacher (Tensor[N, C]): the teacher's logits (no gradient flows into them).
        targets (Tensor[N] | None): labels for the cross-entropy term (needed when ``alpha < 1``).
        temperature: ``T`` > 0; both distributions are ``softmax(logits / T)``.
        alpha: weight of the distillation term, in [0, 1].

    Returns:
        A scalar; the KL term is the batch mean (``reduction="batchmean"``).
    """
    if not temperature > 0:
        raise ConfigError(f"kd_temperature must be > 0, got {temperature}")
    alpha = check_weight("kd_alpha", alpha)
    t = float(temperature)
    kl = F.kl_div(F.log_softmax(student / t, dim=1), F.log_softmax(teacher.detach() / t, dim=1),
                  reduction="batchmean", log_target=True)
    loss = alpha * t * t * kl
    if alpha < 1.0:
        if targets is None:
            raise ConfigError("kd_alpha < 1 mixes in the cross-entropy and needs the labels")
        loss = loss + (1.0 - alpha) * F.cross_entropy(student, targets)
    return loss


def output_distill_loss(student: torch.Tensor, teacher: torch.Tensor, kind: str = "l2") -> torch.Tensor:
    """Mean squared (``l2``) or absolute (``l1``) difference to the teacher's output (same shape)."""
    if kind not in OUTPUT_LOSSES:
        raise unknown_name("distillation loss", kind, OUTPUT_LOSSES)
    if student.shape != teacher.shape:
        raise ConfigError(f"cannot distil: the student's output {tuple(student.shape)} and the teacher's "
                          f"{tuple(teacher.shape)} differ in shape")
    t = teacher.detach()
    return F.mse_loss(student, t) if kind == "l2" else F.l1_loss(student, t)


def _home(module: nn.Module) -> torch.device:
    for t in module.parameters():
        return t.device
    for t in module.buffers():
        return t.device
    return torch.device("cpu")


@contextlib.contextmanager
def teacher_on(teacher: nn.Module, device: str | torch.device) -> Iterator[Callable[[Any], Any]]:
    """Yield ``run(x)``: the teacher's output in eval mode under ``no_grad`` on ``device``.

    The teacher's device and train/eval mode are restored on exit (it is the caller's original model).
    """
    home, was_training = _home(teacher), teacher.training
    teacher.eval().to(device)

    def run(x: Any) -> Any:
        with torch.no_grad():
            return teacher(x)

    try:
        yield run
    finally:
        teacher.to(home).train(was_training)


class FeatureTap:
    """Record the outputs of the named layers on every forward (``with FeatureTap(model, layers) as tap``).

    ``tap.features`` maps each FQN to its latest output (a tensor; the first tensor of a tuple output).
    """

    def __init__(self, model: nn.Module, layers: Sequence[str]) -> None:
        names = dict(model.named_modules())
        missing = [n for n in layers if n not in names]
        if missing:
            raise ConfigError(f"kd_features names layers the model does not have: {missing}; "
                              f"use module FQNs such as {list(n for n in names if n)[:4]}")
        self.features: dict[str, torch.Tensor] = {}
        self._modules = [(n, names[n]) for n in layers]
        self._handles: list[Any] = []

    def __enter__(self) -> FeatureTap:
        for name, module in self._modules:
            self._handles.append(module.register_forward_hook(self._hook(name)))
        return self

    def _hook(self, name: str) -> Callable[..., None]:
        def hook(_m: nn.Module, _inp: Any, out: Any) -> None:
            self.features[name] = out[0] if isinstance(out, (tuple, list)) else out

        return hook

    def __exit__(self, *exc: object) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()


def feature_distill_loss(student: dict[str, torch.Tensor], teacher: dict[str, torch.Tensor], kind: str = "l2") -> torch.Tensor:
    """Sum over layers of :func:`output_distill_loss` between the student's and teacher's features."""
    total: torch.Tensor | None = None
    for name, s in student.items():
        t = teacher[name]
        if s.shape != t.shape:
            raise ConfigError(f"kd_features: layer '{name}' outputs {tuple(s.shape)} in the student but "
                              f"{tuple(t.shape)} in the teacher (pruned?); pick layers whose outputs keep their shape")
        term = output_distill_loss(s, t, kind)
        total = term if total is None else total + term
    if total is None:
        raise ConfigError("kd_features recorded nothing; the named layers did not run")
    return total
