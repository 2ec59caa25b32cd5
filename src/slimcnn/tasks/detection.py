"""Object detection task: COCO mAP (pycocotools), log-average miss rate, YOLO-style fine-tuning.

Models plug in through :data:`DETECTION_ADAPTERS` (YOLO-FastestV2, torchvision detectors, ultralytics
``DetectionModel``: :mod:`slimcnn.tasks._detection_adapters`).
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from slimcnn._io import open_image
from slimcnn.data.detection import DetectionSample, DetectionSet, load_detection
from slimcnn.errors import ConfigError, UnsupportedLayerError
from slimcnn.models._zoo import ModelInfo
from slimcnn.tasks._detection_adapters import (
    COCO80_TO_91,
    DETECTION_ADAPTERS,
    DetectionAdapter,
    _load_rgb,
    get_adapter,
)
from slimcnn.tasks.base import TASKS, Batch, TrainStats, describe_output, guess_task, task_mismatch
from slimcnn.tasks.detmetrics import Detections, coco_map, log_average_miss_rate
from slimcnn.types import Score

__all__ = ["COCO80_TO_91", "DETECTION_ADAPTERS", "DetectionAdapter", "DetectionTask", "get_adapter"]

log = logging.getLogger(__name__)


def _letterbox_rgb(path: Path, size: int) -> tuple[torch.Tensor, float, tuple[int, int]]:
    """uint8 CHW ``size x size`` image letterboxed (aspect kept, centred, grey 114), its gain and (left, top)."""
    from PIL import Image

    with open_image(path) as im:
        im = im.convert("RGB")
        gain = size / max(im.size)
        w, h = max(round(im.size[0] * gain), 1), max(round(im.size[1] * gain), 1)
        canvas = Image.new("RGB", (size, size), (114, 114, 114))
        left, top = (size - w) // 2, (size - h) // 2
        canvas.paste(im.resize((w, h), Image.BILINEAR), (left, top))
        a = np.asarray(canvas, dtype=np.uint8)
    return torch.from_numpy(a.copy()).permute(2, 0, 1), gain, (left, top)


class _ImageCache:
    """Decoded training images, least recently used dropped first beyond ``max_bytes``."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes, self.nbytes = max_bytes, 0
        self._items: OrderedDict[tuple[Any, ...], tuple[torch.Tensor, Any]] = OrderedDict()

    def get(self, key: tuple[Any, ...], load: Callable[[], tuple[torch.Tensor, Any]]) -> tuple[torch.Tensor, Any]:
        """The cached ``(image, meta)`` for ``key``, loading (and caching, if it fits) on a miss."""
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        item = load()
        size = item[0].numel() * item[0].element_size()
        if size <= self.max_bytes:
            self._items[key] = item
            self.nbytes += size
            while self.nbytes > self.max_bytes:
                _, (old, _) = self._items.popitem(last=False)
                self.nbytes -= old.numel() * old.element_size()
        return item

    def __len__(self) -> int:
        return len(self._items)


# ---------------------------------------------------------------------------------------- task


