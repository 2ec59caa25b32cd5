"""Detection metrics: COCO mAP (pycocotools, built in memory) and Caltech log-average miss rate."""

from __future__ import annotations

import contextlib
import functools
import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from slimcnn.data.detection import DetectionSet
from slimcnn.errors import require

__all__ = ["Detections", "coco_map", "log_average_miss_rate"]

Detections = dict[str, np.ndarray]
"""One image's predictions: ``boxes`` (N×4 xyxy pixels), ``scores`` (N), ``labels`` (N, 0-based)."""


@functools.lru_cache(maxsize=2)
def _coco_gt(path: str, mtime_ns: int) -> Any:
    """pycocotools' COCO of a json file (cached: a full COCO val json takes seconds to index)."""
    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(path)


def _summarize(gt: Any, dets: list[dict[str, Any]], image_ids: list[int] | None = None) -> tuple[float, float]:
    from pycocotools.cocoeval import COCOeval

    if not dets:
        return 0.0, 0.0
    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(gt, gt.loadRes(dets), "bbox")
        if image_ids is not None:
            ev.params.imgIds = image_ids
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return max(float(ev.stats[0]), 0.0), max(float(ev.stats[1]), 0.0)


def _coco_json_map(data: DetectionSet, preds: Sequence[Detections]) -> tuple[float, float]:
    """mAP against the set's own COCO json (crowd regions, segmentation areas), on its samples' images."""
    path = Path(data.coco_json)
    gt = _coco_gt(str(path), path.stat().st_mtime_ns)
    dets = [{"image_id": s.image_id, "category_id": data.coco_ids[int(lab)], "bbox": [x1, y1, x2 - x1, y2 - y1],
             "score": sc}
            for s, p in zip(data.samples, preds, strict=True)
            for (x1, y1, x2, y2), sc, lab in zip(p["boxes"].tolist(), p["scores"].tolist(), p["labels"].tolist(),
                                                 strict=True)
            if 0 <= lab < len(data.coco_ids)]  # a label the json has no category for cannot match anything
    return _summarize(gt, dets, [int(s.image_id) for s in data.samples if s.image_id is not None])


def coco_map(data: DetectionSet, preds: Sequence[Detections]) -> tuple[float, float]:
    """COCO ``(mAP@[.5:.95], mAP@.5)`` of ``preds`` (one per sample, same order) over ``data``.

    A set read from a COCO json is scored against that json itself (crowd regions and segmentation
    areas as in the official protocol), on the set's images only. Other sets (YOLO txt, VOC) are
    built as COCO objects in memory with box areas and no crowd regions, as ``yolo val`` builds
    them. pycocotools' prints are silenced. Classes without ground truth are ignored by COCOeval.
    """
    require("pycocotools", "detection")
    from pycocotools.coco import COCO

    if data.coco_json:
        return _coco_json_map(data, preds)
    images, anns, dets = [], [], []
    for i, (s, p) in enumerate(zip(data.samples, preds, strict=True)):
        images.append({"id": i, "width": s.width, "height": s.height})
        for (x1, y1, x2, y2), lab in zip(s.boxes, s.labels, strict=True):
            w, h = x2 - x1, y2 - y1
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": int(lab), "bbox": [x1, y1, w, h],
                         "area": w * h, "iscrowd": 0})
        for (x1, y1, x2, y2), sc, lab in zip(p["boxes"].tolist(), p["scores"].tolist(), p["labels"].tolist(),
                                             strict=True):
            dets.append({"image_id": i, "category_id": int(lab), "bbox": [x1, y1, x2 - x1, y2 - y1], "score": sc})
    if not anns:
        return 0.0, 0.0
    n_cls = max(len(data.names), 1 + max(a["category_id"] for a in anns))
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {"images": images, "annotations": anns, "categories": [{"id": k} for k in range(n_cls)]}
        gt.createIndex()
    return _summarize(gt, dets)


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None] - inter + 1e-9)


def log_average_miss_rate(
    data: DetectionSet, preds: Sequence[Detections], *, iou: float = 0.5,
    fppi_range: tuple[float, float] = (1e-2, 1.0), points: int = 9,
) -> float:
    """Caltech log-average miss rate (lower is better), all classes pooled.

    Detections are matched greedily by score to unmatched ground truth at IoU >= ``iou``; the
    miss rate is read at ``points`` FPPI values log-spaced over ``fppi_range`` (the largest FPPI
    not above each reference; miss rate 1 where the curve has not reached it) and averaged in log
    space (`Dollár et al., PAMI 2012 <https://doi.org/10.1109/TPAMI.2011.155>`_).
    """
    n_gt = sum(len(s.boxes) for s in data.samples)
    if n_gt == 0 or not data.samples:
        return float("nan")
    scores, tps = [], []
    for s, p in zip(data.samples, preds, strict=True):
        gt = np.asarray(s.boxes, dtype=np.float64).reshape(-1, 4)
        order = np.argsort(-p["scores"])
        boxes = np.asarray(p["boxes"], dtype=np.float64).reshape(-1, 4)[order]
        used = np.zeros(len(gt), bool)
        ious = _iou(boxes, gt) if len(gt) and len(boxes) else np.zeros((len(boxes), 0))
        for k in range(len(boxes)):
            cand = np.where(~used & (ious[k] >= iou))[0] if ious.shape[1] else np.array([], int)
            hit = cand.size > 0
            if hit:
                used[cand[np.argmax(ious[k, cand])]] = True
            tps.append(hit)
        scores.extend(np.asarray(p["scores"])[order].tolist())
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    tp = np.asarray(tps, bool)[order] if tps else np.zeros(0, bool)
    miss = 1.0 - np.cumsum(tp) / n_gt
    fppi = np.cumsum(~tp) / len(data.samples)
    refs = np.logspace(math.log10(fppi_range[0]), math.log10(fppi_range[1]), points)
    mrs = []
    for r in refs:
        ok = np.where(fppi <= r)[0]
        mrs.append(miss[ok[-1]] if ok.size else 1.0)
    return float(np.exp(np.mean(np.log(np.maximum(mrs, 1e-10)))))
