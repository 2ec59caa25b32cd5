"""Image classification: top-1/top-5 accuracy, cross-entropy fine-tuning.

Which data is used for what (``data``, ``val_data``, ``train_data`` are specs as accepted by
:func:`slimcnn.data.classification.load_classification`):

- **Evaluation** uses ``val_data`` if given, else ``data``. For a source with splits (``digits``, a
  CIFAR folder, a folder/.tar with ``train/`` and ``test/`` or ``val/``) that is its test split;
  for a plain ImageFolder it is the whole set.
- **Training** (``finetune``, ``training_batches``, ``calibration_batches``) uses ``train_data`` if
  given; else ``data`` when ``val_data`` was given; else the train split of ``data``; else a sibling
  training set (``X/test`` -> ``X/train``; ``test-10k.tar`` -> the only ``train*.tar`` beside it);
  else, with a warning, the evaluation data itself.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from slimcnn.data._stream import Skipped, StreamIndex
from slimcnn.data.classification import ImageSet, check_source, find_train_sibling, normalize, source_splits
from slimcnn.errors import ConfigError, DataError
from slimcnn.models._zoo import ModelInfo
from slimcnn.tasks._classes import check_classes
from slimcnn.tasks._classification_data import load_images, ordered_batches, shuffled_batches
from slimcnn.tasks.base import (
    TASKS,
    Batch,
    TrainStats,
    describe_output,
    first_line,
    guess_task,
    is_out_of_memory,
    task_mismatch,
)
from slimcnn.types import Score

logger = logging.getLogger(__name__)

DataSpec = str | Path


def logits_of(output: Any) -> torch.Tensor:
    """The class logits of a model's output (a tensor, the first of a tuple, or ``out``/``logits`` of a dict)."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    if isinstance(output, dict):
        for key in ("logits", "out"):
            if isinstance(output.get(key), torch.Tensor):
                return output[key]
    raise ConfigError(f"a classification model must return logits [N, classes]; it returned {type(output).__name__}")


