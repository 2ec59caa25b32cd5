"""Detection training batches through a DataLoader: the same batches as in-process decoding, bounded caches."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from slimcnn.errors import ConfigError
from slimcnn.tasks import make_task
from slimcnn.tasks.detection import DetectionTask


@pytest.fixture(scope="module")
def yolo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A YOLO folder of 10 train images (sizes vary) with 1-2 boxes each, and its COCO json twin."""
    root = tmp_path_factory.mktemp("det") / "yolo"
    rng = np.random.default_rng(0)
    images, anns = [], []
    for split, n in (("train", 10), ("val", 2)):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for i in range(n):
            h, w = int(rng.integers(60, 120)), int(rng.integers(60, 120))
            Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(root / "images" / split / f"{i}.jpg")
            lines = []
            for _ in range(1 + i % 2):
                c, cx, cy, bw, bh = int(rng.integers(0, 3)), *rng.uniform(0.3, 0.6, 2), *rng.uniform(0.1, 0.3, 2)
                lines.append(f"{c} {cx:.4f} {cy:.4f} {bw:.4f} {bh:.4f}")
                if split == "train":
                    anns.append({"id": len(anns) + 1, "image_id": i, "category_id": c + 1, "iscrowd": 0,
                                 "bbox": [(cx - bw / 2) * w, (cy - bh / 2) * h, bw * w, bh * h]})
            (root / "labels" / split / f"{i}.txt").write_text("\n".join(lines) + "\n")
            if split == "train":
                images.append({"id": i, "file_name": f"{i}.jpg", "width": w, "height": h})
    cats = [{"id": c + 1, "name": str(c)} for c in range(3)]
    (root / "images" / "train" / "train.json").write_text(
        json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return root


def _same(a: list, b: list) -> None:  # type: ignore[type-arg]
    assert len(a) == len(b)
    for (xa, ta), (xb, tb) in zip(a, b, strict=True):
        assert torch.equal(xa, xb)
        for da, db in zip(ta, tb, strict=True):
            assert torch.equal(da["labels"], db["labels"]) and torch.allclose(da["boxes"], db["boxes"])


@pytest.mark.parametrize("source", ["yolo", "coco json"])
def test_workers_give_the_batches_of_in_process_decoding(yolo: Path, source: str) -> None:
    train = yolo if source == "yolo" else yolo / "images" / "train" / "train.json"

    def batches(workers: int, n: int = 7) -> list:  # type: ignore[type-arg]
        task = DetectionTask(yolo, train_data=train, batch_size=4, seed=3, loader_workers=workers)
        task.input_size = 64
        stream = task._stream(True)
        return [next(stream) for _ in range(n)]  # 7 batches of 4 from 10 images: three passes, flips drawn

    here = batches(0)
    _same(batches(2), here)
    assert any(not torch.equal(here[0][0], b[0]) for b in here[1:])


def test_worker_caches_share_the_bound(yolo: Path) -> None:
    task = DetectionTask(yolo, batch_size=2, loader_workers=2, cache_bytes=3 * 64 * 64 * 3)
    task.input_size = 64
    stream = task._stream(False)
    next(stream)
    data = stream._dataset  # type: ignore[attr-defined]
    assert data.cache_bytes == 3 * 64 * 64 * 3 // 2 and len(task._cache) == 0  # the parent decodes nothing


def test_loader_workers_option(yolo: Path) -> None:
    with pytest.raises(ConfigError, match="loader_workers must be >= 0"):
        DetectionTask(yolo, loader_workers=-1)
    assert make_task("detection", yolo, loader_workers=2).loader_workers == 2  # type: ignore[attr-defined]
