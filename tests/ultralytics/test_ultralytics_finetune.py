"""slimcnn fine-tunes ultralytics models with ultralytics' own loss, plain and with KD (issue 17, item 2)."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import torch
from torch import nn


def _task_and_model(coco8_yaml: Path, size: int = 64) -> tuple[object, nn.Module]:
    from slimcnn.models import load_model
    from slimcnn.tasks.detection import DetectionTask

    lm = load_model("ultralytics:yolov8n.yaml")
    task = DetectionTask(coco8_yaml.parent, info=dataclasses.replace(lm.info, input_shape=(1, 3, size, size)),
                         batch_size=2)
    return task, lm.model


def test_loss_is_ultralytics_criterion_per_image(coco8_yaml: Path) -> None:
    from ultralytics.cfg import get_cfg

    task, model = _task_and_model(coco8_yaml)
    x, targets = task._batch(([0, 1], [False, False]), letterbox=True)
    assert all(len(t["boxes"]) for t in targets)
    model.train()
    ours = task.loss(model, (x, targets))
    # the same batch in ultralytics' layout, scored by its own DetectionModel.loss with the default hyp
    rows = [(i, int(c), *b.tolist()) for i, t in enumerate(targets)
            for b, c in zip(t["boxes"], t["labels"], strict=True)]
    r = torch.tensor(rows, dtype=torch.float32)
    xyxy = r[:, 2:] / 64
    ref_batch = {"img": x, "batch_idx": r[:, 0], "cls": r[:, 1:2],
                 "bboxes": torch.cat(((xyxy[:, :2] + xyxy[:, 2:]) / 2, xyxy[:, 2:] - xyxy[:, :2]), 1)}
    ref_model = copy.deepcopy(model)
    ref_model.args = get_cfg()
    ref, _ = ref_model.loss(ref_batch)
    torch.testing.assert_close(ours, ref.sum() / 2)
    assert not hasattr(model, "args") or not hasattr(model.args, "box")  # the model was not changed


def test_finetune_with_ultralytics_loss_lowers_it_and_keeps_widths(coco8_yaml: Path) -> None:
    from slimcnn.prune import prune_model_

    task, model = _task_and_model(coco8_yaml)
    prune_model_(model, torch.randn(1, 3, 64, 64), prune_ratio=0.3)
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    batch = task._batch(([0, 1], [False, False]), letterbox=True)
    model.train()
    before = task.loss(model, batch).item()
    stats = task.finetune(model, 6, lr=2e-3, warmup_steps=0)
    model.train()
    after = task.loss(model, batch).item()
    assert stats.steps == 6 and after < before
    assert {k: v.shape for k, v in model.state_dict().items()} == shapes


def test_kd_recovery_mixes_teacher_head_outputs(coco8_yaml: Path) -> None:
    from slimcnn.tasks._ultralytics_det import ul_head

    task, model = _task_and_model(coco8_yaml)
    x = torch.rand(2, 3, 64, 64)
    model.train()
    train_head = ul_head(model(x))
    model.eval()
    with torch.no_grad():
        eval_head = ul_head(model(x))
    anchors = sum((64 // s) ** 2 for s in (8, 16, 32))
    assert train_head.shape == eval_head.shape == (2, 16 * 4 + 80, anchors)
    teacher = copy.deepcopy(model)
    start = copy.deepcopy(model.state_dict())
    stats = task.finetune(model, 2, teacher=teacher, recovery="kd", kd_alpha=0.5, lr=1e-3, warmup_steps=0)
    assert stats.steps == 2
    assert any(not torch.equal(v, start[k]) for k, v in model.state_dict().items() if v.is_floating_point())
