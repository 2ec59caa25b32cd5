"""Train a slimcnn-pruned ultralytics checkpoint with ultralytics' own trainer, keeping its widths.

ultralytics' ``YOLO(path).train()`` (and ``yolo train``) always rebuilds the network from its model
yaml and copies over only the tensors whose shapes match; a yaml cannot describe pruned widths
(every layer width is rounded to a multiple of 8, C2f bottlenecks and the Detect head derive their
hidden widths from formulas), so a pruned model would silently train at full width. slimcnn
therefore marks the yaml of the pruned checkpoints it writes (:func:`mark_pruned_yaml_`): a plain
rebuild then fails with a one-line hint, and :class:`PrunedDetectionTrainer` trains the pruned
module itself::

    from ultralytics import YOLO
    from slimcnn.models.ultralytics_train import PrunedDetectionTrainer

    YOLO("out/yolo.pt").train(data="data.yaml", epochs=30, trainer=PrunedDetectionTrainer)
"""

from __future__ import annotations

import copy
from typing import Any

from torch import nn

from slimcnn.errors import ConfigError, require

require("ultralytics", "ultralytics")

from ultralytics.models.yolo.detect import DetectionTrainer  # noqa: E402
from ultralytics.nn.tasks import DetectionModel  # noqa: E402

__all__ = ["PRUNED_MARK", "PrunedDetectionTrainer", "has_yaml_widths", "is_marked_pruned", "mark_pruned_yaml_"]

PRUNED_MARK = (
    "slimcnn-pruned model: its layer widths are not expressible in a model yaml, so ultralytics cannot rebuild it; "
    "train it with YOLO(path).train(..., trainer=slimcnn.models.ultralytics_train.PrunedDetectionTrainer)"
)
"""Module name of the first yaml row of a pruned checkpoint: ultralytics' ``parse_model`` raises
``KeyError`` with this text when it tries to rebuild the model (instead of training a full-width one)."""


def has_yaml_widths(model: nn.Module) -> bool:
    """True when rebuilding ``model`` from its ``yaml`` gives the same tensor shapes (nothing pruned)."""
    cfg = getattr(model, "yaml", None)
    if not isinstance(cfg, dict) or is_marked_pruned(model):
        return False
    ch = int(cfg.get("channels", 3))
    try:
        built = type(model)(copy.deepcopy(cfg), ch=ch, nc=getattr(model, "nc", None), verbose=False)
    except (KeyError, ValueError, TypeError, RuntimeError):
        return False
    ours, theirs = model.state_dict(), built.state_dict()
    return ours.keys() == theirs.keys() and all(ours[k].shape == theirs[k].shape for k in ours)


def is_marked_pruned(model: nn.Module) -> bool:
    """True when ``model.yaml`` carries :data:`PRUNED_MARK`."""
    cfg = getattr(model, "yaml", None)
    rows = cfg.get("backbone") if isinstance(cfg, dict) else None
    return bool(rows) and rows[0][2] == PRUNED_MARK  # type: ignore[index]


def mark_pruned_yaml_(model: nn.Module) -> bool:
    """Mark ``model.yaml`` as not rebuildable when its widths differ from the yaml's; returns whether it did.

    Only plain detection models are marked (the trainer that keeps the widths is a detection one).
    The original rows stay (after the mark), so exporters that read ``yaml`` keep working.
    """
    if type(model) is not DetectionModel or not isinstance(getattr(model, "yaml", None), dict):
        return False
    if is_marked_pruned(model) or has_yaml_widths(model):
        return False
    cfg = copy.deepcopy(model.yaml)
    cfg["backbone"] = [[-1, 1, PRUNED_MARK, []], *cfg.get("backbone", [])]
    model.yaml = cfg
    return True


class PrunedDetectionTrainer(DetectionTrainer):  # type: ignore[misc]
    """ultralytics' detection trainer, training the checkpoint's own (pruned) module instead of a rebuild.

    Everything else (data pipeline, augmentation, loss, EMA, validation, checkpoints) is
    ultralytics'. Checkpoints it writes keep the mark, so they train again with this trainer.
    """

    def get_model(self, cfg: str | dict[str, Any] | None = None, weights: Any = None, verbose: bool = True) -> Any:
        """The checkpoint's module, trainable; ultralytics' rebuild when it is not a pruned one.

        Raises:
            ConfigError: the pruned model's class count differs from the data's (its head cannot be rebuilt).
        """
        module = (weights.get("ema") or weights.get("model")) if isinstance(weights, dict) else weights
        if not isinstance(module, nn.Module) or not is_marked_pruned(module):
            return super().get_model(cfg=cfg, weights=weights, verbose=verbose)
        nc = int(self.data["nc"])
        if int(getattr(module, "nc", nc)) != nc:
            raise ConfigError(
                f"the pruned model detects {module.nc} classes but the data has {nc}; prune a model trained "
                "on this data's classes (a pruned head cannot be rebuilt for another class count)"
            )
        model = copy.deepcopy(module).float()
        for p in model.parameters():
            p.requires_grad_(True)
        return self.set_model_names_for_load(model)
