"""Deploy what was compressed: int8 ONNX, k-means weights inside standard ONNX, C arrays for microcontrollers.

Example:
    >>> res = quantize_model(model, KMeansQuantSpec.parse("4"))            # doctest: +SKIP
    >>> data = kmeans_onnx(res.model, pack_layers(res.layers), example)   # doctest: +SKIP
    >>> write_c("out/", pack_layers(res.layers), res.model.state_dict())  # doctest: +SKIP
"""

from slimcnn.export._c import CExport, write_c
from slimcnn.export._int8 import CALIBRATIONS, Int8Spec, TaskCalibrationReader, quantize_int8
from slimcnn.export._onnx import decoded_weights, kmeans_onnx, torch_to_onnx
from slimcnn.export._ort import OrtModule, compare_onnx_latency
from slimcnn.export._packed import PackedLayer, pack_layer, pack_layers, slim_layers
from slimcnn.export._run import FORMATS, ExportSpec, check_export, export_to_run

__all__ = [
    "CALIBRATIONS",
    "FORMATS",
    "CExport",
    "ExportSpec",
    "Int8Spec",
    "OrtModule",
    "PackedLayer",
    "TaskCalibrationReader",
    "check_export",
    "compare_onnx_latency",
    "decoded_weights",
    "export_to_run",
    "kmeans_onnx",
    "pack_layer",
    "pack_layers",
    "quantize_int8",
    "slim_layers",
    "torch_to_onnx",
    "write_c",
]
