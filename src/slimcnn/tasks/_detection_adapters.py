"""How each detection model family is fed, decoded and trained (:data:`DETECTION_ADAPTERS`).

Adapters are keyed by the model's class name (looked up along its MRO, so subclasses and pruned copies keep
their adapter):

- ``YoloFastestV2`` (``slimcnn:yolo_fastestv2``): plain resize to 352×352 RGB [0, 1], raw maps
  decoded by :func:`slimcnn.models.yolo_fastestv2.decode`; fine-tuned with
  :func:`~slimcnn.models.yolo_fastestv2.yolo_loss`.
- torchvision detectors (``GeneralizedRCNN``, ``RetinaNet``, ``FCOS``, ``SSD``): a list of RGB
  [0, 1] images at original size; their outputs are COCO category ids (1..90), mapped to the
  80 contiguous classes when the data has 80 classes (YOLO-style COCO sets such as coco8) or
  through the json's category ids (COCO json sets). Fine-tuning uses their own loss dict.
- ultralytics ``DetectionModel``: ``yolo val``'s letterbox, NMS and box rescaling (mAP comparable
  to ``yolo val``'s), fine-tuned with ultralytics' own loss on letterboxed batches
  (:mod:`slimcnn.tasks._ultralytics_det`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from slimcnn._io import open_image
from slimcnn.data.detection import DetectionSample
from slimcnn.errors import UnsupportedLayerError
from slimcnn.registry import Registry
from slimcnn.tasks._ultralytics_det import ul_head, ul_loss, ul_predict
from slimcnn.tasks.base import Batch
from slimcnn.tasks.detmetrics import Detections

if TYPE_CHECKING:  # the task module imports this one
    from slimcnn.tasks.detection import DetectionTask

COCO80_TO_91: tuple[int, ...] = (
    *range(1, 12), *range(13, 26), 27, 28, *range(31, 45), *range(46, 66), 67, 70, *range(72, 83), *range(84, 91)
)
"""COCO category id (as torchvision detectors output) of each of the 80 contiguous classes."""


def _load_rgb(path: Path, size: int | None) -> torch.Tensor:
    from PIL import Image

    with open_image(path) as im:
        im = im.convert("RGB")
        if size is not None:
            im = im.resize((size, size), Image.BILINEAR)
        a = np.asarray(im, dtype=np.uint8)
    return torch.from_numpy(a.copy()).permute(2, 0, 1)  # uint8 CHW


@dataclass(frozen=True)
class DetectionAdapter:
    """How one model family is fed, decoded and trained.

    ``predict(model, samples, task)`` returns detections in original image pixels with labels in
    the dataset's 0-based label space; ``loss(model, batch, task)`` a differentiable scalar, or
    None when the family cannot be fine-tuned here; ``head(output)`` the raw head tensors of a
    ``model(images)`` output (the same in train and eval mode), used by distillation, or None when
    the family's forward does not expose them.
    """

    name: str
    predict: Callable[[nn.Module, list[DetectionSample], DetectionTask], list[Detections]]
    input_size: Callable[[nn.Module, DetectionTask], int | None]
    loss: Callable[[nn.Module, Batch, DetectionTask], torch.Tensor] | None = None
    head: Callable[[Any], torch.Tensor] | None = None
    letterbox: bool = False
    """Train on letterboxed images (aspect kept) instead of a plain square resize."""


DETECTION_ADAPTERS: Registry[DetectionAdapter] = Registry("detection model family")
"""Adapters keyed by model class name (``YoloFastestV2``, ``GeneralizedRCNN``, ``DetectionModel``…)."""


def get_adapter(model: nn.Module) -> DetectionAdapter:
    """The adapter of the first class in ``type(model).__mro__`` that has one."""
    for cls in type(model).__mro__:
        if cls.__name__ in DETECTION_ADAPTERS:
            return DETECTION_ADAPTERS.get(cls.__name__)
    raise UnsupportedLayerError(
        f"no detection adapter for {type(model).__name__}; supported: {', '.join(DETECTION_ADAPTERS.names())}. "
        "Register one with DETECTION_ADAPTERS.add(class_name, DetectionAdapter(...))"
    )


def _to_np(d: dict[str, torch.Tensor], sx: float, sy: float) -> Detections:
    scale = torch.tensor([sx, sy, sx, sy], dtype=torch.float32)
    return {"boxes": (d["boxes"].float().cpu() * scale).numpy(), "scores": d["scores"].float().cpu().numpy(),
            "labels": d["labels"].cpu().numpy().astype(np.int64)}


# ------------------------------------------------------------------------------ Yolo-FastestV2


def _yf_size(model: nn.Module, task: DetectionTask) -> int:
    return task.input_size or 352


def _yf_predict(model: nn.Module, samples: list[DetectionSample], task: DetectionTask) -> list[Detections]:
    from slimcnn.models.yolo_fastestv2 import decode

    size = _yf_size(model, task)
    x = torch.stack([_load_rgb(s.path, size) for s in samples]).to(task.device).float() / 255
    conf = 0.01 if task.conf_thres is None else task.conf_thres
    dets = decode(model(x), conf_thres=conf, nms_iou=0.5 if task.nms_iou is None else task.nms_iou, input_size=size)
    return [_to_np(d, s.width / size, s.height / size) for d, s in zip(dets, samples, strict=True)]


def _yf_loss(model: nn.Module, batch: Batch, task: DetectionTask) -> torch.Tensor:
    from slimcnn.models.yolo_fastestv2 import yolo_loss

    return yolo_loss(model(batch[0]), batch[1], input_size=tuple(batch[0].shape[-2:]))  # type: ignore[arg-type]


DETECTION_ADAPTERS.add("YoloFastestV2", DetectionAdapter("yolo_fastestv2", _yf_predict, _yf_size, _yf_loss,
                                                    head=lambda out: out))


# --------------------------------------------------------------------------------- torchvision


def _tv_label_map(task: DetectionTask) -> dict[int, int]:
    if task.data.coco_ids:
        return {cid: i for i, cid in enumerate(task.data.coco_ids)}
    if len(task.data.names) == 80:
        return {cid: i for i, cid in enumerate(COCO80_TO_91)}
    return {i + 1: i for i in range(len(task.data.names))}  # fine-tuned: 0 = background


def _tv_predict(model: nn.Module, samples: list[DetectionSample], task: DetectionTask) -> list[Detections]:
    outs = model([_load_rgb(s.path, None).to(task.device).float() / 255 for s in samples])
    lut = _tv_label_map(task)
    res = []
    for o in outs:
        labels = [lut.get(int(v), -1) for v in o["labels"]]
        keep = torch.tensor([v >= 0 for v in labels], dtype=torch.bool)
        d = {"boxes": o["boxes"][keep], "scores": o["scores"][keep], "labels": torch.tensor(labels)[keep]}
        res.append(_to_np(d, 1.0, 1.0))
    return res


def _tv_loss(model: nn.Module, batch: Batch, task: DetectionTask) -> torch.Tensor:
    targets = [{"boxes": t["boxes"], "labels": t["labels"] + 1} for t in batch[1]]
    losses = model(list(batch[0]), targets)
    return sum(losses.values())  # type: ignore[return-value]


for _name in ("GeneralizedRCNN", "RetinaNet", "FCOS", "SSD"):
    DETECTION_ADAPTERS.add(_name, DetectionAdapter("torchvision", _tv_predict, lambda m, t: t.input_size, _tv_loss))


# -------------------------------------------------------------------------------- ultralytics


def _ul_size(model: nn.Module, task: DetectionTask) -> int:
    return task.input_size or 640


DETECTION_ADAPTERS.add("DetectionModel", DetectionAdapter("ultralytics", ul_predict, _ul_size, ul_loss, head=ul_head,
                                                           letterbox=True))