class DetectionTask:
    """COCO-style detection on a :class:`~slimcnn.data.detection.DetectionSet`.

    Args:
        data: spec of the data (YOLO folder, VOC folder with split CSVs, COCO json).
        info: the model's metadata; ``input_shape[-1]`` sets the square input size.
        val_data: evaluate on this spec instead (default: ``data``'s val/test split).
        train_data: fine-tune on this spec (default: ``data``'s train split).
        subset: evaluate on the first N images only.
        batch_size: images per batch (default 8).
        seed: augmentation / shuffling seed.
        metric: headline metric, ``"map50_95"`` (default) or ``"map50"``.
        conf_thres: score threshold before NMS (default: the family's, 0.01 for Yolo-FastestV2 as in
            COCO evaluation practice, 0.001 for ultralytics as in ``yolo val``).
        nms_iou: NMS IoU threshold (default: the family's, 0.5 Yolo-FastestV2, 0.7 ultralytics).
        cache_bytes: decoded training images kept in memory (least recently used dropped first); with
            ``loader_workers`` shared out between the workers, each keeping its own part.
        loader_workers: DataLoader worker processes that decode training batches (0: this process); the
            batches are the same with any number.
    """

    name = "detection"

    def __init__(
        self, data: str | Path, *, info: ModelInfo | None = None, val_data: str | Path | None = None,
        train_data: str | Path | None = None, subset: int | None = None, batch_size: int = 8, seed: int = 0,
        metric: Literal["map50_95", "map50"] = "map50_95", conf_thres: float | None = None,
        nms_iou: float | None = None, device: str = "cpu", scale: int | None = None, cache_bytes: int = 1 << 30,
        loader_workers: int = 0,
    ) -> None:
        if loader_workers < 0:
            raise ConfigError(f"loader_workers must be >= 0, got {loader_workers}")
        self.loader_workers = loader_workers
        if scale is not None:
            raise ConfigError(f"--scale is a super-resolution option; the detection task takes none (got {scale})")
        if metric not in ("map50_95", "map50"):
            raise ConfigError(f"detection metric must be 'map50_95' or 'map50', got {metric!r}")
        self.data = load_detection(val_data or data, "val").head(subset)
        self._train_spec = train_data or data
        self._train: DetectionSet | None = None
        self.info = info
        shape = info.input_shape if info is not None else None
        self.input_size: int | None = int(shape[-1]) if shape and len(shape) == 4 else None
        self.batch_size, self.seed, self.metric = batch_size, seed, metric
        self.conf_thres, self.nms_iou, self.device = conf_thres, nms_iou, device
        self._cache = _ImageCache(cache_bytes)

    @property
    def train_set(self) -> DetectionSet:
        """The training split (loaded on first use)."""
        if self._train is None:
            self._train = load_detection(self._train_spec, "train")
        return self._train

    @torch.inference_mode()
    def predict(self, model: nn.Module, data: DetectionSet | None = None, device: str = "cpu") -> list[Detections]:
        """Detections of ``model`` on every sample (original pixels, dataset label space)."""
        adapter, data = self._adapter(model), data or self.data
        self.device = device
        was_training = model.training
        model.eval().to(device)
        try:
            out: list[Detections] = []
            for i in range(0, len(data), self.batch_size):
                out.extend(adapter.predict(model, list(data.samples[i : i + self.batch_size]), self))
        finally:
            model.train(was_training)
        return out

    def _adapter(self, model: nn.Module) -> DetectionAdapter:
        """:func:`get_adapter`, or a one-line ``--task`` error for a classifier/SR model."""
        try:
            return get_adapter(model)
        except UnsupportedLayerError as e:
            own = getattr(self.info, "task", None)
            if own not in (None, "detection"):
                raise task_mismatch("detection", f"({type(model).__name__}) is not one (its task is {own})", info=self.info) from e
            try:
                with torch.inference_mode():
                    out = model.eval()(self.example_input(1))
            except (RuntimeError, ValueError, TypeError, IndexError):
                raise e from None
            if guess_task(out) in ("classification", "sr"):
                raise task_mismatch("detection", f"({type(model).__name__}) outputs {describe_output(out)}",
                                    info=self.info, output=out) from e
            raise

    def evaluate(self, model: nn.Module, *, limit: int | None = None, device: str = "cpu") -> Score:
        """COCO mAP@[.5:.95] and mAP@.5 (+ LAMR for single-class sets) on the evaluation split."""
        data = self.data.head(limit)
        preds = self.predict(model, data, device)
        m5095, m50 = coco_map(data, preds)
        metrics = {"map50_95": m5095, "map50": m50}
        if len(data.names) == 1:
            metrics["lamr"] = log_average_miss_rate(data, preds)
        return Score(self.metric, metrics[self.metric], True, metrics, len(data),
                     f"{data.source}:{data.split}" if data.split else data.source)

    # ------------------------------------------------------------------ training-side API

    def _image(self, s: DetectionSample, size: int, letterbox: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """uint8 CHW input image, and the per-coordinate gain and offset that map its boxes into it."""
        def load() -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
            if letterbox:
                im, g, (left, top) = _letterbox_rgb(s.path, size)
                return im, (torch.tensor([g] * 4), torch.tensor([left, top] * 2, dtype=torch.float32))
            return _load_rgb(s.path, size), (torch.tensor([size / s.width, size / s.height] * 2), torch.zeros(4))

        im, (gain, offset) = self._cache.get((s.path, size, letterbox), load)
        return im, gain, offset

    def _batch(self, plan: tuple[list[int], list[bool]], letterbox: bool = False) -> Batch:
        """The batch of training samples ``plan[0]``, each flipped horizontally where ``plan[1]`` says."""
        size = self.input_size or 352
        imgs, targets = [], []
        for j, flip in zip(*plan, strict=True):
            s = self.train_set.samples[j]
            im, gain, offset = self._image(s, size, letterbox)
            x = im.float() / 255
            boxes = torch.tensor(s.boxes, dtype=torch.float32).reshape(-1, 4) * gain + offset
            if flip:
                x = x.flip(-1)
                boxes = torch.stack((size - boxes[:, 2], boxes[:, 1], size - boxes[:, 0], boxes[:, 3]), 1)
            imgs.append(x)
            targets.append({"boxes": boxes, "labels": torch.tensor(s.labels, dtype=torch.int64)})
        return torch.stack(imgs), targets

    def _plans(self, augment: bool) -> Iterator[tuple[list[int], list[bool]]]:
        """Endless batches as (sample indices, flips): a seeded shuffle per pass, a coin per sample."""
        gen = torch.Generator().manual_seed(self.seed)
        n = len(self.train_set)
        while True:
            order = torch.randperm(n, generator=gen).tolist()
            for i in range(0, n - self.batch_size + 1 if n >= self.batch_size else 1, self.batch_size):
                picks = order[i : i + self.batch_size]
                yield picks, [bool(torch.rand((), generator=gen) < 0.5) if augment else False for _ in picks]

    def _stream(self, augment: bool, letterbox: bool = False) -> Iterator[Batch]:
        """Training batches: decoded here (``loader_workers=0``) or by DataLoader workers, the same batches."""
        if not self.loader_workers:
            return (self._batch(plan, letterbox) for plan in self._plans(augment))
        from torch.utils.data import DataLoader

        self.train_set  # noqa: B018 - read the annotations once, before the workers fork
        data = _DetectionBatches(self, letterbox, self._cache.max_bytes // self.loader_workers)
        return iter(DataLoader(data, batch_size=None, sampler=_Plans(self, augment), num_workers=self.loader_workers,
                               prefetch_factor=2, collate_fn=_as_is))

    def training_batches(self, n: int) -> list[Batch]:
        """``n`` augmented (images Tensor[B, 3, S, S], targets in input pixels) batches."""
        it = self._stream(True)
        return [next(it) for _ in range(n)]

    def calibration_batches(self, n: int) -> list[torch.Tensor]:
        """``n`` un-augmented input batches from the training split."""
        it = self._stream(False)
        return [next(it)[0] for _ in range(n)]

    def example_input(self, batch: int = 1) -> torch.Tensor:
        """A zero input of the model's size (352 by default)."""
        size = self.input_size or 352
        return torch.zeros(batch, 3, size, size)

    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        """The family's training loss on ``batch`` (moved to the model's device)."""
        adapter = get_adapter(model)
        if adapter.loss is None:
            raise UnsupportedLayerError(f"fine-tuning {adapter.name} models is not supported by the detection task")
        dev = next(model.parameters()).device
        x, targets = batch
        targets = [{k: v.to(dev) for k, v in t.items()} for t in targets]
        return adapter.loss(model, (x.to(dev), targets), self)

    def finetune(
        self, model: nn.Module, steps: int, *, teacher: nn.Module | None = None, recovery: str = "plain",
        kd_alpha: float = 0.5, **options: Any,
    ) -> TrainStats:
        """Fine-tune in place with :func:`slimcnn.train.fit_` (default Adam, lr 1e-3, cosine).

        Options are forwarded to ``fit_`` (``lr``, ``optimizer``, ``device``, ``warmup_steps``…).
        With ``recovery="kd"`` the loss is ``(1 - kd_alpha) * family loss + kd_alpha * MSE`` between the
        student's and the ``teacher``'s raw head outputs (adapters with a ``head``: Yolo-FastestV2, ultralytics).

        Raises:
            ConfigError: ``recovery="kd"`` without a teacher, or for a family whose adapter exposes no head outputs.
        """
        from slimcnn.train import check_recovery, check_weight, fit_

        kd = check_recovery(recovery, teacher, model)
        adapter = get_adapter(model)
        if kd:
            check_weight("kd_alpha", kd_alpha)
            if adapter.head is None:
                raise ConfigError(f"--recovery kd needs the head outputs of {adapter.name} models, which their "
                                  "adapter does not expose; use --recovery plain")
        if steps <= 0:
            return TrainStats(0, float("nan"), 0.0, 0.0, str(options.get("device", "cpu")))
        opts: dict[str, Any] = {"optimizer": "adam", "lr": 1e-3, "progress": False, "warmup_steps": min(20, steps // 10)}
        opts.update(options)
        t0 = time.perf_counter()
        model.train()
        if kd:
            stats = self._distil(model, teacher, adapter, steps, kd_alpha, opts)  # type: ignore[arg-type]
        else:
            stats = fit_(model, lambda: self._stream(True, adapter.letterbox), self.loss, steps=steps, **opts)
        log.info("detection finetune: %d steps in %.1fs", steps, time.perf_counter() - t0)
        return stats

    def _distil(self, model: nn.Module, teacher: nn.Module, adapter: DetectionAdapter, steps: int,
                alpha: float, opts: dict[str, Any]) -> TrainStats:
        """``fit_`` with the family loss mixed with L2 to the teacher's head outputs (captured by a hook)."""
        from slimcnn.train import fit_, output_distill_loss, teacher_on

        seen: dict[str, Any] = {}
        head: Callable[[Any], torch.Tensor] = adapter.head  # type: ignore[assignment]
        hook = model.register_forward_hook(lambda _m, _i, out: seen.__setitem__("out", out))
        try:
            with teacher_on(teacher, opts.get("device", "cpu")) as run_teacher:
                def loss(student: nn.Module, batch: Batch) -> torch.Tensor:
                    seen.clear()
                    task_loss = self.loss(student, batch)
                    x = batch[0].to(next(student.parameters()).device)
                    return (1.0 - alpha) * task_loss + alpha * output_distill_loss(head(seen["out"]), head(run_teacher(x)))

                return fit_(model, lambda: self._stream(True, adapter.letterbox), loss, steps=steps, **opts)
        finally:
            hook.remove()


class _Plans:
    """The batch plans of :meth:`DetectionTask._plans`, as a DataLoader sampler (drawn in the main process)."""

    def __init__(self, task: DetectionTask, augment: bool) -> None:
        self.task, self.augment = task, augment

    def __iter__(self) -> Iterator[tuple[list[int], list[bool]]]:
        return self.task._plans(self.augment)


class _DetectionBatches(torch.utils.data.Dataset[Batch]):
    """Builds a planned batch in a DataLoader worker, with that worker's own bounded image cache."""

    def __init__(self, task: DetectionTask, letterbox: bool, cache_bytes: int) -> None:
        self.task, self.letterbox, self.cache_bytes = task, letterbox, cache_bytes
        self._own_cache = False

    def __getitem__(self, plan: tuple[list[int], list[bool]]) -> Batch:  # type: ignore[override]
        if not self._own_cache:  # in the worker: the parent's cache stays the parent's
            self.task._cache = _ImageCache(self.cache_bytes)
            self._own_cache = True
        return self.task._batch(plan, self.letterbox)


def _as_is(batch: Batch) -> Batch:
    return batch


def _factory(data: str | Path, **kwargs: Any) -> DetectionTask:
    return DetectionTask(data, **kwargs)


TASKS.add("detection", _factory)
