"""slimcnn's evaluation of ultralytics models reproduces ``yolo val`` (issue 17, item 3)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch


def test_letterbox_is_yolo_vals_input_pixel_for_pixel(coco8_yaml: Path) -> None:
    import yaml
    from ultralytics.cfg import get_cfg
    from ultralytics.data import build_yolo_dataset

    from slimcnn.tasks._ultralytics_det import _letterbox

    data = yaml.safe_load(coco8_yaml.read_text())
    data["nc"], data["channels"] = len(data["names"]), 3
    for size in (160, 320):
        cfg = get_cfg(overrides={"imgsz": size, "task": "detect"})
        ds = build_yolo_dataset(cfg, str(coco8_yaml.parent / "images" / "val"), 1, data, mode="val", rect=True)
        assert len(ds) == 4
        for i in range(len(ds)):
            item = ds[i]
            im, hw0, ratio_pad = _letterbox(item["im_file"], size, 32)
            ours = torch.from_numpy(np.ascontiguousarray(im)).permute(2, 0, 1)
            assert ours.shape == item["img"].shape, item["im_file"]
            assert torch.equal(ours, item["img"])
            assert hw0 == tuple(item["ori_shape"])
            np.testing.assert_allclose(np.ravel(ratio_pad), np.ravel(item["ratio_pad"]))


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_map_equals_yolo_val_on_coco8(tmp_path: Path, coco8_yaml: Path, train_args: dict) -> None:
    """A yolov8n trained briefly on coco8 (train images, so its mAP is not ~0), scored by both."""
    import yaml
    from ultralytics import YOLO

    from slimcnn.data.detection import load_detection
    from slimcnn.models import load_model
    from slimcnn.tasks.detection import DetectionTask

    data = yaml.safe_load(coco8_yaml.read_text())
    data["val"] = "images/train"
    overfit = tmp_path / "train_as_val.yaml"
    overfit.write_text(yaml.safe_dump(data))
    args = {**train_args, "epochs": 100, "imgsz": 128, "lr0": 0.002, "optimizer": "AdamW", "mosaic": 0.0,
            "close_mosaic": 0, "warmup_epochs": 3, "seed": 0}
    yolo = YOLO("yolov8n.yaml")
    yolo.train(data=str(overfit), project=str(tmp_path / "runs"), name="t", **args)
    weights = Path(yolo.trainer.last)
    ref = YOLO(str(weights)).val(data=str(overfit), imgsz=128, batch=1, conf=0.001, iou=0.7, plots=False,
                                 device="cpu", verbose=False, project=str(tmp_path / "runs"), name="v",
                                 save_txt=True, save_conf=True)
    lm = load_model(f"ultralytics:{weights}")
    assert lm.info.input_shape == (1, 3, 128, 128)  # the training imgsz, as yolo val uses
    task = DetectionTask(coco8_yaml.parent, info=lm.info)
    task.data = load_detection(coco8_yaml.parent, "train")
    preds = task.predict(lm.model)
    score = task.evaluate(lm.model)
    assert ref.box.map50 > 0, "the briefly trained model must detect something for the comparison to mean anything"
    assert abs(score.metrics["map50_95"] - ref.box.map) <= 0.005
    # the same detections as yolo val's own (its saved txt: class, normalised xywh, conf; original image)
    def canonical(rows: np.ndarray) -> np.ndarray:
        return rows[np.lexsort((rows[:, 1], rows[:, 2], -np.round(rows[:, 5], 3)))]

    for s, p in zip(task.data.samples, preds, strict=True):
        theirs = np.loadtxt(Path(ref.save_dir) / "labels" / f"{s.path.stem}.txt", ndmin=2)
        xyxy = p["boxes"] / [s.width, s.height, s.width, s.height]
        ours = np.column_stack((p["labels"], (xyxy[:, :2] + xyxy[:, 2:]) / 2, xyxy[:, 2:] - xyxy[:, :2], p["scores"]))
        assert theirs.shape == ours.shape
        np.testing.assert_allclose(canonical(theirs), canonical(ours), atol=2e-3)
