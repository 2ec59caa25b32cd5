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
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from slimcnn.compress._recipe import StageSpec
from slimcnn.export._int8 import Int8Spec, calibration_batches
from slimcnn.search.budget import Budget
from slimcnn.types import Cost, Score

if TYPE_CHECKING:  # _run imports this module
    from slimcnn.compress._run import CompressResult, CompressSpec, StageCallback, StageResult

log = logging.getLogger(__name__)

INT8_FACTORS = "int8-factors.json"
"""In the state folder: int8's latency factor on the original, measured by the run's first attempt."""


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


def run_int8_factors(original: nn.Module, task: Any, x: Any, spec: CompressSpec, state_dir: Path | None) -> dict[str, float]:
    """int8's latency factor on the original, measured once per run: a resumed run reads it back, so the recipe
    it settles (int8 last, or not) is the one the finished stages were made for."""
    import json

    path = state_dir / INT8_FACTORS if state_dir is not None else None
    if path is not None and path.is_file():
        return dict(json.loads(path.read_text()))
    factors = int8_factors(original, task, x, spec.int8, threads=spec.threads)
    if path is not None:
        from slimcnn._io import write_json

        write_json(path, factors)
    return factors


def run_int8_stage(stage: StageSpec, current: nn.Module, current_score: Score, task: Any, x: Any, spec: CompressSpec,
              base_score: Score, drop_total: float, owned: set[str], budget: Budget, base_cost: Cost, say: StageCallback, i: int,
              n: int) -> tuple[Any, StageResult]:
    """The int8 stage of a compress run (:func:`int8_stage`) and its :class:`~slimcnn.compress.StageResult`."""
    from slimcnn.compress._run import StageResult

    say(i, stage, f"stage {i + 1} of {n}: int8 (ONNX Runtime static QDQ; may lose {drop_total:.4g} "
                  f"{base_score.metric} in all against the original)")
    ts = time.perf_counter()
    out = int8_stage(current, task, x, spec.int8, baseline=base_score, max_drop=drop_total, threads=spec.threads,
                     float_score=current_score)
    drop = base_score.drop_to(out.score)
    met = drop <= drop_total + 1e-12
    if "weight_bytes" in owned:
        met = met and out.cost.weight_bytes <= budget.limits["weight_bytes"].limit(base_cost.weight_bytes)
    layers = [layer for layer in _quantized_layers(out.fp32) if layer not in out.float_layers]
    step = {"transform": "int8", "layers": layers, "params": out.params}
    assignment = {layer: 8.0 for layer in layers} | {layer: 32.0 for layer in out.float_layers}
    result = StageResult("int8", {"max_drop": f"{drop_total:.6g}", **{k: str(budget.limits[k]) for k in owned}},
                         out.score, out.cost, drop, met, assignment, [step], [], round(time.perf_counter() - ts, 2))
    return out, result


def _quantized_layers(fp32: bytes) -> list[str]:
    import onnx

    from slimcnn.export._int8 import quantizable_layers

    return list(quantizable_layers(onnx.load_from_string(fp32)))


def judge_int8(original: nn.Module, current: nn.Module, float_model: nn.Module | None, out: Any,
                 results: list[StageResult], stages: tuple[StageSpec, ...], budget: Budget, base_score: Score,
                 base_cost: Cost, score: Score, x: Any, spec: CompressSpec, factors: dict[str, float],
                 t0: float) -> CompressResult:
    """Judge the int8 ONNX model: its cost is the int8 file's, its latency ORT against the original's fp32 ONNX."""
    from slimcnn.compress._run import CompressResult
    from slimcnn.export import compare_onnx_latency, torch_to_onnx

    data = current.model_bytes()  # type: ignore[operator]
    after_cost = results[-1].cost
    lat = compare_onnx_latency({"before": torch_to_onnx(original, x).SerializeToString(), "after": data}, x,
                               threads=spec.threads, runs=50)
    before_cost = dataclasses.replace(base_cost, latency=lat["before"])
    after_cost = dataclasses.replace(after_cost, latency=lat["after"])
    checks = budget.check(before_cost, base_score, after_cost, score)
    return CompressResult(
        model=current, stages=results, before={"score": base_score, "cost": before_cost},
        after={"score": score, "cost": after_cost}, checks=checks, met=all(c.met for c in checks), recipe=stages,
        seconds=time.perf_counter() - t0, int8=out, float_model=float_model, int8_factors=factors)
