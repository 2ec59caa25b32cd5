"""Detection data loaders, COCO mAP / LAMR maths and the detection task on real data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from slimcnn.data.detection import DetectionSample, DetectionSet, load_detection
from slimcnn.errors import ConfigError, DataError, UnsupportedLayerError
from slimcnn.paths import shared_path
from slimcnn.tasks.detection import COCO80_TO_91, DetectionTask, get_adapter
from slimcnn.tasks.detmetrics import coco_map, log_average_miss_rate


def need_shared(*parts: str) -> Path:
    p = shared_path(*parts)
    if p is None:
        pytest.skip(f"needs {'/'.join(parts)} under $SLIMCNN_DATA or ../shared/data (absent here)")
    return p


def _toy_set() -> DetectionSet:
    s = [DetectionSample(Path(f"{i}.jpg"), 100, 100, ((10.0, 10.0, 50.0, 60.0),), (0,)) for i in range(4)]
    return DetectionSet(tuple(s), ("thing",))


def _preds(boxes: list[list[float]], scores: list[float]) -> dict[str, np.ndarray]:
    return {"boxes": np.asarray(boxes, np.float32).reshape(-1, 4), "scores": np.asarray(scores, np.float32),
            "labels": np.zeros(len(scores), np.int64)}


def test_perfect_and_empty_predictions() -> None:
    data = _toy_set()
    perfect = [_preds([[10, 10, 50, 60]], [0.9]) for _ in range(4)]
    assert coco_map(data, perfect) == pytest.approx((1.0, 1.0))
    assert log_average_miss_rate(data, perfect) == pytest.approx(0.0, abs=1e-6)
    empty = [_preds([], []) for _ in range(4)]
    assert coco_map(data, empty) == (0.0, 0.0)
    assert log_average_miss_rate(data, empty) == pytest.approx(1.0)


def test_half_found_with_false_positives() -> None:
    data = _toy_set()
    preds = [_preds([[10, 10, 50, 60], [70, 70, 90, 90]], [0.9, 0.95]) if i < 2 else _preds([[70, 70, 90, 90]], [0.5])
             for i in range(4)]
    m5095, m50 = coco_map(data, preds)
    assert 0.2 < m50 < 0.6 and m5095 <= m50
    assert 0.5 <= log_average_miss_rate(data, preds) < 1.0


def test_coco80_table() -> None:
    assert len(COCO80_TO_91) == 80 and len(set(COCO80_TO_91)) == 80
    assert COCO80_TO_91[0] == 1 and COCO80_TO_91[23] == 25 and COCO80_TO_91[-1] == 90  # person, giraffe, toothbrush


def test_errors() -> None:
    with pytest.raises(UnsupportedLayerError, match="no detection adapter"):
        get_adapter(nn.Linear(2, 2))
    with pytest.raises(DataError):
        load_detection("/nonexistent/detection/set")


def test_yolo_folder_and_coco_json(tmp_path: Path) -> None:
    root = need_shared("detection", "coco8")
    val = load_detection(root, "val")
    assert len(val) == 4 and len(val.names) == 80 and val.names[0] == "person"
    assert all(len(s.boxes) == len(s.labels) > 0 for s in val.samples)
    assert len(load_detection(root / "coco8.yaml", "train")) == 4
    # the same set written as a COCO json with its 91-index category ids
    images, anns = [], []
    for i, s in enumerate(val.samples):
        images.append({"id": i, "file_name": str(s.path), "width": s.width, "height": s.height})
        for (x1, y1, x2, y2), lab in zip(s.boxes, s.labels, strict=True):
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": COCO80_TO_91[lab],
                         "bbox": [x1, y1, x2 - x1, y2 - y1], "iscrowd": 0})
    cats = [{"id": c, "name": n} for c, n in zip(COCO80_TO_91, val.names, strict=True)]
    (tmp_path / "ann.json").write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    coco = load_detection(tmp_path / "ann.json")
    assert coco.names == val.names and coco.coco_ids == COCO80_TO_91
    for a, b in zip(coco.samples, val.samples, strict=True):
        assert a.labels == b.labels
        np.testing.assert_allclose(a.boxes, b.boxes, rtol=1e-6)


def test_voc_with_csv_split() -> None:
    root = need_shared("detection", "raccoon")
    train, test = load_detection(root, "train"), load_detection(root, "val")
    assert (len(train), len(test)) == (160, 40) and test.split == "test"
    assert train.names == ("raccoon",)
    assert not {s.path for s in train.samples} & {s.path for s in test.samples}
    assert sum(len(s.boxes) for s in train.samples) + sum(len(s.boxes) for s in test.samples) == 217


def test_task_options_and_batches() -> None:
    root = need_shared("detection", "raccoon")
    with pytest.raises(ConfigError, match="metric"):
        DetectionTask(root, metric="ap")  # type: ignore[arg-type]
    task = DetectionTask(root, batch_size=2)
    assert len(task.data) == 40 and task.example_input(2).shape == (2, 3, 352, 352)
    (x, targets), = task.training_batches(1)
    assert x.shape == (2, 3, 352, 352) and 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    for t in targets:
        assert t["boxes"].shape[1] == 4 and float(t["boxes"].min()) >= 0 and float(t["boxes"].max()) <= 352


def test_pretrained_yolo_fastestv2_finds_coco8_objects() -> None:
    root = need_shared("detection", "coco8")
    need_shared("weights", "yolo-fastestv2")
    from slimcnn.models import load_model

    lm = load_model("slimcnn:yolo_fastestv2")
    assert lm.info.pretrained
    task = DetectionTask(root, info=lm.info)
    val, train = load_detection(root, "val"), load_detection(root, "train")
    all8 = DetectionSet(train.samples + val.samples, val.names)
    preds = task.predict(lm.model, all8)
    m5095, m50 = coco_map(all8, preds)
    assert m50 > 0.3 and m5095 > 0.15
    found = {all8.names[int(lab)] for p in preds for lab, sc in zip(p["labels"], p["scores"], strict=True) if sc > 0.3}
    assert {"person", "giraffe", "zebra", "broccoli"} <= found
    score = task.evaluate(lm.model)  # the 4 val images through the public API
    assert score.metric == "map50_95" and score.n == 4 and score.metrics["map50"] > 0.2


@pytest.mark.slow
def test_finetune_on_raccoon_improves_map50() -> None:
    root = need_shared("detection", "raccoon")
    need_shared("weights", "yolo-fastestv2")
    from slimcnn.models import load_model

    torch.manual_seed(0)
    lm = load_model("slimcnn:yolo_fastestv2", num_classes=1)
    task = DetectionTask(root, info=lm.info, metric="map50", batch_size=8)
    before = task.evaluate(lm.model)
    stats = task.finetune(lm.model, 20, lr=1e-3)
    after = task.evaluate(lm.model)
    assert stats.steps == 20 and np.isfinite(stats.final_loss)
    assert after.value > before.value and after.metrics["lamr"] < before.metrics["lamr"]


class RetinaNet(nn.Module):
    """Stands in for torchvision's RetinaNet (adapters are keyed by class name): returns fixed COCO ids."""

    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        out = []
        for im in images:
            h, w = im.shape[-2:]
            out.append({"boxes": torch.tensor([[0.0, 0.0, w / 2, h / 2], [0.0, 0.0, w, h]]),
                        "scores": torch.tensor([0.9, 0.8]), "labels": torch.tensor([1, 25])})
        return out


def test_torchvision_style_labels_map_to_80_classes() -> None:
    root = need_shared("detection", "coco8")
    task = DetectionTask(root, subset=2, batch_size=2)
    preds = task.predict(RetinaNet())
    assert [p["labels"].tolist() for p in preds] == [[0, 23], [0, 23]]  # person, giraffe
    s = task.data.samples[0]
    np.testing.assert_allclose(preds[0]["boxes"][1], [0, 0, s.width, s.height])


def test_ultralytics_detection_model_runs() -> None:
    pytest.importorskip("ultralytics")
    root = need_shared("detection", "coco8")
    from slimcnn.models import load_model

    lm = load_model("ultralytics:yolov8n.yaml")  # untrained, built from the packaged yaml
    task = DetectionTask(root, subset=1, batch_size=1, info=lm.info)
    score = task.evaluate(lm.model)
    assert score.n == 1 and 0.0 <= score.value <= 1.0
