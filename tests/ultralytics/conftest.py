"""ultralytics tests: offline, with settings and runs/ kept in a temporary folder."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

# Before ultralytics is imported: its settings file lives here, and it never reaches for the network.
if "YOLO_CONFIG_DIR" not in os.environ:
    os.environ["YOLO_CONFIG_DIR"] = tempfile.mkdtemp(prefix="slimcnn-yolo-cfg-")
    atexit.register(shutil.rmtree, os.environ["YOLO_CONFIG_DIR"], True)
os.environ.setdefault("YOLO_OFFLINE", "1")

pytest.importorskip("ultralytics")


@pytest.fixture()
def train_args() -> dict[str, object]:
    """Two optimiser steps on coco8's 4 training images (batch 2), no plots (no font download)."""
    return dict(_TRAIN_ARGS)


_TRAIN_ARGS = {"epochs": 1, "imgsz": 64, "batch": 2, "workers": 0, "plots": False, "val": False, "device": "cpu",
              "amp": False, "verbose": False, "exist_ok": True}


@pytest.fixture(scope="session")
def coco8_yaml(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """coco8 as an ultralytics dataset in a temporary folder (label caches land there, not in ../shared)."""
    from slimcnn.data.detection import load_detection, write_yolo_dataset
    from slimcnn.paths import shared_path

    root = shared_path("detection", "coco8")
    if root is None:
        pytest.skip("needs the benchmark data detection/coco8 under $SLIMCNN_DATA or ../shared/data (absent here)")
    sets = {split: load_detection(root, split) for split in ("train", "val")}
    return write_yolo_dataset(sets, tmp_path_factory.mktemp("coco8"))
