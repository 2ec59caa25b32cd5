"""Deploy what was compressed: int8 ONNX, k-means weights inside standard ONNX, C arrays for microcontrollers."""

from slimcnn.export._c import CExport, write_c
from slimcnn.export._packed import PackedLayer, pack_layer, pack_layers, slim_layers

__all__ = ["CExport", "PackedLayer", "pack_layer", "pack_layers", "slim_layers", "write_c"]
