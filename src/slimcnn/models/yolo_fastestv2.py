"""Yolo-FastestV2: a 0.24 M-parameter anchor-based detector (ShuffleNetV2 + light FPN + decoupled heads).

The architecture is defined here from the names and shapes of the released state_dict
(``coco2017-0.241078ap-model.pth``, 444 tensors, 243,095 parameters), not from the original code:

- ``backbone``: a ShuffleNetV2 with stage widths 24 / 48 / 96 / 192 (4, 8, 4 blocks). A stride-2
  block concatenates ``branch_proj(x)`` (dw3×3 s2 → BN → 1×1 → BN → ReLU) and ``branch_main(x)``
  (1×1 → BN → ReLU → dw3×3 → BN → 1×1 → BN → ReLU); a stride-1 block splits its input by channel
  parity (even channels pass through, odd channels go through ``branch_main``) and concatenates.
- ``fpn``: ``conv1x1_3`` maps the stride-32 map (192 ch) to 72 channels; ``conv1x1_2`` maps the
  concat of the stride-16 map and the 2× upsampled stride-32 map (96 + 192 = 288 ch) to 72 channels.
  Each scale then runs a regression and a classification tower (dw5×5 → BN → ReLU → 1×1 → BN →
  dw5×5 → BN → ReLU → 1×1 → BN, no final activation).
- Output convolutions are shared between the two scales: ``output_reg_layers`` (3 anchors × 4) on
  the regression tower; ``output_obj_layers`` (3) and ``output_cls_layers`` (classes, shared by
  the 3 anchors) on the classification tower.

The wiring the shapes leave open (concat order, where objectness is read, final activation,
RGB vs BGR, softmax vs sigmoid classes) was settled empirically: class-agnostic AP@.5 on 40 raccoon
images is 0.68 with this wiring against 0.08 with objectness on the regression tower, 0.61 with
the concat order swapped and 0.59 with BGR input.

``forward`` returns the raw (pre-activation) head maps flattened into one
``Tensor[B, 12 + 3 + K, H/16·W/16 + H/32·W/32]`` (stride 16 first), so that tracing, pruning and
ONNX export see one plain tensor; :func:`unflatten` restores the maps and :func:`decode` turns
them into boxes.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
import torchvision
from torch import nn

from slimcnn.errors import ConfigError, ModelLoadError
from slimcnn.models._zoo import ModelInfo, ZooEntry, register_zoo_model

__all__ = [
    "ANCHORS",
    "INPUT_SIZE",
    "STRIDES",
    "YoloFastestV2",
    "decode",
    "load_yolo_fastestv2_weights",
    "split_outputs",
    "unflatten",
    "yolo_loss",
]

log = logging.getLogger(__name__)

INPUT_SIZE = 352
"""Square input side the released weights were trained at (RGB in [0, 1], plain resize)."""
STRIDES: tuple[int, ...] = (16, 32)
ANCHORS: tuple[tuple[tuple[float, float], ...], ...] = (
    ((12.64, 19.39), (37.88, 51.48), (55.71, 138.31)),
    ((126.91, 78.23), (131.57, 214.55), (279.92, 258.87)),
)
"""(w, h) anchors in input pixels for stride 16 and stride 32 (from ``coco.data``)."""
WEIGHTS = "yolo-fastestv2/coco2017-0.241078ap-model.pth"
NUM_ANCHORS = 3


def _conv_bn(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]


class ShuffleBlock(nn.Module):
    """A ShuffleNetV2 unit; ``stride=2`` doubles the channels, ``stride=1`` keeps them."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        mid = cout // 2
        main_in = cin if stride == 2 else cin // 2
        self.branch_main = nn.Sequential(
            *_conv_bn(main_in, mid, 1),
            nn.ReLU(inplace=True),
            *_conv_bn(mid, mid, 3, stride, groups=mid),
            *_conv_bn(mid, cout - (cin if stride == 2 else cin // 2), 1),
            nn.ReLU(inplace=True),
        )
        if stride == 2:
            self.branch_proj = nn.Sequential(
                *_conv_bn(cin, cin, 3, stride, groups=cin), *_conv_bn(cin, cin, 1), nn.ReLU(inplace=True)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 2:
            return torch.cat((self.branch_proj(x), self.branch_main(x)), 1)
        # channel shuffle + split: even channels pass through, odd channels go through the main branch
        return torch.cat((x[:, 0::2], self.branch_main(x[:, 1::2])), 1)


class ShuffleNetV2Backbone(nn.Module):
    """Returns the stride-16 (96 ch) and stride-32 (192 ch) feature maps."""

    def __init__(self, widths: Sequence[int] = (24, 48, 96, 192), repeats: Sequence[int] = (4, 8, 4)) -> None:
        super().__init__()
        self.first_conv = nn.Sequential(*_conv_bn(3, widths[0], 3, 2), nn.ReLU(inplace=True))
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        for i, n in enumerate(repeats):
            cin, cout = widths[i], widths[i + 1]
            blocks = [ShuffleBlock(cin, cout, 2)] + [ShuffleBlock(cout, cout, 1) for _ in range(n - 1)]
            setattr(self, f"stage{i + 2}", nn.Sequential(*blocks))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.stage2(self.maxpool(self.first_conv(x)))
        c16 = self.stage3(x)
        return c16, self.stage4(c16)


class _Tower(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            *_conv_bn(ch, ch, 5, groups=ch),
            nn.ReLU(inplace=True),
            *_conv_bn(ch, ch, 1),
            *_conv_bn(ch, ch, 5, groups=ch),
            nn.ReLU(inplace=True),
            *_conv_bn(ch, ch, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class LightFPN(nn.Module):
    """Upsample-concat FPN over two scales with decoupled reg/cls towers per scale."""

    def __init__(self, c16: int = 96, c32: int = 192, ch: int = 72) -> None:
        super().__init__()
        self.conv1x1_2 = nn.Sequential(*_conv_bn(c16 + c32, ch, 1), nn.ReLU(inplace=True))
        self.conv1x1_3 = nn.Sequential(*_conv_bn(c32, ch, 1), nn.ReLU(inplace=True))
        self.cls_head_2, self.reg_head_2 = _Tower(ch), _Tower(ch)
        self.reg_head_3, self.cls_head_3 = _Tower(ch), _Tower(ch)
        self.upsample = nn.Upsample(scale_factor=2, mode="nearest")

    def forward(self, c16: torch.Tensor, c32: torch.Tensor) -> tuple[torch.Tensor, ...]:
        p16 = self.conv1x1_2(torch.cat((c16, self.upsample(c32)), 1))
        p32 = self.conv1x1_3(c32)
        return self.reg_head_2(p16), self.cls_head_2(p16), self.reg_head_3(p32), self.cls_head_3(p32)


class YoloFastestV2(nn.Module):
    """Yolo-FastestV2 detector returning raw head maps (see module docstring).

    Args:
        num_classes: Number of object classes (80 for the released COCO weights).

    Example:
        >>> m = YoloFastestV2().eval()
        >>> m(torch.zeros(1, 3, 352, 352)).shape  # 22*22 + 11*11 positions
        torch.Size([1, 95, 605])
    """

    def __init__(self, num_classes: int = 80) -> None:
        super().__init__()
        if num_classes < 1:
            raise ConfigError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.backbone = ShuffleNetV2Backbone()
        self.fpn = LightFPN()
        self.output_reg_layers = nn.Conv2d(72, 4 * NUM_ANCHORS, 1)
        self.output_obj_layers = nn.Conv2d(72, NUM_ANCHORS, 1)
        self.output_cls_layers = nn.Conv2d(72, num_classes, 1)

    def head_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Raw maps per stride: ``[Tensor[B, 12+3+K, H/16, W/16], Tensor[B, 12+3+K, H/32, W/32]]``.

        Channels are ``[reg (anchor-major, 4 each: x, y, w, h), obj (3), cls (K)]``, all logits.
        """
        reg16, cls16, reg32, cls32 = self.fpn(*self.backbone(x))
        return [
            torch.cat((self.output_reg_layers(reg), self.output_obj_layers(cls), self.output_cls_layers(cls)), 1)
            for reg, cls in ((reg16, cls16), (reg32, cls32))
        ]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Raw outputs as one ``Tensor[B, 12+3+K, H/16·W/16 + H/32·W/32]`` (maps flattened, stride 16 first).

        One tensor keeps export, latency and output-shape protection simple; :func:`unflatten`
        (or :meth:`head_maps`) gives the per-stride maps back.
        """
        return torch.cat([m.flatten(2) for m in self.head_maps(x)], 2)


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


def load_yolo_fastestv2_weights(model: nn.Module, path: str) -> None:
    """Load the released COCO state_dict strictly; with another class count, all but the cls conv."""
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError) as e:
        raise ModelLoadError(f"could not read Yolo-FastestV2 weights {path}: {e}") from e
    cls_w = model.get_submodule("output_cls_layers").weight
    if sd["output_cls_layers.weight"].shape != cls_w.shape:
        sd = {k: v for k, v in sd.items() if not k.startswith("output_cls_layers.")}
        missing, unexpected = model.load_state_dict(sd, strict=False)
        if unexpected or set(missing) != {"output_cls_layers.weight", "output_cls_layers.bias"}:
            raise ModelLoadError(f"{path} does not match Yolo-FastestV2: missing {missing}, unexpected {unexpected}")
        log.info("loaded %s without the 80-class head (new head: %d classes)", path, cls_w.shape[0])
        return
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        raise ModelLoadError(f"{path} does not match Yolo-FastestV2: {e}") from e


def _build(num_classes: int = 80) -> YoloFastestV2:
    return YoloFastestV2(num_classes=num_classes)


register_zoo_model(
    ZooEntry(
        name="yolo_fastestv2",
        build=_build,
        info=ModelInfo(
            task="detection",
            input_shape=(1, 3, INPUT_SIZE, INPUT_SIZE),
            num_classes=80,
            notes=(
                "input: RGB in [0, 1], plain resize to 352x352 (no letterbox, no mean/std)",
                "output: one raw tensor [B, 15+K, 22*22+11*11]; boxes via slimcnn.models.yolo_fastestv2.decode",
                "claimed COCO val2017 mAP@0.5 24.10 (dog-qiuqiu/Yolo-FastestV2)",
            ),
        ),
        weights=lambda **_: WEIGHTS,
        load_weights=load_yolo_fastestv2_weights,
        description="Yolo-FastestV2 detector, 0.24 M params, 80 COCO classes, 352x352",
    )
)


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
