"""Automatic float fallback for int8: per-layer sensitivity on the task's data, then the fewest layers in float.

Method (one layer quantised at a time, the cheaper of the two sound choices here: both cost one int8
variant per layer, but its signal is the layer's own error, not a small difference between two
fully quantised models): calibrate once (:class:`~slimcnn.export._int8.Int8Quantizer`), then for
each conv/linear layer build the model where **only that layer** is int8 (its weight and input
activation) and run it on the first ``sweep_limit`` evaluation images. Sensitivity = relative
output error ``sum((y_int8 - y_fp32)^2) / sum(y_fp32^2)`` against the fp32 ONNX model on the same
images (continuous, so a 1,000-image sweep ranks layers that a top-1 difference of a few images
could not); the task score of each one-layer model is recorded beside it.

``N``: the N most sensitive layers stay float. ``auto``: greedy by sensitivity, k = 0, 1, ... most
sensitive layers in float, each a real int8 model scored on the sweep images until the drop there
is within ``max_drop``; that k is then verified on the full evaluation data (the data the final
score uses) and, while the drop there exceeds the target, one more layer goes to float.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from slimcnn.errors import ConfigError

log = logging.getLogger(__name__)


class _Recorder(nn.Module):
    """An ONNX model (bytes) as an ``nn.Module`` run batched by ONNX Runtime; keeps every output."""

    def __init__(self, data: bytes, threads: int) -> None:
        super().__init__()
        from slimcnn.measure._onnx import ort_session

        self.session = ort_session(data, threads=threads)
        self.input_name = self.session.get_inputs()[0].name
        self.outputs: list[np.ndarray] = []

    def forward(self, x: torch.Tensor) -> Any:
        outs = self.session.run(None, {self.input_name: x.detach().cpu().float().contiguous().numpy()})
        self.outputs.append(np.concatenate([np.asarray(o, np.float32).reshape(len(x), -1) for o in outs], axis=1))
        t = tuple(torch.from_numpy(np.asarray(o)) for o in outs)
        return t[0] if len(t) == 1 else t

    def stacked(self) -> np.ndarray:
        return np.concatenate(self.outputs)


@dataclass
class Fallback:
    """What :func:`float_fallback` chose."""

    data: bytes
    """The int8 model with ``float_layers`` in float."""
    float_layers: list[str]
    details: dict[str, Any]


def _score(task: Any, data: bytes, threads: int, limit: int | None) -> tuple[Any, np.ndarray]:
    rec = _Recorder(data, threads)
    s = task.evaluate(rec, limit=limit)
    return s, rec.stacked()


def float_fallback(quantizer: Any, fp32: bytes, task: Any, *, baseline: Any, limit: int | None,
                   threads: int = 1) -> Fallback:
    """Measure per-layer int8 sensitivity and keep the most sensitive layers in float (see the module doc).

    Args:
        quantizer: an open :class:`~slimcnn.export._int8.Int8Quantizer` (its spec has ``float_fallback``).
        fp32: the fp32 ONNX model it quantises.
        task: the task whose evaluation data the sweep and the verification run on.
        baseline: the original model's Score on the final data (``limit``); the drop is measured from it.
        limit: the final evaluation's ``--limit`` (None: all images).
        threads: ONNX Runtime threads.
    """
    from slimcnn.search.budget import parse_drop

    spec = quantizer.spec
    t0 = time.perf_counter()
    sweep = spec.sweep_limit if limit is None else min(spec.sweep_limit, limit)
    s_fp, y_fp = _score(task, fp32, threads, sweep)
    energy = float(np.sum(y_fp.astype(np.float64) ** 2)) or 1.0
    forced = {f for f, names in quantizer.layers.items() if set(names) <= set(quantizer.base_exclude)}
    rows = []
    for fqn in quantizer.layers:
        if fqn in forced:
            continue
        s_q, y_q = _score(task, quantizer.quantize(only=fqn), threads, sweep)
        err = float(np.sum((y_q.astype(np.float64) - y_fp) ** 2)) / energy
        rows.append({"layer": fqn, "output_error": err, "score_drop": s_fp.drop_to(s_q)})
        log.info("int8 sensitivity %-28s output error %.3g, %s drop %.2f", fqn, err, s_q.metric, rows[-1]["score_drop"])
    rows.sort(key=lambda r: -r["output_error"])
    for i, r in enumerate(rows, 1):
        r["rank"] = i
    order = [r["layer"] for r in rows]
    details: dict[str, Any] = {
        "method": "one layer int8 at a time (every other node float); sensitivity = relative output error vs the "
                  "fp32 ONNX model, sum((y_int8 - y_fp32)^2) / sum(y_fp32^2), on the sweep images",
        "sweep_images": s_fp.n, "sensitivity": rows, "forced_float": sorted(forced)}
    steps: list[dict[str, Any]] = []
    if spec.float_fallback != "auto":
        n = int(spec.float_fallback)
        if n > len(order):
            raise ConfigError(f"--float-fallback {n}: the model has only {len(order)} int8-able conv/linear layers")
        chosen = order[:n]
        data = quantizer.quantize(chosen)
    else:
        amount = parse_drop(spec.max_drop)
        target = amount.limit(baseline.value)
        details["max_drop"] = spec.max_drop
        details["target_drop"] = target
        k = 0
        while True:  # greedy on the sweep images
            data = quantizer.quantize(order[:k])
            s_q, _ = _score(task, data, threads, sweep)
            drop = s_fp.drop_to(s_q)
            steps.append({"float_layers": k, "on": "sweep", "n": s_q.n, "drop": drop, "score": s_q.value})
            log.info("float fallback: %d layers in float, drop %.3f on %d sweep images", k, drop, s_q.n)
            if drop <= target or k >= len(order):
                break
            k += 1
        while True:  # verified on the final data, one more layer while it misses
            s_q, _ = _score(task, data, threads, limit)
            drop = baseline.drop_to(s_q)
            steps.append({"float_layers": k, "on": "final", "n": s_q.n, "drop": drop, "score": s_q.value})
            log.info("float fallback: %d layers in float, drop %.3f on %d images", k, drop, s_q.n)
            if drop <= target or k >= len(order):
                break
            k += 1
            data = quantizer.quantize(order[:k])
        chosen = order[:k]
        details["met"] = bool(drop <= target)
        details["verified_drop"] = drop
    details["steps"] = steps
    details["chosen"] = chosen
    details["seconds"] = round(time.perf_counter() - t0, 1)
    return Fallback(data, chosen, details)


def sensitivity_table(details: dict[str, Any], top: int = 10) -> str:
    """The most sensitive layers as a Markdown table (chosen ones marked)."""
    chosen = set(details.get("chosen") or ())
    lines = ["| rank | layer | output error | score drop (sweep) | float |", "|---|---|---|---|---|"]
    for r in details["sensitivity"][:top]:
        lines.append(f"| {r['rank']} | {r['layer']} | {r['output_error']:.3g} | {r['score_drop']:.2f} | "
                     f"{'yes' if r['layer'] in chosen else ''} |")
    return "\n".join(lines)
