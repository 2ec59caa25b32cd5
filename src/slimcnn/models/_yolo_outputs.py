"""Yolo-FastestV2's raw head maps: anchors and strides, unflattening, box decoding and the training loss."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torchvision
from torch import nn

from slimcnn.errors import ConfigError

INPUT_SIZE = 352
"""Square input side the released weights were trained at (RGB in [0, 1], plain resize)."""
STRIDES: tuple[int, ...] = (16, 32)
ANCHORS: tuple[tuple[tuple[float, float], ...], ...] = (
    ((12.64, 19.39), (37.88, 51.48), (55.71, 138.31)),
    ((126.91, 78.23), (131.57, 214.55), (279.92, 258.87)),
)
"""(w, h) anchors in input pixels for stride 16 and stride 32 (from ``coco.data``)."""
NUM_ANCHORS = 3


def unflatten(
    out: torch.Tensor | Sequence[torch.Tensor], input_size: int | tuple[int, int] = INPUT_SIZE,
    strides: Sequence[int] = STRIDES,
) -> list[torch.Tensor]:
    """Per-stride maps ``Tensor[B, C, ceil(H/s), ceil(W/s)]`` from :meth:`YoloFastestV2.forward`'s output.

    A list of maps is returned unchanged.
    """
    if not isinstance(out, torch.Tensor):
        return list(out)
    h, w = (input_size, input_size) if isinstance(input_size, int) else input_size
    sizes = [(-(-h // st), -(-w // st)) for st in strides]
    if sum(a * b for a, b in sizes) != out.shape[-1]:
        raise ConfigError(f"output has {out.shape[-1]} positions, but input {h}x{w} at strides {tuple(strides)} "
                          f"gives {sum(a * b for a, b in sizes)}; pass the model's input_size")
    parts = out.split([a * b for a, b in sizes], -1)
    return [p.reshape(*out.shape[:-1], a, b) for p, (a, b) in zip(parts, sizes, strict=True)]


def split_outputs(out: torch.Tensor, num_anchors: int = NUM_ANCHORS) -> tuple[torch.Tensor, ...]:
    """Split one raw map into ``reg (B, A, 4, H, W)``, ``obj (B, A, H, W)``, ``cls (B, K, H, W)``."""
    b, _, h, w = out.shape
    reg = out[:, : 4 * num_anchors].reshape(b, num_anchors, 4, h, w)
    obj = out[:, 4 * num_anchors : 5 * num_anchors]
    return reg, obj, out[:, 5 * num_anchors :]


def decode_boxes(
    reg: torch.Tensor, anchors: torch.Tensor, stride: int
) -> torch.Tensor:
    """Box regression to xyxy pixels: centre ``(2σ(t)-0.5+grid)·stride``, size ``(2σ(t))²·anchor``.

    Args:
        reg (Tensor[B, A, 4, H, W]): regression logits.
        anchors (Tensor[A, 2]): anchor (w, h) in input pixels.
        stride: feature stride in pixels.

    Returns:
        Tensor[B, A, H, W, 4] boxes (x1, y1, x2, y2) in input pixels.
    """
    _, _, _, h, w = reg.shape
    gy, gx = torch.meshgrid(
        torch.arange(h, device=reg.device, dtype=reg.dtype), torch.arange(w, device=reg.device, dtype=reg.dtype),
        indexing="ij",
    )
    t = reg.sigmoid()
    cx = (t[:, :, 0] * 2 - 0.5 + gx) * stride
    cy = (t[:, :, 1] * 2 - 0.5 + gy) * stride
    bw = (t[:, :, 2] * 2) ** 2 * anchors[None, :, 0, None, None]
    bh = (t[:, :, 3] * 2) ** 2 * anchors[None, :, 1, None, None]
    return torch.stack((cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2), -1)


def decode(
    outputs: torch.Tensor | Sequence[torch.Tensor],
    anchors: Sequence[Sequence[tuple[float, float]]] = ANCHORS,
    strides: Sequence[int] = STRIDES,
    conf_thres: float = 0.01,
    nms_iou: float = 0.5,
    max_det: int = 300,
    input_size: int | tuple[int, int] = INPUT_SIZE,
) -> list[dict[str, torch.Tensor]]:
    """Raw Yolo-FastestV2 maps → per-image detections (class-aware NMS).

    The score of a (cell, anchor, class) is ``σ(obj) · softmax(cls)`` (the class scores are
    shared by the anchors of a cell).

    Args:
        outputs: the model's output (``Tensor[B, 5A+K, N]``) or one ``Tensor[B, 5A+K, H, W]`` per stride.
        anchors: per-stride lists of ``(w, h)`` anchors in input pixels.
        strides: the stride of each output.
        conf_thres: minimum score kept before NMS.
        nms_iou: IoU threshold of the (per class) NMS.
        max_det: most detections kept per image.
        input_size: the model input's side (or (H, W)), to unflatten a single output tensor.

    Returns:
        One dict per image: ``boxes`` (Tensor[N, 4], xyxy input pixels), ``scores`` (Tensor[N]),
        ``labels`` (Tensor[N], 0-based class index).
    """
    outputs = unflatten(outputs, input_size, strides)
    if len(outputs) != len(strides) or len(anchors) != len(strides):
        raise ConfigError(f"need one anchor set and stride per output: {len(outputs)} outputs, "
                          f"{len(anchors)} anchor sets, {len(strides)} strides")
    all_boxes, all_scores = [], []
    for out, anc, stride in zip(outputs, anchors, strides, strict=True):
        a = torch.as_tensor(anc, dtype=out.dtype, device=out.device)
        reg, obj, cls = split_outputs(out, len(anc))
        boxes = decode_boxes(reg, a, stride)  # B, A, H, W, 4
        cls_p = cls.float().softmax(1) if cls.shape[1] > 1 else torch.ones_like(cls)
        scores = obj.sigmoid()[:, :, None] * cls_p[:, None]  # B, A, K, H, W
        b, na, k, h, w = scores.shape
        all_boxes.append(boxes.reshape(b, -1, 4))
        all_scores.append(scores.permute(0, 1, 3, 4, 2).reshape(b, na * h * w, k))
    boxes_b, scores_b = torch.cat(all_boxes, 1), torch.cat(all_scores, 1)
    results = []
    for boxes, scores in zip(boxes_b, scores_b, strict=True):
        idx, lab = (scores > conf_thres).nonzero(as_tuple=True)
        bx, sc = boxes[idx], scores[idx, lab]
        keep = torchvision.ops.batched_nms(bx, sc, lab, nms_iou)[:max_det]
        results.append({"boxes": bx[keep], "scores": sc[keep], "labels": lab[keep]})
    return results

def yolo_loss(
    outputs: torch.Tensor | Sequence[torch.Tensor],
    targets: Sequence[dict[str, torch.Tensor]],
    anchors: Sequence[Sequence[tuple[float, float]]] = ANCHORS,
    strides: Sequence[int] = STRIDES,
    *,
    anchor_ratio: float = 4.0,
    box_weight: float = 5.0,
    input_size: int | tuple[int, int] = INPUT_SIZE,
) -> torch.Tensor:
    """A YOLO-style training loss on raw Yolo-FastestV2 maps (our own formulation).

    Assignment: a ground-truth box goes to the cell holding its centre at every stride, for every
    anchor whose width and height ratios to the box are all below ``anchor_ratio``. Loss =
    ``box_weight · (1 − GIoU)`` over assigned anchors + BCE objectness over all anchors (target
    1 at assigned anchors) + cross-entropy of the (anchor-shared) class scores at assigned cells.

    Args:
        outputs: the model's output (``Tensor[B, 5A+K, N]``) or one ``Tensor[B, 5A+K, H, W]`` per stride.
        targets: per image ``boxes`` (Tensor[N, 4], xyxy input pixels) and ``labels`` (Tensor[N]).
        anchors: per-stride ``(w, h)`` anchors in input pixels.
        strides: the stride of each output.
        anchor_ratio: largest box/anchor side ratio an anchor may take.
        box_weight: weight of the GIoU term.
        input_size: the model input's side (or (H, W)), to unflatten a single output tensor.

    Returns:
        The scalar loss (differentiable).
    """
    from torchvision.ops import generalized_box_iou_loss

    outputs = unflatten(outputs, input_size, strides)
    total = outputs[0].new_zeros(())
    for out, anc, stride in zip(outputs, anchors, strides, strict=True):
        a = torch.as_tensor(anc, dtype=out.dtype, device=out.device)
        reg, obj, cls = split_outputs(out, len(anc))
        b, na, h, w = obj.shape
        obj_t = torch.zeros_like(obj)
        bi, ai, gy, gx, tbox, tcls = [], [], [], [], [], []
        for i, t in enumerate(targets):
            boxes = t["boxes"].to(out.device, out.dtype).reshape(-1, 4)
            if not len(boxes):
                continue
            wh = (boxes[:, 2:] - boxes[:, :2]).clamp(min=1.0)
            ratio = wh[:, None] / a[None]  # N, A, 2
            ok = torch.maximum(ratio, 1 / ratio).amax(-1) < anchor_ratio
            n_idx, a_idx = ok.nonzero(as_tuple=True)
            ctr = (boxes[n_idx, :2] + boxes[n_idx, 2:]) / 2 / stride
            bi.append(torch.full_like(n_idx, i))
            ai.append(a_idx)
            gx.append(ctr[:, 0].long().clamp(0, w - 1))
            gy.append(ctr[:, 1].long().clamp(0, h - 1))
            tbox.append(boxes[n_idx])
            tcls.append(t["labels"].to(out.device)[n_idx].long())
        if bi:
            bi_t, ai_t, gy_t, gx_t = torch.cat(bi), torch.cat(ai), torch.cat(gy), torch.cat(gx)
        if bi and len(bi_t):
            pbox = decode_boxes(reg, a, stride)[bi_t, ai_t, gy_t, gx_t]
            total = total + box_weight * generalized_box_iou_loss(pbox, torch.cat(tbox), reduction="mean")
            obj_t[bi_t, ai_t, gy_t, gx_t] = 1.0
            if cls.shape[1] > 1:
                total = total + nn.functional.cross_entropy(cls[bi_t, :, gy_t, gx_t], torch.cat(tcls))
        total = total + nn.functional.binary_cross_entropy_with_logits(obj, obj_t, reduction="sum") / max(b, 1) / 100
    return total
