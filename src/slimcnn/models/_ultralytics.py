"""The ``ultralytics:FILE`` source: a model yaml built offline, or a trained ``.pt`` checkpoint.

Returns the underlying ``nn.Module`` (``DetectionModel`` for detection yamls). ``YOLO_OFFLINE=1``
keeps ultralytics' own online checks off; URLs are refused; checkpoints are unpickled with
``torch.load`` directly so ultralytics never downloads assets or pip-installs modules they name.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from torch import nn

from slimcnn.errors import ConfigError, ModelLoadError, require
from slimcnn.models._weights import check_file, torch_load
from slimcnn.models._zoo import LoadedModel, ModelInfo
from slimcnn.models.sources import LoadOptions, ModelSource, _no_scale, register_model_source

_ULTRA_TASKS = {
    "detect": ("DetectionModel", "detection"),
    "segment": ("SegmentationModel", None),
    "pose": ("PoseModel", None),
    "obb": ("OBBModel", None),
    "classify": ("ClassificationModel", "classification"),
}


def _load_ultralytics(name: str, opts: LoadOptions) -> LoadedModel:
    os.environ.setdefault("YOLO_OFFLINE", "1")  # ultralytics' own online checks stay off
    _no_scale("ultralytics", opts)
    if "://" in name:
        raise ConfigError(
            f"ultralytics:{name} is a URL; slimcnn never downloads: pass a local .yaml or .pt file"
        )
    require("ultralytics", "ultralytics")
    from ultralytics.nn import tasks as ut

    suffix = Path(name).suffix.lower()
    imgsz: Any = None
    if suffix in (".yaml", ".yml"):
        try:
            cfg = ut.yaml_model_load(name)
        except FileNotFoundError as e:
            raise ModelLoadError(
                f"ultralytics model yaml '{name}' not found locally or among ultralytics' built-in cfgs "
                "(e.g. yolov8n.yaml, yolo11n.yaml)"
            ) from e
        kind = ut.guess_model_task(cfg)
        cls_name, task = _ULTRA_TASKS.get(kind, ("DetectionModel", "detection"))
        kwargs: dict[str, Any] = {"verbose": False}
        if opts.num_classes is not None:
            kwargs["nc"] = opts.num_classes
        model = getattr(ut, cls_name)(cfg, **kwargs)
        notes: tuple[str, ...] = ("untrained: built from a model yaml; pass --weights PATH or a trained .pt",)
        pretrained = False
    elif suffix == ".pt":
        if not Path(name).expanduser().exists():  # 'yolov8n.pt' is a hub name to ultralytics: here it is a path
            raise ModelLoadError(f"ultralytics checkpoint file '{name}' does not exist; nothing is downloaded: give the "
                                 f"path of a trained .pt, or ultralytics:{Path(name).stem}.yaml for the architecture "
                                 "with random weights")
        path = check_file(name, "ultralytics checkpoint")
        if opts.num_classes is not None:
            raise ConfigError(
                "--num-classes cannot change a trained ultralytics .pt; build from its .yaml instead"
            )
        with _ultralytics_legacy_names(ut):
            ckpt = torch_load(path, weights_only=False)
        cand = (
            next((ckpt[k] for k in ("ema", "model") if isinstance(ckpt.get(k), nn.Module)), None)
            if isinstance(ckpt, dict)
            else ckpt
        )
        if not isinstance(cand, nn.Module):
            raise ModelLoadError(
                f"'{path}' is not an ultralytics checkpoint (no 'model' module inside); use file:{path}"
            )
        model = cand.float()
        for p in model.parameters():  # ultralytics stores frozen tensors; slimcnn fine-tunes what it loads
            p.requires_grad_(True)
        kind = getattr(model, "task", None) or ut.guess_model_task(model)
        task = _ULTRA_TASKS.get(kind, ("", "detection"))[1]
        notes, pretrained = (), True
        imgsz = (ckpt.get("train_args") or {}).get("imgsz") if isinstance(ckpt, dict) else None
    else:
        raise ConfigError(f"ultralytics:{name}: expected a model .yaml (yolov8n.yaml) or a trained .pt file")
    size = 224 if task == "classification" else 640
    if suffix == ".pt" and isinstance(imgsz, int) and imgsz > 0:
        size = imgsz  # the size it was trained at (ultralytics' train_args), as `yolo val` would use
    nc = getattr(model, "nc", None) or (
        model.yaml.get("nc") if isinstance(getattr(model, "yaml", None), dict) else None
    )
    info = ModelInfo(
        task=task,  # type: ignore[arg-type]
        input_shape=(1, 3, size, size),
        num_classes=int(nc) if nc else None,
        pretrained=pretrained,
        weights=name if pretrained else None,
        notes=notes if kind in _ULTRA_TASKS else (*notes, f"ultralytics task '{kind}'"),
    )
    model.eval()
    return LoadedModel(model, f"ultralytics:{name}", info)


def _ultralytics_legacy_names(ut: Any) -> Any:
    """ultralytics' context that maps legacy module paths of old checkpoints (no downloads, no installs)."""
    tm = getattr(ut, "temporary_modules", None)
    if tm is None:  # pragma: no cover - older ultralytics
        import contextlib

        return contextlib.nullcontext()
    return tm(
        modules={
            "ultralytics.yolo.utils": "ultralytics.utils",
            "ultralytics.yolo.v8": "ultralytics.models.yolo",
        }
    )


register_model_source(
    ModelSource("ultralytics", "ultralytics:FILE", "ultralytics:yolov8n.yaml", _load_ultralytics)
)
