"""COCO json evaluation keeps crowd regions; the training image cache is bounded; YOLO dataset export."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from slimcnn.data.detection import (
    DetectionSample,
    DetectionSet,
    load_detection,
    read_coco_json,
    write_yolo_dataset,
)
from slimcnn.errors import DataError
from slimcnn.tasks.detmetrics import coco_map


def _image(folder: Path, name: str, w: int = 64, h: int = 48) -> None:
    from PIL import Image

    Image.new("RGB", (w, h), (90, 20, 20)).save(folder / name)


def test_coco_json_map_keeps_crowd_regions(tmp_path: Path) -> None:
    """A detection on a crowd region is ignored (official protocol), not a false positive outranking the hit."""
    _image(tmp_path, "a.jpg")
    person = [4.0, 4.0, 20.0, 30.0]
    crowd = [34.0, 4.0, 26.0, 40.0]
    (tmp_path / "gt.json").write_text(json.dumps({
        "images": [{"id": 7, "file_name": "a.jpg", "width": 64, "height": 48}],
        "categories": [{"id": 1, "name": "person"}],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 1, "bbox": person, "area": 400.0, "iscrowd": 0},
            {"id": 2, "image_id": 7, "category_id": 1, "bbox": crowd, "area": 900.0, "iscrowd": 1},
        ],
    }))
    data = read_coco_json(tmp_path / "gt.json")
    assert data.samples[0].boxes == ((4.0, 4.0, 24.0, 34.0),)  # crowd regions are no training targets
    assert data.samples[0].image_id == 7 and data.coco_json
    xyxy = lambda b: [b[0], b[1], b[0] + b[2], b[1] + b[3]]  # noqa: E731
    preds = [{"boxes": np.array([xyxy(crowd), xyxy(person)]), "scores": np.array([0.95, 0.9]),
              "labels": np.array([0, 0])}]
    m5095, m50 = coco_map(data, preds)
    assert m50 == pytest.approx(1.0) and m5095 == pytest.approx(1.0)
    stripped = DetectionSet(data.samples, data.names)  # the same boxes without the json: the crowd hit is a FP
    assert coco_map(stripped, preds)[1] < 0.99


def test_training_image_cache_is_bounded(tmp_path: Path) -> None:
    from slimcnn.tasks.detection import DetectionTask

    for sp in ("train", "val"):
        (tmp_path / "images" / sp).mkdir(parents=True)
        (tmp_path / "labels" / sp).mkdir(parents=True)
        for i in range(4):
            _image(tmp_path / "images" / sp, f"{i}.jpg")
            (tmp_path / "labels" / sp / f"{i}.txt").write_text("0 0.5 0.5 0.25 0.25\n")
    one = 3 * 32 * 32  # a uint8 32x32 RGB image
    task = DetectionTask(tmp_path, batch_size=1, cache_bytes=2 * one)
    task.input_size = 32
    task.training_batches(8)
    assert len(task._cache) == 2 and task._cache.nbytes == 2 * one
    x, targets = task._batch(([0], [False]), letterbox=True)  # the first sample, not flipped
    assert x.shape == (1, 3, 32, 32)
    # 64x48 -> 32x24 centred: 4 px bands top and bottom; box 0.5 +- 0.125 of each side
    np.testing.assert_allclose(targets[0]["boxes"].numpy(), [[12.0, 13.0, 20.0, 19.0]], atol=1e-5)


def test_write_yolo_dataset_round_trips(tmp_path: Path) -> None:
    _image(tmp_path, "a.jpg")
    s = DetectionSample(tmp_path / "a.jpg", 64, 48, ((8.0, 4.0, 40.0, 28.0),), (1,))
    data = DetectionSet((s,), ("cat", "dog"))
    out = write_yolo_dataset({"train": data, "val": data}, tmp_path / "yolo")
    back = load_detection(out, "val")
    assert back.names == ("cat", "dog") and back.samples[0].labels == (1,)
    np.testing.assert_allclose(back.samples[0].boxes, s.boxes, atol=1e-3)
    with pytest.raises(DataError, match="not empty"):
        write_yolo_dataset({"train": data}, tmp_path / "yolo")
