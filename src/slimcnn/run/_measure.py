"""Measure the original and the written model the same way for every command (invariant 7)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from slimcnn.run._result import Measured


def save_model_files(loaded: Any, model: nn.Module, example: Any, folder: Path, *, onnx: bool = True) -> nn.Module:
    """Write ``model.pt`` (+ ``yolo.pt`` for ultralytics, + ``model.onnx``) and return the model re-loaded
    from ``model.pt``, so every later measurement is of the artifact actually written."""
    from slimcnn.export import OrtModule
    from slimcnn.models import LoadedModel, load_model, save_model
    from slimcnn.prune._ultralytics import (
        is_ultralytics_model,
        save_ultralytics_checkpoint,
        sync_ultralytics_widths_,
    )

    if isinstance(model, OrtModule):  # an int8 plan step: model.onnx is the artifact, model.pt the float model
        return _save_int8(loaded, model, folder)
    if is_ultralytics_model(model):
        sync_ultralytics_widths_(model)
    path = save_model(LoadedModel(model, loaded.source, loaded.info), folder / "model.pt")
    if is_ultralytics_model(model):
        save_ultralytics_checkpoint(model, folder / "yolo.pt")
    if onnx:
        write_model_onnx(model, example, folder / "model.onnx", any_size=loaded.info.task == "sr")
    return load_model(f"file:{path}").model.eval()


def write_model_onnx(model: nn.Module, example: Any, path: Path, *, any_size: bool) -> bool:
    """``model.onnx``; a super-resolution net's takes images of any size (it runs on whole photos, not on the
    32x32 example), unless its graph does not hold at another size: then the example's size, with a warning.

    Returns whether the file was written: one that fails its ONNX Runtime parity check is not (a warning says
    why), and the run keeps ``model.pt``, its result, instead of losing it to its convenience copy (a detector
    with untrained weights ties its scores, and the runtimes' NMS then keep different boxes)."""
    import logging

    from slimcnn.measure import ExportError, export_onnx

    log = logging.getLogger(__name__)
    if any_size:
        try:
            export_onnx(model, example, path, any_size=True)
            return True
        except ExportError as e:
            log.warning("model.onnx takes only %s inputs: %s", "x".join(map(str, example.shape)), e)
    try:
        export_onnx(model, example, path)
    except ExportError as e:
        log.warning("model.onnx not written: %s; model.pt holds the result", e)
        return False
    return True


def _save_int8(loaded: Any, model: Any, folder: Path) -> nn.Module:
    from slimcnn.export import OrtModule
    from slimcnn.export._onnx import write_onnx
    from slimcnn.export._run import write_sidecar
    from slimcnn.models import LoadedModel, load_model, save_model

    float_model = None
    if model.float_model is not None:
        pt = save_model(LoadedModel(model.float_model, loaded.source, loaded.info), folder / "model.pt")
        float_model = load_model(f"file:{pt}").model.eval()
    path = write_onnx(folder / "model.onnx", model.model_bytes())
    write_sidecar(path, loaded)
    return OrtModule(path, float_model=float_model).eval()


def measure_pair(original: nn.Module, new: nn.Module, example: Any, *, task: Any = None, limit: int | None = None,
                 latency: bool = True, runtime: str = "onnxruntime", threads: int | None = None, runs: int = 20,
                 device: str = "cpu") -> tuple[Measured, Measured]:
    """Score, cost and (interleaved, one run) latency of the original and the new model."""
    from slimcnn.export import OrtModule
    from slimcnn.measure import compare_latency, profile

    if isinstance(new, OrtModule):
        return _measure_onnx_pair(original, new, example, task=task, limit=limit, latency=latency, threads=threads,
                                  runs=runs, device=device)
    before, after = profile(original, example), profile(new, example)
    before, after = dataclasses.replace(before, layers=()), dataclasses.replace(after, layers=())
    if latency:
        lat = compare_latency({"before": original, "after": new}, example, runtime=runtime, threads=threads,  # type: ignore[arg-type]
                              runs=runs, warmup=3)
        before, after = dataclasses.replace(before, latency=lat["before"]), dataclasses.replace(after, latency=lat["after"])
    s_before, s_after = _scores(task, original, new, limit=limit, device=device)
    return Measured(s_before, before), Measured(s_after, after)


def _measure_onnx_pair(original: nn.Module, new: Any, example: Any, *, task: Any, limit: int | None, latency: bool,
                       threads: int | None, runs: int, device: str) -> tuple[Measured, Measured]:
    """An int8 ONNX model against the original: params/MACs of the float model it quantised, weight bytes of
    the file's initializers, ONNX Runtime latency of the original's fp32 ONNX vs the file, interleaved."""
    from slimcnn.export import compare_onnx_latency, torch_to_onnx
    from slimcnn.export._int8 import int8_weight_bytes
    from slimcnn.measure import profile

    before = dataclasses.replace(profile(original, example), layers=())
    structure = new.float_model if new.float_model is not None else original
    after = dataclasses.replace(profile(structure, example), layers=(), weight_bytes=int8_weight_bytes(new.model_bytes()))
    if latency:
        lat = compare_onnx_latency({"before": torch_to_onnx(original, example).SerializeToString(),
                                    "after": new.model_bytes()}, example, threads=threads, runs=runs, warmup=3)
        before, after = dataclasses.replace(before, latency=lat["before"]), dataclasses.replace(after, latency=lat["after"])
    s_before, s_after = _scores(task, original, new, limit=limit, device=device)
    return Measured(s_before, before), Measured(s_after, after)


def summary_line(before: Measured, after: Measured) -> str:
    """``top1 98.90 -> 98.60 (drop 0.3); params a -> b; MACs a -> b (0.500x); ORT latency x -> y ms (0.620x)``."""
    from slimcnn.report.tables import fmt_metric, fmt_threads

    parts = []
    if before.score is not None and after.score is not None:
        s0, s1 = before.score, after.score  # trailing zeros kept, as in the report: 31.40 -> 31.38, not 31.4
        drop = s0.drop_to(s1)
        drop = 0.0 if abs(drop) < 1e-6 else drop  # float rounding of an unchanged model read "drop -3.21e-08"
        parts.append(f"{s0.metric} {fmt_metric(s0.value)} -> {fmt_metric(s1.value)} (drop {drop:.3g})")
    if before.cost is not None and after.cost is not None:
        c0, c1 = before.cost, after.cost
        parts.append(f"params {c0.params:,} -> {c1.params:,}")
        parts.append(f"MACs {c0.macs:,} -> {c1.macs:,} ({c1.macs / max(c0.macs, 1):.3f}x)")
        if c0.latency is not None and c1.latency is not None:
            parts.append(f"{c0.latency.runtime} latency {c0.latency.median_ms:.3f} -> {c1.latency.median_ms:.3f} ms "
                         f"({c1.latency.median_ms / max(c0.latency.median_ms, 1e-9):.3f}x, {fmt_threads(c1.latency.threads)})")
    return "; ".join(parts)


def _scores(task: Any, original: Any, new: Any, *, limit: int | None, device: str) -> tuple[Any, Any]:
    """The task's score of the original and of the new model (``(None, None)`` without a task)."""
    if task is None:
        return None, None
    return task.evaluate(original, limit=limit, device=device), task.evaluate(new, limit=limit, device=device)


def original_shapes(model: nn.Module, steps: Iterable[Any]) -> list[dict[str, Any]]:
    """``[{"layer": FQN, "shape": [out, in, ...]}]``: the original weight shape of every layer the plan's steps
    name, so a report shows a pruned layer's original width (its kept channel indices only bound it from below).
    A transposed conv's ``(in, out / groups, ...)`` weight is given as ``(out, in / groups, ...)``."""
    mods = dict(model.named_modules())
    rows = []
    for name in dict.fromkeys(str(layer) for step in steps for layer in step.layers):
        w = getattr(mods.get(name), "weight", None)
        if not isinstance(w, torch.Tensor) or w.dim() < 2:
            continue
        shape = list(w.shape)
        if isinstance(mods[name], nn.modules.conv._ConvTransposeNd):
            groups = int(mods[name].groups)  # type: ignore[arg-type]
            shape[0], shape[1] = shape[1] * groups, shape[0] // groups
        rows.append({"layer": name, "shape": shape})
    return rows