class ClassificationTask:
    """Top-1 accuracy (%) on in-memory images; cross-entropy fine-tuning with :func:`slimcnn.train.fit_`.

    Args:
        data: ``"digits"``, an ImageFolder folder or .tar, or a CIFAR python folder (see module doc).
        info: The model's metadata: input size/channels and normalisation ``mean``/``std``.
        val_data: Evaluate on this instead of ``data`` (``data`` then becomes the training set).
        subset: Evaluate on the first N images only (fixed order that mixes the classes).
        batch_size: Batch size for evaluation and the default for training.
        seed: Seeds shuffling and augmentation.
        train_data: Training set for ``finetune`` (see module doc for the default).
        scale: Not used by classification; present so a stray ``--scale`` gives a clear error.
        amp: Evaluate under ``"bf16"``/``"fp16"`` autocast (fine-tuning takes its own ``amp``).
        stream: Read images through a DataLoader instead of decoding the set into memory; None: for
            WebDataset shards and for sets above :data:`~slimcnn.data._stream.STREAM_ABOVE_BYTES` decoded.
        loader_workers: DataLoader worker processes when streaming (None: up to 8, one CPU left free).
        strict_data: When streaming, refuse an undecodable image instead of skipping and counting it.

    Raises:
        DataError: A data path does not exist.
        ConfigError: Bad ``subset``/``batch_size`` or ``scale`` given.
    """

    name = "classification"

    def __init__(
        self,
        data: DataSpec,
        *,
        info: ModelInfo | None = None,
        val_data: DataSpec | None = None,
        subset: int | None = None,
        batch_size: int = 128,
        seed: int = 0,
        train_data: DataSpec | None = None,
        scale: int | None = None,
        amp: str | None = None,
        stream: bool | None = None,
        loader_workers: int | None = None,
        strict_data: bool = False,
    ) -> None:
        from slimcnn.train import AMP_DTYPES

        if amp is not None and amp not in AMP_DTYPES:
            raise ConfigError(f"amp must be {' or '.join(AMP_DTYPES)}, got '{amp}'")
        if scale is not None:
            raise ConfigError("--scale applies to the sr task, not classification; drop it")
        if batch_size < 1:
            raise ConfigError(f"--batch-size must be >= 1, got {batch_size}")
        if subset is not None and subset < 1:
            raise ConfigError(f"subset must be >= 1 images, got {subset}")
        self.info = info
        self.batch_size = batch_size
        self.subset = subset
        self.seed = seed
        self.amp = amp
        self.stream = stream
        if loader_workers is not None and loader_workers < 0:
            raise ConfigError(f"loader_workers must be >= 0, got {loader_workers}")
        self.loader_workers = loader_workers if loader_workers is not None else min(8, max(0, (os.cpu_count() or 1) - 1))
        self.strict_data = strict_data
        self.skipped = Skipped()
        """Images a stream skipped because they could not be decoded (see ``strict_data``)."""
        self.data = check_source(data)
        self.eval_source = check_source(val_data) if val_data is not None else self.data
        self._train_spec = check_source(train_data) if train_data is not None else None
        self._val_given = val_data is not None
        self._said_no_train = False
        self.size: tuple[int, int] | None = None
        self.channels: int | None = None
        if info is not None and len(info.input_shape) == 4:
            self.channels, self.size = info.input_shape[1], (info.input_shape[2], info.input_shape[3])

    # ------------------------------------------------------------------------------------------ data
    @property
    def eval_set(self) -> ImageSet | StreamIndex:
        """The evaluation images (decoded on first use and cached per process, or an index to stream)."""
        return load_images(self, self.eval_source, "test")

    def train_source(self) -> tuple[str | Path, str]:
        """The training data spec and the split to read from it (see the module doc)."""
        if self._train_spec is not None:
            return self._train_spec, "train"
        if self._val_given:
            return self.data, "train"
        if "train" in source_splits(self.data):
            return self.data, "train"
        sibling = find_train_sibling(self.data)
        if sibling is not None:
            logger.info("training on %s (beside the evaluation data %s)", sibling, self.data)
            return sibling, "train"
        if not self._said_no_train:  # asked at every fine-tune of a search: once is enough
            logger.warning("no training set found for %s; fine-tuning and calibration use the evaluation data "
                           "(pass --train-data)", self.data)
            self._said_no_train = True
        return self.data, "test"

    @property
    def train_set(self) -> ImageSet | StreamIndex:
        """The training images (decoded on first use and cached per process, or an index to stream)."""
        spec, split = self.train_source()
        out = load_images(self, spec, split)
        ev = self.eval_set
        if out.classes != ev.classes:
            raise DataError(
                f"training data {out.name} has classes {list(out.classes)[:5]}... but evaluation data {ev.name} "
                f"has {list(ev.classes)[:5]}...; both must hold the same class folders"
            )
        return out

    def _inputs(self, images: torch.Tensor) -> torch.Tensor:
        mean = self.info.mean if self.info is not None else None
        std = self.info.std if self.info is not None else None
        return normalize(images, mean, std)

    def _augments(self, ds: ImageSet | StreamIndex) -> bool:
        """In memory: pad-crop + flip for natural images up to 64 px (CIFAR-size), never for digits.
        Streamed: always (RandomResizedCrop + flip above 64 px)."""
        if isinstance(ds, StreamIndex):
            return True
        return not ds.name.startswith("digits") and max(ds.images.shape[-2:]) <= 64

    # ------------------------------------------------------------------------------------------ Task
    def evaluate(self, model: nn.Module, *, limit: int | None = None, device: str = "cpu") -> Score:
        """Top-1 (headline) and top-5 accuracy in percent on the evaluation data.

        Args:
            model: The classifier (not modified; its train/eval mode and device are restored).
            limit: Evaluate on the first N images only (also capped by ``subset``).
            device: Where to run.

        Returns:
            ``Score(metric="top1", value=percent, metrics={"top1", "top5"}, n, dataset)``; no ``top5`` for a model
            of five classes or fewer (it would always be 100 %).
        """
        from slimcnn.progress import phase
        from slimcnn.train import autocast

        ds = self.eval_set
        n = len(ds)
        for cap in (limit, self.subset):
            if cap is not None:
                n = min(n, int(cap))
        if n < 1:
            raise ConfigError(f"--limit must be >= 1, got {limit}")
        was_training = model.training
        home = next(iter(model.parameters()), torch.empty(0)).device
        model.eval().to(device)
        correct1 = correct5 = scored = 0
        try:
            with torch.inference_mode(), autocast(device, self.amp), \
                    phase(f"evaluate {ds.name}", total=n, unit="images") as advance:
                for images, y in ordered_batches(self, ds, n):
                    x = self._inputs(images).to(device)
                    logits = self._first_logits(model, x, ds) if not scored else logits_of(model(x)).float().cpu()
                    top = logits.topk(min(5, logits.shape[1]), dim=1).indices
                    correct1 += int((top[:, 0] == y).sum())
                    correct5 += int((top == y[:, None]).any(dim=1).sum())
                    scored += len(y)
                    advance(len(y))
        finally:
            model.train(was_training).to(home)
        if not scored:
            raise DataError(f"no image of {ds.name} could be decoded ({self.skipped.count} skipped)")
        n = scored
        top1, top5 = 100.0 * correct1 / n, 100.0 * correct5 / n
        # with five classes or fewer every label is in the top five: 100 % says nothing
        metrics = {"top1": top1, "top5": top5} if logits.shape[1] > 5 else {"top1": top1}
        return Score(metric="top1", value=top1, metrics=metrics, n=n, dataset=ds.name)

    def _first_logits(self, model: nn.Module, x: torch.Tensor, ds: ImageSet | StreamIndex) -> torch.Tensor:
        """The logits of the first batch, after checking the model is a classifier for ``ds``'s classes."""
        try:
            out = model(x)
        except (RuntimeError, ValueError, TypeError, IndexError) as e:
            if is_out_of_memory(e):
                raise
            raise task_mismatch("classification", f"fails on input {tuple(x.shape)} ({first_line(e)})",
                                info=self.info) from e
        try:
            logits: torch.Tensor | None = logits_of(out) if guess_task(out) in (None, "classification") else None
        except ConfigError:
            logits = None
        if logits is None or logits.dim() != 2:
            raise task_mismatch("classification", f"outputs {describe_output(out)}", info=self.info, output=out)
        check_classes(ds.classes, ds.name, int(logits.shape[1]), self.info.classes if self.info else None)
        return logits.float().cpu()

    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        """Cross-entropy of the model's logits against the labels."""
        x, y = batch
        return F.cross_entropy(logits_of(model(x)), y)

    def finetune(
        self,
        model: nn.Module,
        steps: int,
        *,
        lr: float = 0.01,
        optimizer: str = "sgd",
        batch_size: int | None = None,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        warmup_steps: int = 0,
        schedule: str = "cosine",
        grad_clip: float | None = None,
        augment: bool | None = None,
        checkpoint: str | Path | None = None,
        checkpoint_every: int = 0,
        progress: bool = True,
        device: str = "cpu",
        params: Any = None,
        seed: int | None = None,
        teacher: nn.Module | None = None,
        recovery: str = "plain",
        kd_temperature: float = 4.0,
        kd_alpha: float = 0.9,
        amp: str | None = None,
        channels_last: bool = False,
    ) -> TrainStats:
        """Fine-tune ``model`` in place with cross-entropy on the training data (see the module doc).

        With ``recovery="kd"`` the loss is Hinton et al.'s distillation from ``teacher`` (the original
        model, run in eval mode under ``no_grad`` on ``device``):
        ``kd_alpha * T**2 * KL(teacher/T || student/T) + (1 - kd_alpha) * CE`` with ``T = kd_temperature``
        (:func:`slimcnn.train.kd_logits_loss`).

        Args:
            model: The classifier (trained in place, returned in eval mode).
            steps: Optimiser steps.
            lr: Peak learning rate (cosine-annealed by default).
            optimizer: ``"sgd"``, ``"adam"`` or ``"adamw"``.
            batch_size: Defaults to the task's batch size.
            momentum: SGD momentum.
            weight_decay: Weight decay.
            warmup_steps: Linear warm-up steps.
            schedule: ``"cosine"``, ``"constant"`` or ``"step"``.
            grad_clip: Clip the gradient norm.
            augment: Random crop + flip; None = on for natural images up to 64 px, off for digits.
            checkpoint: Checkpoint file to write and resume from.
            checkpoint_every: Steps between checkpoints.
            progress: Show a progress bar on a terminal.
            device: Where to train.
            params: Train only these parameters.
            seed: Shuffling/augmentation seed (defaults to the task's).
            teacher: The model to distil from (``recovery="kd"``); not modified.
            recovery: ``"plain"`` (cross-entropy) or ``"kd"`` (distillation from ``teacher``).
            kd_temperature: Softmax temperature ``T`` of the distillation term.
            kd_alpha: Weight of the distillation term (the rest is cross-entropy), in [0, 1].
            amp: Mixed precision ``"bf16"``/``"fp16"`` (see :func:`slimcnn.train.fit_`); None = fp32.
            channels_last: Train in channels-last memory order.

        Returns:
            :class:`~slimcnn.tasks.base.TrainStats`.

        Raises:
            ConfigError: ``recovery="kd"`` without a teacher, or bad KD knobs.
        """
        from slimcnn.train import (
            check_recovery,
            check_weight,
            fit_,
            join_from_env,
            kd_logits_loss,
            teacher_on,
            world,
        )

        join_from_env(device)  # before the stream is sliced by rank

        kd = check_recovery(recovery, teacher, model)
        if kd:
            check_weight("kd_alpha", kd_alpha)
            if not kd_temperature > 0:
                raise ConfigError(f"kd_temperature must be > 0, got {kd_temperature}")
        ds = self.train_set
        use_aug = self._augments(ds) if augment is None else augment
        s = self.seed if seed is None else seed
        bs = batch_size or self.batch_size
        with contextlib.ExitStack() as stack:
            loss_fn = self.loss
            if kd:
                run_teacher = stack.enter_context(teacher_on(teacher, device))  # type: ignore[arg-type]

                def loss_fn(student: nn.Module, batch: Batch) -> torch.Tensor:
                    x, y = batch
                    return kd_logits_loss(logits_of(student(x)), logits_of(run_teacher(x)), y,
                                          temperature=kd_temperature, alpha=kd_alpha)

            streamed = isinstance(ds, StreamIndex)
            return fit_(
                model,
                lambda: shuffled_batches(self, ds, bs, augment=use_aug, seed=s, ranks=world() if streamed else (0, 1)),
                loss_fn, steps=steps, local_batches=streamed,
                optimizer=optimizer, lr=lr, momentum=momentum, weight_decay=weight_decay,  # type: ignore[arg-type]
                warmup_steps=warmup_steps, schedule=schedule, grad_clip=grad_clip,  # type: ignore[arg-type]
                checkpoint=checkpoint, checkpoint_every=checkpoint_every, progress=progress,
                device=device, params=params, seed=s, amp=amp, channels_last=channels_last,
            )

    def training_batches(self, n: int) -> list[Batch]:
        """``n`` shuffled, un-augmented ``(inputs, labels)`` batches from the training data (seeded)."""
        stream = shuffled_batches(self, self.train_set, self.batch_size, augment=False, seed=self.seed)
        return [next(stream) for _ in range(n)]

    def calibration_batches(self, n: int) -> list[torch.Tensor]:
        """``n`` shuffled, un-augmented input batches from the training data (seeded)."""
        return [x for x, _ in self.training_batches(n)]

    def example_input(self, batch: int = 1) -> torch.Tensor:
        """The first ``batch`` evaluation images, model-ready (repeated if the set is smaller)."""
        ds = self.eval_set
        idx = torch.arange(batch) % len(ds)
        if isinstance(ds, StreamIndex):
            first = torch.cat([x for x, _ in ordered_batches(self, ds, min(batch, len(ds)))])
            return self._inputs(first[idx % len(first)])
        return self._inputs(ds.images[idx])

    def __repr__(self) -> str:
        return f"ClassificationTask(data={self.eval_source!s}, size={self.size}, batch_size={self.batch_size})"


TASKS.add("classification", ClassificationTask)
