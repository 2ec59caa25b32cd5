"""Tasks: a dataset + metric + loss behind one protocol (:class:`~slimcnn.tasks.base.Task`).

Task modules register a factory in :data:`~slimcnn.tasks.base.TASKS` when imported;
:func:`make_task` imports them on demand.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
from pathlib import Path
from typing import Any

from slimcnn.errors import ConfigError
from slimcnn.models._zoo import GUESS_NOTE, ModelInfo
from slimcnn.tasks.base import TASKS, Batch, Task, TrainStats

logger = logging.getLogger(__name__)

__all__ = ["TASKS", "Batch", "Task", "TrainStats", "fit_input", "list_tasks", "make_task", "resolve_task"]

# Modules under slimcnn.tasks that register a task when imported (one line each).
_TASK_MODULES: tuple[str, ...] = (
    "classification",
    "sr",
    "detection",
)


def _import_task_modules(kind: str | None = None) -> None:
    """Import the module named ``kind`` if it is one, else every task module."""
    names = (kind,) if kind in _TASK_MODULES else _TASK_MODULES
    for name in names:
        module = f"slimcnn.tasks.{name}"
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name != module:  # a dependency of the task module is missing: say so
                raise
            logger.debug("task module %s is listed but not present", module)


def resolve_task(task: str | None, info: ModelInfo | None) -> str:
    """The task name: ``task`` (the user's ``--task``) or the model's own."""
    kind = task or getattr(info, "task", None)
    if kind is None:
        raise ConfigError("the model does not say which task it is for; pass --task classification|sr|detection")
    return str(kind)


def list_tasks() -> list[str]:
    """Names of every registered task."""
    _import_task_modules()
    return TASKS.names()


def settled_guess(info: ModelInfo) -> dict[str, Any]:
    """The :class:`ModelInfo` fields of an input size no longer guessed: the flag, and the notes without the guess's."""
    return dict(input_guessed=False, notes=tuple(n for n in info.notes if not n.startswith(GUESS_NOTE)))


def fit_input(info: ModelInfo, kind: str | None, data: str | Path | None, *, val_data: str | Path | None = None,
              input_shape: tuple[int, ...] | None = None) -> tuple[ModelInfo, str | None]:
    """``info`` with an input size the data agrees with, when the model's own was only a guess.

    A ``python:`` factory or a bare pickled module does not say what it takes, and the 224x224 guess
    would decode CIFAR's 32x32 images at 49x the pixels. ``input_shape`` (the user's ``--input``) settles
    it; else a classifier takes the one size its evaluation images are stored at, if they share one.

    Returns:
        The info to use (``input_guessed`` cleared when settled) and a line saying what was chosen, or None.
    """
    if not info.input_guessed or len(info.input_shape) != 4:
        return info, None
    settled = settled_guess(info)
    if input_shape is not None:
        return dataclasses.replace(info, input_shape=(1, *input_shape[1:]), **settled), None
    if kind != "classification" or data is None:
        return info, None
    from slimcnn.data.classification import check_source, native_size

    size = native_size(check_source(val_data if val_data is not None else data), "test")
    if size is None:
        return info, None
    channels = info.input_shape[1]
    fitted = dataclasses.replace(info, input_shape=(1, channels, *size), **settled)
    if tuple(info.input_shape[2:]) == size:
        return fitted, None
    h, w = size
    return fitted, (f"input size: taken from the data, whose images are {h}x{w} (1x{channels}x{h}x{w} instead of "
                    f"the {info.input_shape[2]}x{info.input_shape[3]} guess)")


_DATA_OPTIONS = {"classification": ("stream", "loader_workers", "strict_data", "amp"), "sr": ("stream", "loader_workers"),
                 "detection": ("loader_workers",)}
"""The data options each task takes."""


def make_task(
    kind: str,
    data: str | Path,
    *,
    info: ModelInfo | None = None,
    scale: int | None = None,
    val_data: str | Path | None = None,
    train_data: str | Path | None = None,
    subset: int | None = None,
    batch_size: int | None = None,
    seed: int = 0,
    metric: str | None = None,
    stream: bool | None = None,
    loader_workers: int | None = None,
    strict_data: bool | None = None,
    amp: str | None = None,
) -> Task:
    """Build the task ``kind`` over ``data``.

    Options left ``None`` are not passed, so each task's own default applies.

    Args:
        kind: ``"classification"``, ``"sr"``, ``"detection"`` (any name in ``TASKS``).
        data: The task's data: a path or a built-in set name (``digits``, ``photos``).
        info: The model's metadata (input size, normalisation, scale).
        scale: Super-resolution factor.
        val_data: Evaluate on this instead of ``data``.
        train_data: Fine-tune on this (see each task for its default).
        subset: Evaluate on the first N samples only.
        batch_size: Batch size (task default when None).
        seed: Shuffling/augmentation seed.
        metric: The headline metric, for tasks that offer a choice (detection: ``map50_95`` or ``map50``).
        stream: Classification and SR: read images through a DataLoader instead of decoding the set into
            memory (None: chosen by the set's size, see each task).
        loader_workers: Classification, SR and detection: DataLoader worker processes.
        strict_data: Classification: refuse an undecodable image instead of skipping and counting it.
        amp: Classification: evaluate under ``"bf16"``/``"fp16"`` autocast.

    Returns:
        The task.

    Raises:
        UnknownNameError: ``kind`` is not a registered task (the message lists close matches).
        ConfigError: ``metric`` was given for a task that has no choice of metric, or a data option
            (``stream``, ``loader_workers``, ``strict_data``, ``amp``) for a task that does not take it.
        DataError: The data does not exist or cannot be read.
    """
    _import_task_modules(kind)
    if kind not in TASKS:
        _import_task_modules()
    factory = TASKS.get(kind)
    options: dict[str, Any] = {
        "scale": scale, "val_data": val_data, "train_data": train_data, "subset": subset, "batch_size": batch_size,
        "metric": metric,
    }
    if metric is not None and kind != "detection":
        raise ConfigError(f"--metric chooses the detection metric (map50_95, map50); the {kind} task has one metric")
    data_options = {"stream": stream, "loader_workers": loader_workers, "strict_data": strict_data, "amp": amp}
    takes = _DATA_OPTIONS.get(kind, ())
    given = [k for k, v in data_options.items() if v is not None and k not in takes]
    if given:
        raise ConfigError(f"{', '.join(given)}: not an option of the {kind} task; drop {'them' if len(given) > 1 else 'it'}")
    options |= data_options
    return factory(data, info=info, seed=seed, **{k: v for k, v in options.items() if v is not None})
