"""Measure what a model costs: params, MACs, weight bytes, activation memory, latency, ONNX export.

Counting conventions (see ``docs/readme/measure.md``): MACs are the multiply-accumulates of
convolutions and matrix products only; batch norm, activations, pooling and bias additions
count 0. Latency defaults to ONNX Runtime on the CPU with one thread per physical core.

Example:
    >>> import torch, torchvision
    >>> from slimcnn.measure import profile
    >>> cost = profile(torchvision.models.resnet18(), torch.randn(1, 3, 224, 224))
    >>> cost.params, round(cost.macs / 1e9, 2)
    (11689512, 1.81)
"""

from slimcnn.measure._analyze import analyze
from slimcnn.measure._inputs import MAX_INPUT_ELEMENTS, ExampleInput, check_input_shape
from slimcnn.measure._interleaved import cpu_contended, time_modules_interleaved
from slimcnn.measure._latency import (
    CHECK_SECONDS,
    compare_latency,
    cpu_model,
    device_name,
    eval_mode,
    measure_latency,
    ort_channel_block,
    package_versions,
    physical_cores,
    torch_threads,
)
from slimcnn.measure._layers import (
    TIMED_LAYERS,
    clear_memory_cache,
    default_cache_path,
    layer_latencies,
    time_module,
)
from slimcnn.measure._onnx import ExportError, export_onnx, onnx_bytes
from slimcnn.measure._profile import count_params, layer_input_shapes, profile, weight_bytes

__all__ = [
    "CHECK_SECONDS",
    "TIMED_LAYERS",
    "ExampleInput",
    "ExportError",
    "MAX_INPUT_ELEMENTS",
    "analyze",
    "check_input_shape",
    "clear_memory_cache",
    "compare_latency",
    "count_params",
    "cpu_contended",
    "cpu_model",
    "package_versions",
    "default_cache_path",
    "device_name",
    "eval_mode",
    "export_onnx",
    "layer_input_shapes",
    "layer_latencies",
    "measure_latency",
    "onnx_bytes",
    "ort_channel_block",
    "physical_cores",
    "profile",
    "time_module",
    "time_modules_interleaved",
    "torch_threads",
    "weight_bytes",
]
