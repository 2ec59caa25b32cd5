"""A pruned YOLOv8n/YOLO11n saved as an ultralytics checkpoint loads back with YOLO(path)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("ultralytics")


@pytest.mark.slow
@pytest.mark.parametrize("cfg", ["yolov8n.yaml", "yolo11n.yaml"])
def test_pruned_yolo_checkpoint_round_trip(cfg: str, tmp_path) -> None:
    from ultralytics import YOLO

    from slimcnn.models import load_model
    from slimcnn.prune import prune_model_
    from slimcnn.prune._ultralytics import save_ultralytics_checkpoint

    model = load_model(f"ultralytics:{cfg}").model
    n0 = sum(p.numel() for p in model.parameters())
    prune_model_(model, torch.randn(1, 3, 128, 128), prune_ratio=0.5)
    path = save_ultralytics_checkpoint(model, tmp_path / "pruned.pt")
    yolo = YOLO(str(path))
    assert sum(p.numel() for p in yolo.model.parameters()) < 0.6 * n0
    results = yolo.predict(np.zeros((160, 160, 3), dtype=np.uint8), imgsz=160, verbose=False)
    assert len(results) == 1
    onnx = yolo.export(format="onnx", imgsz=160)
    assert str(onnx).endswith(".onnx")
