"""Save a (pruned) ultralytics model as a checkpoint that ``ultralytics.YOLO(path)`` loads."""

from __future__ import annotations

import copy
import datetime
from pathlib import Path
from typing import Any

from torch import nn

from slimcnn._io import save_torch


def is_ultralytics_model(model: nn.Module) -> bool:
    """True for ultralytics ``BaseModel`` subclasses (DetectionModel, ...)."""
    return type(model).__module__.startswith("ultralytics.")


def sync_ultralytics_widths_(model: nn.Module) -> int:
    """Update the hidden width ``c`` that ultralytics' C2f-family ``forward_split`` uses in
    ``split((c, c))`` (the default ``forward`` uses ``chunk(2)``, which the graph ties, so both halves
    keep equal widths). Returns the number of modules updated."""
    n = 0
    for m in model.modules():
        cv1 = getattr(m, "cv1", None)
        conv = getattr(cv1, "conv", cv1)
        if hasattr(m, "forward_split") and isinstance(getattr(m, "c", None), int) and isinstance(conv, nn.Conv2d):
            half = conv.out_channels // 2
            if m.c != half:
                m.c = half
                n += 1
    return n


def save_ultralytics_checkpoint(model: nn.Module, path: str | Path, *, train_args: dict[str, Any] | None = None) -> Path:
    """Write ``{"model": model, ...}`` in ultralytics' checkpoint layout (atomically).

    The pruned module is pickled as is: its layers already have the new widths, so ``YOLO(path)``
    works for predict/val/export. A model yaml cannot hold pruned widths, so the yaml of a pruned
    model is marked (:func:`~slimcnn.models.ultralytics_train.mark_pruned_yaml_`): a plain
    ``YOLO(path).train()`` fails with a hint instead of training a full-width rebuild, and
    ``train(trainer=PrunedDetectionTrainer)`` trains the pruned module.
    """
    from slimcnn.errors import require

    ul: Any = require("ultralytics", "ultralytics")
    from slimcnn.models.ultralytics_train import mark_pruned_yaml_

    m = copy.deepcopy(model).float().eval()
    sync_ultralytics_widths_(m)
    mark_pruned_yaml_(m)
    for p in m.parameters():
        p.requires_grad_(False)
    args = dict(getattr(model, "args", {}) or {}) if isinstance(getattr(model, "args", None), dict) else {}
    args.update(train_args or {})
    ckpt = {
        "date": datetime.datetime.now().isoformat(),
        "version": ul.__version__,
        "license": "AGPL-3.0 License (https://ultralytics.com/license)",
        "epoch": -1,
        "best_fitness": None,
        "model": m,
        "ema": None,
        "updates": None,
        "optimizer": None,
        "train_args": args,
        "train_metrics": {},
        "train_results": {},
    }
    return save_torch(path, ckpt)
