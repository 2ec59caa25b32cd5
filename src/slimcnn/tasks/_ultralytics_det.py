"""The ultralytics ``DetectionModel`` family of the detection task: ``yolo val``'s preprocessing, its loss.

Evaluation reproduces ``yolo val`` (batch 1): the long side is resized to the input size with
OpenCV (as ultralytics' loader does), the image is letterboxed to its own stride-aligned
rectangle (the ``rect`` shape of ultralytics' val loader: ``ceil(shape * size / stride + 0.5) *
stride``), grey-padded (114) and centred; NMS is ultralytics' own with its val settings
(multi-label, ``max_det=300``; conf 0.001, IoU 0.7 unless the task sets others), and boxes go back to
the original pixels with ``ultralytics.utils.ops.scale_boxes``. Fine-tuning uses ultralytics'
criterion (``model.init_criterion()``: v8 detection loss, or the end-to-end loss of YOLO26), with the
default hyper-parameters (box 7.5, cls 0.5, dfl 1.5) unless the model carries its own ``args``.
"""

from __future__ import annotations

import math
import weakref
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from slimcnn.tasks.base import Batch

if TYPE_CHECKING:
    from slimcnn.data.detection import DetectionSample
    from slimcnn.tasks.detection import DetectionTask
    from slimcnn.tasks.detmetrics import Detections

__all__ = ["UL_CONF", "UL_IOU", "ul_head", "ul_loss", "ul_predict", "ul_rect_shape"]

UL_CONF, UL_IOU, UL_MAX_DET = 0.001, 0.7, 300
"""``yolo val``'s defaults: score threshold, NMS IoU, detections kept per image."""

_CRITERIA: weakref.WeakKeyDictionary[nn.Module, Any] = weakref.WeakKeyDictionary()


def _stride(model: nn.Module) -> int:
    stride = getattr(model, "stride", None)
    return max(int(stride.max()) if isinstance(stride, torch.Tensor) else 32, 32)


def ul_rect_shape(h0: int, w0: int, size: int, stride: int) -> tuple[int, int]:
    """The (h, w) ultralytics' val loader pads an ``h0 x w0`` image to (``rect``, batch 1, pad 0.5)."""
    ar = h0 / w0
    shape = (ar, 1.0) if ar < 1 else (1.0, 1 / ar) if ar > 1 else (1.0, 1.0)
    h, w = (int(math.ceil(s * size / stride + 0.5)) * stride for s in shape)
    return h, w


def _letterbox(path: Any, size: int, stride: int) -> tuple[np.ndarray, tuple[int, int], Any]:
    """RGB uint8 HWC letterboxed image, the original (h, w), and ``scale_boxes``' ``ratio_pad``."""
    import cv2

    im = cv2.imread(str(path))
    if im is None:
        from slimcnn._io import UNREADABLE_HINT
        from slimcnn.errors import DataError

        raise DataError(f"cannot read image {path} (OpenCV cannot decode it): {UNREADABLE_HINT}")
    h0, w0 = im.shape[:2]
    r = size / max(h0, w0)
    if r != 1:
        im = cv2.resize(im, (min(math.ceil(w0 * r), size), min(math.ceil(h0 * r), size)), interpolation=cv2.INTER_LINEAR)
    h, w = im.shape[:2]
    nh, nw = ul_rect_shape(h0, w0, size, stride)
    dh, dw = nh - h, nw - w
    top, left = round(dh / 2 - 0.1), round(dw / 2 - 0.1)
    im = cv2.copyMakeBorder(im, top, dh - top, left, dw - left, cv2.BORDER_CONSTANT, value=(114, 114, 114))
    return im[..., ::-1], (h0, w0), ((h / h0, w / w0), (left, top))


def ul_predict(model: nn.Module, samples: list[DetectionSample], task: DetectionTask) -> list[Detections]:
    """Letterboxed inference + ultralytics' NMS, boxes in original pixels (one image per forward)."""
    from ultralytics.utils.nms import non_max_suppression
    from ultralytics.utils.ops import scale_boxes

    size, stride = task.input_size or 640, _stride(model)
    conf = UL_CONF if task.conf_thres is None else task.conf_thres
    iou = UL_IOU if task.nms_iou is None else task.nms_iou
    res = []
    for s in samples:
        im, hw0, ratio_pad = _letterbox(s.path, size, stride)
        x = torch.from_numpy(np.ascontiguousarray(im)).permute(2, 0, 1)[None].to(task.device).float() / 255
        out = model(x)
        p = non_max_suppression(out[0] if isinstance(out, (tuple, list)) else out, conf, iou, multi_label=True,
                                max_det=UL_MAX_DET)[0]
        boxes = scale_boxes(x.shape[2:], p[:, :4].clone(), hw0, ratio_pad=ratio_pad)
        res.append({"boxes": boxes.float().cpu().numpy(), "scores": p[:, 4].float().cpu().numpy(),
                    "labels": p[:, 5].long().cpu().numpy()})
    return res


def _criterion(model: nn.Module) -> Any:
    """ultralytics' own criterion for ``model`` (cached per model and device), built with default hyp if needed."""
    dev = next(model.parameters()).device
    cached = _CRITERIA.get(model)
    if cached is not None and cached[0] == dev:
        return cached[1]
    from ultralytics.cfg import get_cfg

    args = getattr(model, "args", None)
    own = args if hasattr(args, "box") else SimpleNamespace(**{**vars(get_cfg()), **(args if isinstance(args, dict) else {})})
    saved = model.__dict__.get("args", None)
    model.args = own  # the criterion reads its gains from model.args; the model keeps what it had
    try:
        crit = model.init_criterion()  # type: ignore[operator]
    finally:
        if saved is None:
            del model.args
        else:
            model.args = saved
    _CRITERIA[model] = (dev, crit)
    return crit


def ul_loss(model: nn.Module, batch: Batch, task: DetectionTask) -> torch.Tensor:
    """ultralytics' detection loss (box + cls + dfl with its gains) per image of ``batch``.

    ``batch`` is ``(images Tensor[B, 3, S, S], [{"boxes": xyxy input pixels, "labels"}])``; targets are
    converted to ultralytics' ``batch_idx``/``cls``/normalised ``xywh`` layout.
    """
    x, targets = batch
    h, w = x.shape[-2:]
    scale = torch.tensor([w, h, w, h], dtype=torch.float32, device=x.device)
    idx, cls, boxes = [], [], []
    for i, t in enumerate(targets):
        b = t["boxes"].float().reshape(-1, 4)
        idx.append(torch.full((len(b),), i, dtype=torch.float32, device=x.device))
        cls.append(t["labels"].float().reshape(-1, 1))
        boxes.append(torch.cat(((b[:, :2] + b[:, 2:]) / 2, b[:, 2:] - b[:, :2]), 1) / scale)
    ul_batch = {"img": x, "batch_idx": torch.cat(idx), "cls": torch.cat(cls), "bboxes": torch.cat(boxes)}
    loss, _ = _criterion(model)(model(x), ul_batch)
    return loss.sum() / len(targets)


def ul_head(output: Any) -> torch.Tensor:
    """The raw head outputs ``Tensor[B, 4 * reg_max + nc, anchors]`` (box distributions, class logits).

    The same in train mode (ultralytics returns ``{"boxes", "scores", "feats"}``) and eval mode
    (``(decoded, that dict)``).
    """
    preds = output[1] if isinstance(output, (tuple, list)) else output
    return torch.cat((preds["boxes"], preds["scores"]), 1)
