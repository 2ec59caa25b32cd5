"""``analyze``: profile + whole-model latency + per-layer latency in one :class:`Cost`."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from torch import nn

from slimcnn.measure._inputs import ExampleInput
from slimcnn.measure._latency import Runtime, measure_latency
from slimcnn.measure._layers import layer_latencies
from slimcnn.measure._profile import profile
from slimcnn.types import Cost

log = logging.getLogger(__name__)


def analyze(model: nn.Module, example_input: ExampleInput, *, runtime: Runtime = "onnxruntime",
            threads: int | None = None, per_layer: bool = True, bits: int = 32, latency: bool = True,
            warmup: int = 10, runs: int = 50, layer_runs: int = 20, device: str = "cpu",
            cache_path: str | Path | None = None) -> Cost:
    """Profile ``model`` and measure its latency (and each conv/linear layer's) on ``runtime``.

    Args:
        model: the module (not modified).
        example_input: see :func:`slimcnn.measure.profile`.
        runtime: ``"onnxruntime"`` (default, CPU) or ``"torch"``.
        threads: intra-op threads (``None`` = physical cores).
        per_layer: also time each conv/linear layer alone (cached, see :func:`time_module`).
        bits: bits per weight for the weight bytes.
        latency: measure latency at all (``False`` = :func:`profile` only).
        warmup: untimed whole-model calls.
        runs: timed whole-model calls.
        layer_runs: timed calls per layer.
        device: ``"cpu"`` or ``"cuda[:i]"`` (torch runtime; the model must be on that device).
        cache_path: per-layer latency cache file (``None`` = the default cache).

    Returns:
        :class:`~slimcnn.types.Cost` with ``latency`` and per-layer ``latency_ms`` filled in.

    Raises:
        ConfigError: the forward fails on ``example_input`` or an option is invalid.
        ExportError: ``runtime="onnxruntime"`` and the model cannot be exported faithfully.
    """
    cost = profile(model, example_input, bits=bits)
    if not latency:
        return cost
    stats = measure_latency(model, example_input, runtime=runtime, threads=threads, warmup=warmup, runs=runs,
                            device=device)
    layers = cost.layers
    if per_layer:
        per = layer_latencies(model, example_input, runtime=runtime, threads=stats.threads, runs=layer_runs,
                              device=device, cache_path=cache_path)
        layers = tuple(dataclasses.replace(row, latency_ms=per.get(row.name)) for row in layers)
    return dataclasses.replace(cost, latency=stats, layers=layers)
