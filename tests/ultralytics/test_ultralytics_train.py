"""A pruned YOLOv8n checkpoint trains in ultralytics' own trainer at its pruned widths (issue 17, item 1)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn


def _pruned_yolov8n(tmp_path: Path) -> tuple[nn.Module, Path]:
    from slimcnn.models import load_model
    from slimcnn.prune import prune_model_
    from slimcnn.prune._ultralytics import save_ultralytics_checkpoint

    model = load_model("ultralytics:yolov8n.yaml").model
    prune_model_(model, torch.randn(1, 3, 64, 64), prune_ratio=0.5)
    return model, save_ultralytics_checkpoint(model, tmp_path / "yolo.pt")


def _shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def test_pruned_checkpoint_trains_two_steps_at_its_widths(tmp_path: Path, coco8_yaml: Path,
    train_args: dict) -> None:
    from ultralytics import YOLO

    from slimcnn.models.ultralytics_train import PrunedDetectionTrainer

    pruned, path = _pruned_yolov8n(tmp_path)
    yolo = YOLO(str(path))
    start = {k: v.clone() for k, v in yolo.model.state_dict().items()}
    yolo.train(data=str(coco8_yaml), trainer=PrunedDetectionTrainer, project=str(tmp_path / "runs"), name="t",
               **train_args)
    trained = yolo.model  # re-loaded by ultralytics from the checkpoint its trainer wrote
    assert yolo.trainer.epoch == 0 and len(yolo.trainer.train_loader) == 2  # two optimiser steps
    assert sum(p.numel() for p in trained.parameters()) == sum(p.numel() for p in pruned.parameters())
    assert _shapes(trained) == _shapes(pruned)
    changed = [k for k, v in trained.state_dict().items()
               if v.is_floating_point() and not torch.equal(v.float(), start[k].float())]
    assert changed, "training changed no weight"
    # what ultralytics wrote loads back in slimcnn at the size it was trained at, widths intact
    from slimcnn.models import load_model

    again = load_model(f"ultralytics:{yolo.trainer.last}")
    assert again.info.input_shape == (1, 3, train_args["imgsz"], train_args["imgsz"])
    assert _shapes(again.model) == _shapes(pruned)
    assert all(p.requires_grad for p in again.model.parameters())  # slimcnn can fine-tune it


def test_plain_train_of_a_pruned_checkpoint_fails_instead_of_training_full_width(tmp_path: Path,
                                                                                 coco8_yaml: Path,
    train_args: dict) -> None:
    from ultralytics import YOLO

    _, path = _pruned_yolov8n(tmp_path)
    with pytest.raises(KeyError, match="PrunedDetectionTrainer"):
        YOLO(str(path)).train(data=str(coco8_yaml), project=str(tmp_path / "runs"), name="t", **train_args)


def test_unpruned_checkpoint_keeps_a_rebuildable_yaml(tmp_path: Path) -> None:
    from ultralytics import YOLO

    from slimcnn.models import load_model
    from slimcnn.models.ultralytics_train import has_yaml_widths, is_marked_pruned
    from slimcnn.prune._ultralytics import save_ultralytics_checkpoint

    model = load_model("ultralytics:yolov8n.yaml").model
    loaded = YOLO(str(save_ultralytics_checkpoint(model, tmp_path / "yolo.pt"))).model
    assert not is_marked_pruned(loaded) and has_yaml_widths(loaded)
    assert loaded.yaml == model.yaml
