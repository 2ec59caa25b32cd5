"""SRTask's training patches (streamed or cut in memory) and its distillation loss (split out of sr.py)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from slimcnn.data._sr_stream import SRPatchBatches, stream_sr_patches
from slimcnn.data.sr import sample_patches
from slimcnn.tasks.base import Batch

if TYPE_CHECKING:  # the task module imports this one
    from slimcnn.tasks.sr import SRTask


def patch_batches(task: SRTask, *, patch: int, batch_size: int, seed: int, min_std: float,
                  augment: bool = True) -> Iterator[Batch]:
    """Endless training batches: streamed from the files (see ``stream``) or cut from the triples in memory."""
    streamed = task._streamed_train()
    if streamed is None:
        return _memory_batches(task, patch=patch, batch_size=batch_size, seed=seed, min_std=min_std, augment=augment)
    data = SRPatchBatches(*streamed, scale=task.scale, patch=patch, batch_size=batch_size, sr_input=task.sr_input,
                          seed=seed, augment=augment, min_std=min_std)
    return stream_sr_patches(data, workers=task.loader_workers)


def _patches(
    task: SRTask,
    rng: np.random.Generator,
    *,
    patch: int | None = None,
    batch_size: int | None = None,
    augment: bool = True,
    min_std: float = 0.0,
) -> Batch:
    r = task._default_recipe()
    x, y = sample_patches(
        task.train_set.images,
        batch_size or task.batch_size or r.batch_size,
        patch=patch or task._patch_size(),
        scale=task.scale,
        sr_input=task.sr_input,
        rng=rng,
        augment=augment,
        min_std=min_std,
    )
    return torch.from_numpy(x), torch.from_numpy(y)


def _memory_batches(task: SRTask, *, patch: int, batch_size: int, seed: int, min_std: float,
                    augment: bool = True) -> Iterator[Batch]:
    rng = np.random.default_rng(seed)
    while True:
        yield _patches(task, rng, patch=patch, batch_size=batch_size, min_std=min_std, augment=augment)


@contextlib.contextmanager
def distill_loss(task: SRTask, student: nn.Module, teacher: nn.Module, device: str, alpha: float, kind: str,
                 features: tuple[str, ...], feature_weight: float) -> Iterator[Any]:
    """The distillation loss ``loss(model, batch)`` while the teacher (and feature taps) are set up."""
    from slimcnn.train import FeatureTap, feature_distill_loss, output_distill_loss, teacher_on

    with contextlib.ExitStack() as stack:
        run_teacher = stack.enter_context(teacher_on(teacher, device))
        s_tap = stack.enter_context(FeatureTap(student, features)) if features else None
        t_tap = stack.enter_context(FeatureTap(teacher, features)) if features else None

        def loss(model: nn.Module, batch: Batch) -> torch.Tensor:
            x, y = batch
            out = task._fit_output(model(x), y.shape[-2:])
            ref = task._fit_output(run_teacher(x), y.shape[-2:])
            total = (1.0 - alpha) * nn.functional.mse_loss(out, y) + alpha * output_distill_loss(out, ref, kind)
            if s_tap is not None and t_tap is not None and feature_weight > 0:
                total = total + feature_weight * feature_distill_loss(s_tap.features, t_tap.features, kind)
            return total

        yield loss
