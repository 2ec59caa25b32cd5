"""The ``int8`` stage: ONNX Runtime static int8 of the stage's input, judged as the int8 ONNX model itself.

int8 has no knob to search: it divides weight bytes by ~4 and ORT latency by a factor of the model. So
:func:`int8_factors` measures the latency factor on the original before the structural stages run, and
the stage owning the latency target is given it divided by that factor; a stage owning the weight-byte
target counts bytes as the int8 file itself (``SearchSpec.int8_weights``: a constant ratio misjudges a
pruned model, whose per-channel scales and int32 biases weigh more next to fewer weights); the stage itself
(:func:`int8_stage`) calibrates on the task's training data, scores the int8 model in ONNX Runtime
against the ORIGINAL, and keeps the fewest most sensitive layers in float when the drop left is exceeded
(:func:`slimcnn.export._fallback.float_fallback`).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from slimcnn.export._int8 import Int8Spec, calibration_batches
from slimcnn.types import Cost, Score

log = logging.getLogger(__name__)


@dataclass
class Int8Outcome:
    """The int8 model of a stage and what it was judged on."""

    module: nn.Module
    """An :class:`~slimcnn.export.OrtModule` holding :attr:`data`."""
    data: bytes
    """The int8 ONNX model (QDQ): the artifact written as ``model.onnx``."""
    fp32: bytes
    """The fp32 ONNX model of the stage's input (latency comparisons)."""
    score: Score
    cost: Cost
    float_layers: list[str]
    params: dict[str, Any]
    """The ``int8`` plan step's params (spec, float layers, recorded activation ranges)."""
    details: dict[str, Any] = field(default_factory=dict)


def int8_factors(model: nn.Module, task: Any, x: torch.Tensor, spec: Int8Spec, *, threads: int | None,
                 runs: int = 50) -> dict[str, float]:
    """What int8 alone does to ``model``'s latency: ORT median of the int8 model over the fp32 one, timed
    interleaved in one run (batch of ``x``).
    """
    from slimcnn.export import compare_onnx_latency, quantize_int8, torch_to_onnx
    from slimcnn.progress import phase

    with phase("int8 on the original: quantise, time fp32 vs int8", 2, "steps") as advance:
        fp32 = torch_to_onnx(model, x).SerializeToString()
        data = quantize_int8(fp32, calibration_batches(task, spec.samples), spec)
        advance()
        lat = compare_onnx_latency({"fp32": fp32, "int8": data}, x, threads=threads, runs=runs)
        advance()
    out = {"latency_ms": lat["int8"].median_ms / lat["fp32"].median_ms}
    log.info("int8 on the original: latency %.3fx (ONNX Runtime, interleaved)", out["latency_ms"])
    return out


def int8_stage(model: nn.Module, task: Any, x: torch.Tensor, spec: Int8Spec, *, baseline: Score, max_drop: float,
               threads: int | None = None, float_score: Score | None = None) -> Int8Outcome:
    """Quantise ``model`` to int8 ONNX and score it on the task's validation data against ``baseline``.

    When the drop exceeds ``max_drop`` (metric units, against the ORIGINAL's ``baseline``), the fewest most
    sensitive layers go to float (per-layer sensitivity, greedy, verified on all validation images) --
    unless ``float_score`` (``model``'s own score) already exceeds it: no layer kept in float can then
    bring the drop under, and the fallback would only spend an evaluation per layer.
    """
    from slimcnn.export import OrtModule, torch_to_onnx
    from slimcnn.export._fallback import float_fallback
    from slimcnn.export._int8 import Int8Quantizer, int8_step_params, int8_weight_bytes
    from slimcnn.measure import profile
    from slimcnn.measure._latency import resolve_threads
    from slimcnn.progress import phase

    n_threads = resolve_threads(threads)
    # scored on whole validation images: a super-resolution file must take any height and width
    fp32 = torch_to_onnx(model, x, dynamic_spatial=getattr(task, "name", None) == "sr").SerializeToString()
    details: dict[str, Any] = {}
    with Int8Quantizer(fp32, calibration_batches(task, spec.samples), spec) as q:
        details["spec"] = dataclasses.asdict(q.spec)  # reduce_range as decided for this CPU
        with phase("int8: calibrate and quantise", 1, "model") as advance:
            data = q.quantize()
            advance()
        score = task.evaluate(OrtModule(data, threads=n_threads))
        float_layers: list[str] = []
        details["all_int8_drop"] = baseline.drop_to(score)
        hopeless = float_score is not None and baseline.drop_to(float_score) > max_drop
        if hopeless:
            details["float_fallback"] = {"skipped": f"the float input already loses {baseline.drop_to(float_score):.4g}"
                                                   f" {baseline.metric} (limit {max_drop:.4g})"}
            log.warning("int8: no float fallback: %s", details["float_fallback"]["skipped"])
        elif baseline.drop_to(score) > max_drop:
            q.spec = dataclasses.replace(q.spec, float_fallback="auto", max_drop=f"{max(max_drop, 0.0):.6g}")
            fb = float_fallback(q, fp32, task, baseline=baseline, limit=None, threads=n_threads)
            data, float_layers = fb.data, fb.float_layers
            details["float_fallback"] = fb.details
            score = task.evaluate(OrtModule(data, threads=n_threads))
        params = int8_step_params(q, float_layers)
    cost = dataclasses.replace(profile(model, x), weight_bytes=int8_weight_bytes(data), layers=())
    details["onnx_bytes"] = len(data)
    return Int8Outcome(OrtModule(data, float_model=model).eval(), data, fp32, score, cost, float_layers, params,
                       details)
