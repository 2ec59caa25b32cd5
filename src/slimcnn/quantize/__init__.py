"""k-means weight sharing, magnitude pruning and the packed ``.slim`` file (Tomè et al. 2016, Deep Compression).

Example:
    >>> spec = KMeansQuantSpec.parse("conv1=9,conv*=8,fc*=1", prune="conv3=2,conv4=2,fc*=3")
    >>> result = quantize_model(model, spec)          # doctest: +SKIP
    >>> save_packed("model.slim", result, source="slimcnn:alexnet_bvlc")  # doctest: +SKIP
    >>> load_packed("model.slim").model               # doctest: +SKIP
"""

from slimcnn.quantize._finetune import finetune_centroids_
from slimcnn.quantize._format import PackReport, save_packed
from slimcnn.quantize._kmeans import KMeansFit, dequantize, fit_kmeans, kmeans_codebook, solve_1d
from slimcnn.quantize._model import (
    KMeansQuantSpec,
    LayerReport,
    QuantizedLayer,
    QuantizeResult,
    kernel_stored_weights,
    kmeans_bytes_bound,
    payload_estimate,
    quantizable_layers,
    quantize_,
    quantize_model,
)
from slimcnn.quantize._planner import LayerOption, MemoryPlan, plan_memory
from slimcnn.quantize._prune import global_magnitude_masks, magnitude_mask, n_keep
from slimcnn.quantize._read import PackedFile, load_packed, read_packed
from slimcnn.quantize._read import register_slim_loader as _register_slim_loader
from slimcnn.quantize._spec import parse_layer_rules

_register_slim_loader()

__all__ = [
    "KMeansFit",
    "KMeansQuantSpec",
    "LayerOption",
    "MemoryPlan",
    "LayerReport",
    "PackReport",
    "PackedFile",
    "QuantizeResult",
    "QuantizedLayer",
    "dequantize",
    "finetune_centroids_",
    "fit_kmeans",
    "global_magnitude_masks",
    "kernel_stored_weights",
    "kmeans_bytes_bound",
    "kmeans_codebook",
    "load_packed",
    "magnitude_mask",
    "n_keep",
    "parse_layer_rules",
    "payload_estimate",
    "plan_memory",
    "quantizable_layers",
    "quantize_",
    "quantize_model",
    "read_packed",
    "save_packed",
    "solve_1d",
]
