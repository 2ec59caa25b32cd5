"""Super-resolution task: PSNR/SSIM on Y with the MATLAB bicubic degradation, and SR training recipes.

Evaluation follows the SRCNN/FSRCNN/VDSR papers exactly (see :mod:`slimcnn.data.sr`): Y channel
(BT.601), modcrop, ``LR = imresize(HR, 1/scale)``, PSNR/SSIM on 0-255 with a ``scale``-pixel border
shaved, model output clamped to [0, 1], whole images (no tiling), mean over images.

Models are fed according to :attr:`ModelInfo.sr_input`: ``"upsampled"`` (SRCNN, VDSR) get the
bicubic-upscaled Y and return HR Y; ``"lr"`` (FSRCNN, ESPCN) get LR Y and return an HR-sized Y.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from slimcnn.data._sr_stream import SR_STREAM_ABOVE_BYTES, image_sizes, triple_bytes
from slimcnn.data.sr import SRDataset, SRImage, builtin_sr_sets, load_sr_dataset, sr_files
from slimcnn.errors import ConfigError, DataError
from slimcnn.models._zoo import ModelInfo
from slimcnn.progress import phase
from slimcnn.tasks._sr_fit import DEFAULT_SCALE, fit_sr
from slimcnn.tasks._sr_train import distill_loss, patch_batches
from slimcnn.tasks.base import (
    TASKS,
    Batch,
    TrainStats,
    describe_output,
    first_line,
    is_out_of_memory,
    task_mismatch,
)
from slimcnn.tasks.metrics import psnr, ssim
from slimcnn.tasks.sr_recipes import SR_RECIPES, SRRecipe, recipe_for
from slimcnn.types import Score

__all__ = ["SR_RECIPES", "SRRecipe", "SRTask", "fit_sr", "recipe_for"]

log = logging.getLogger(__name__)

SRInput = Literal["upsampled", "lr"]

class SRTask:
    """Super-resolution task (registered as ``"sr"``).

    Args:
        data: Evaluation/training data: HR image folder, ``"photos"``, ``"photos-train"``,
            ``"photos-val"`` or an :class:`~slimcnn.data.sr.SRDataset`.
        info: The model's metadata; gives ``scale`` and ``sr_input`` (default ``"upsampled"``).
        scale: Upscaling factor; default ``info.scale`` or 2.
        val_data: Evaluate on this instead of ``data``.
        train_data: Train on this instead of ``data``.
        subset: Evaluate on at most this many images (the first ones).
        batch_size: Training batch size (default: the recipe's).
        patch: Training patch side (default: the recipe's).
        seed: Seed for patch sampling.
        stream: Cut training patches on the fly from images decoded by DataLoader workers
            (:mod:`slimcnn.data._sr_stream`) instead of degrading the training set into memory; None:
            for a folder whose triples would exceed :data:`~slimcnn.data._sr_stream.SR_STREAM_ABOVE_BYTES`.
        loader_workers: DataLoader worker processes when streaming (None: up to 8, one CPU left free).
    """

    name = "sr"

    def __init__(
        self,
        data: str | Path | SRDataset,
        *,
        info: ModelInfo | None = None,
        scale: int | None = None,
        val_data: str | Path | SRDataset | None = None,
        train_data: str | Path | SRDataset | None = None,
        subset: int | None = None,
        batch_size: int | None = None,
        patch: int | None = None,
        seed: int = 0,
        stream: bool | None = None,
        loader_workers: int | None = None,
        **unused: Any,
    ) -> None:
        if unused:
            raise ConfigError(
                f"the sr task does not take {sorted(unused)}; it takes info, scale, val_data, train_data, "
                "subset, batch_size, patch, seed, stream and loader_workers"
            )
        if loader_workers is not None and loader_workers < 0:
            raise ConfigError(f"loader_workers must be >= 0, got {loader_workers}")
        self.stream = stream
        self.loader_workers = loader_workers if loader_workers is not None else min(8, max(0, (os.cpu_count() or 1) - 1))
        self._train_files: tuple[list[tuple[str, Path]], list[tuple[int, int]]] | None = None
        self.info = info
        self.scale = int(scale or (info.scale if info is not None and info.scale else DEFAULT_SCALE))
        sr_input = (info.sr_input if info is not None else None) or "upsampled"
        if sr_input not in ("upsampled", "lr"):
            raise ConfigError(f"ModelInfo.sr_input must be 'upsampled' or 'lr', got {sr_input!r}")
        self.sr_input: SRInput = sr_input
        if subset is not None and subset < 1:
            raise ConfigError(f"--subset must be >= 1, got {subset}")
        self.subset = subset
        self.batch_size = batch_size
        self.patch = patch
        self.seed = seed
        self._data, self._val_data, self._train_data = data, val_data, train_data

    # -- data ---------------------------------------------------------------------------------
    @property
    def val_set(self) -> SRDataset:
        """The evaluation set (loaded and degraded once, then cached)."""
        return load_sr_dataset(self._val_data if self._val_data is not None else self._data, self.scale)

    @property
    def train_set(self) -> SRDataset:
        """The training set (loaded and degraded once, then cached)."""
        return load_sr_dataset(self._train_data if self._train_data is not None else self._data, self.scale)

    def _streamed_train(self) -> tuple[list[tuple[str, Path]], list[tuple[int, int]]] | None:
        """The training images' files and sizes when patches are streamed from them, else None (in memory)."""
        spec = self._train_data if self._train_data is not None else self._data
        if self.stream is False or isinstance(spec, SRDataset) or str(spec) in builtin_sr_sets():
            return None
        if self._train_files is None:
            files = sr_files(spec)[1]
            self._train_files = files, image_sizes(files)
        if self.stream is None and triple_bytes(self._train_files[1], self.scale) <= SR_STREAM_ABOVE_BYTES:
            return None
        return self._train_files

    def _input_of(self, im: SRImage) -> np.ndarray:
        return im.bicubic if self.sr_input == "upsampled" else im.lr

    def _default_recipe(self) -> SRRecipe:
        return SR_RECIPES.get("srcnn" if self.sr_input == "upsampled" else "fsrcnn")

    def _patch_size(self) -> int:
        """``patch``, else the side of ``info.input_shape`` (the model's own example), else the recipe's."""
        if self.patch:
            return self.patch
        shape = self.info.input_shape if self.info is not None else ()
        if len(shape) == 4 and shape[1] == 1:  # a 1-channel (Y) example input of the model
            return int(shape[-1])
        return self._default_recipe().patch

    def _default_batches(self, n: int, seed: int, *, augment: bool) -> list[Batch]:
        bs = self.batch_size or self._default_recipe().batch_size
        stream = patch_batches(self, patch=self._patch_size(), batch_size=bs, seed=seed, min_std=0.0, augment=augment)
        return [next(stream) for _ in range(n)]

    def training_batches(self, n: int) -> list[Batch]:
        """``n`` random (input, HR target) patch batches from the training data (seeded)."""
        return self._default_batches(n, self.seed, augment=True)

    def calibration_batches(self, n: int) -> list[torch.Tensor]:
        """``n`` model-ready input patch batches (no augmentation), for data-driven criteria."""
        return [x for x, _ in self._default_batches(n, self.seed + 1, augment=False)]

    def example_input(self, batch: int = 1) -> torch.Tensor:
        """A ``[batch, 1, p, p]`` zero input (``p``: ``patch``, else ``info.input_shape``, else the recipe's)."""
        p = self._patch_size()
        return torch.zeros(batch, 1, p, p)

    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        """MSE between the model's output and the HR patch (the L2 loss of SRCNN/FSRCNN/VDSR)."""
        x, y = batch
        out = self._fit_output(model(x), y.shape[-2:])
        return nn.functional.mse_loss(out, y)

    def _checked_forward(self, model: nn.Module, x: torch.Tensor) -> Any:
        """``model(x)`` on the first image, turning a model made for another task into a one-line error."""
        try:
            out = model(x)
        except (RuntimeError, ValueError, TypeError, IndexError) as e:
            if is_out_of_memory(e):
                raise
            raise task_mismatch("sr", f"fails on input {tuple(x.shape)} ({first_line(e)})", info=self.info) from e
        if not isinstance(out, torch.Tensor) or out.dim() != 4 or out.shape[1] != 1:
            raise task_mismatch("sr", f"outputs {describe_output(out)}", info=self.info, output=out)
        return out

    def _fit_output(self, out: Any, hw: tuple[int, ...] | torch.Size) -> torch.Tensor:
        h, w = int(hw[0]), int(hw[1])
        if not isinstance(out, torch.Tensor) or out.dim() != 4 or out.shape[1] != 1:
            raise task_mismatch("sr", f"outputs {describe_output(out)}", info=self.info, output=out)
        oh, ow = int(out.shape[-2]), int(out.shape[-1])
        # a few pixels of border are cropped; a larger output is a model for another factor, whose crop would be
        # scored as if it were the image
        if oh < h or ow < w or oh >= 1.25 * h or ow >= 1.25 * w:
            raise DataError(
                f"SR model output {(oh, ow)} is {'smaller' if oh < h or ow < w else 'larger'} than the HR size "
                f"{(h, w)} at x{self.scale}; check --scale and the model's sr_input ('{self.sr_input}')"
            )
        return out[..., :h, :w]

    # -- evaluate -----------------------------------------------------------------------------
    def evaluate(self, model: nn.Module, *, limit: int | None = None, device: str = "cpu") -> Score:
        """Mean PSNR (dB) over the evaluation images, with SSIM and the bicubic PSNR alongside.

        Whole images are run one at a time in ``inference_mode``; the output is clamped to [0, 1].
        """
        images = self.val_set.images
        n = min(x for x in (limit, self.subset, len(images)) if x is not None)
        if n < 1:
            raise ConfigError(f"limit must be >= 1, got {limit}")
        was_training = model.training
        home = next((t.device for t in model.parameters()), torch.device("cpu"))
        model.eval().to(device)
        ps, ss, pb = [], [], []
        try:  # fp32 always: PSNR near 40 dB needs more mantissa than bf16/fp16 keep
            with torch.inference_mode(), phase(f"evaluate {self.val_set.name}", total=n, unit="images") as advance:
                for k, im in enumerate(images[:n]):
                    x = torch.from_numpy(self._input_of(im).astype(np.float32))[None, None].to(device)
                    y = self._checked_forward(model, x) if k == 0 else model(x)
                    out = self._fit_output(y, im.hr.shape).clamp(0.0, 1.0)
                    sr = out[0, 0].double().cpu().numpy()
                    ps.append(psnr(sr, im.hr, shave=self.scale))
                    ss.append(ssim(sr, im.hr, shave=self.scale))
                    pb.append(psnr(im.bicubic, im.hr, shave=self.scale))
                    advance()
        finally:
            model.to(home).train(was_training)
        value = float(np.mean(ps))
        if not math.isfinite(value):
            log.warning("PSNR is not finite (%s); the model reproduces the ground truth exactly", value)
        return Score(
            metric="psnr",
            value=value,
            higher_is_better=True,
            metrics={"psnr": value, "ssim": float(np.mean(ss)), "psnr_bicubic": float(np.mean(pb))},
            n=n,
            dataset=f"{self.val_set.name} x{self.scale}",
        )

    def evaluate_bicubic(self, *, limit: int | None = None) -> Score:
        """PSNR/SSIM of plain bicubic upscaling (the baseline every SR table reports)."""
        images = self.val_set.images[: limit or self.subset or None]
        ps = [psnr(im.bicubic, im.hr, shave=self.scale) for im in images]
        ss = [ssim(im.bicubic, im.hr, shave=self.scale) for im in images]
        v = float(np.mean(ps))
        return Score(
            metric="psnr",
            value=v,
            metrics={"psnr": v, "ssim": float(np.mean(ss)), "psnr_bicubic": v},
            n=len(images),
            dataset=f"{self.val_set.name} x{self.scale}",
        )

    # -- train --------------------------------------------------------------------------------
    def finetune(
        self,
        model: nn.Module,
        steps: int,
        *,
        lr: float | None = None,
        optimizer: Literal["sgd", "adam", "adamw"] | None = None,
        batch_size: int | None = None,
        patch: int | None = None,
        grad_clip: float | None = None,
        recipe: str | None = None,
        progress: bool = True,
        device: str = "cpu",
        teacher: nn.Module | None = None,
        recovery: str = "plain",
        kd_alpha: float = 0.5,
        kd_loss: str = "l2",
        kd_features: tuple[str, ...] | list[str] = (),
        kd_feature_weight: float = 1.0,
        **kw: Any,
    ) -> TrainStats:
        """Train ``model`` in place on random HR patches with the model family's recipe.

        Patches are cut from the precomputed HR/LR/bicubic images of the training data (the same
        MATLAB degradation as evaluation), flipped/rotated at random, and fitted with MSE via
        :func:`slimcnn.train.fit_`. Explicit arguments override the recipe (see :data:`SR_RECIPES`);
        other keywords (``schedule``, ``warmup_steps``, ``weight_decay``, ``checkpoint``, ...) go to
        ``fit_``.

        With ``recovery="kd"`` the loss mixes the ground truth and the ``teacher`` (the original model,
        in eval mode under ``no_grad``): ``(1 - kd_alpha) * MSE(out, HR) + kd_alpha * D(out, teacher_out)``
        with ``D`` = ``kd_loss`` (``"l2"`` or ``"l1"``), plus ``kd_feature_weight`` times the same
        distance between the outputs of the ``kd_features`` layers (module FQNs whose outputs keep their
        shape in the student).

        Returns:
            The :class:`~slimcnn.tasks.base.TrainStats` of the run.
        """
        from slimcnn.train import OUTPUT_LOSSES, check_recovery, check_weight, fit_

        kd = check_recovery(recovery, teacher, model)
        if kd:
            check_weight("kd_alpha", kd_alpha)
            if kd_loss not in OUTPUT_LOSSES:
                raise ConfigError(f"kd_loss must be one of {list(OUTPUT_LOSSES)}, got {kd_loss!r}")
            if kd_feature_weight < 0:
                raise ConfigError(f"kd_feature_weight must be >= 0, got {kd_feature_weight}")
        rname, r = recipe_for(model, self.info, recipe)
        p = patch or self.patch or r.patch
        bs = batch_size or self.batch_size or r.batch_size
        seed = int(kw.pop("seed", self.seed))
        opts: dict[str, Any] = {
            "optimizer": optimizer or r.optimizer,
            "lr": lr or r.lr,
            "momentum": r.momentum,
            "weight_decay": r.weight_decay,
            "schedule": r.schedule,
            "warmup_steps": min(r.warmup_steps, steps // 5),
            "grad_clip": grad_clip if grad_clip is not None else r.grad_clip,
        }
        unknown = set(kw) - {
            "schedule",
            "warmup_steps",
            "weight_decay",
            "momentum",
            "checkpoint",
            "checkpoint_every",
            "params",
            "amp",
            "channels_last",
        }
        if unknown:
            raise ConfigError(f"unknown SR finetune options {sorted(unknown)}")
        opts.update(kw)
        log.info("SR finetune: recipe %s, %d steps, patch %d, batch %d, %s", rname, steps, p, bs, opts)

        def batches() -> Iterator[Batch]:
            return patch_batches(self, patch=p, batch_size=bs, seed=seed, min_std=r.min_patch_std)

        if not kd:
            return fit_(model, batches, self.loss, steps=steps, progress=progress, device=device, seed=seed, **opts)
        with distill_loss(self, model, teacher, device, kd_alpha, kd_loss, tuple(kd_features),  # type: ignore[arg-type]
                          kd_feature_weight) as loss_fn:
            return fit_(model, batches, loss_fn, steps=steps, progress=progress, device=device, seed=seed, **opts)


def _make_sr_task(data: Any, **kwargs: Any) -> SRTask:
    return SRTask(data, **kwargs)


if "sr" not in TASKS:
    TASKS.add("sr", _make_sr_task)
else:  # pragma: no cover - re-import under a different module name
    log.debug("task 'sr' already registered")
