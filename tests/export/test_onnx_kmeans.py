"""k-means weights inside a standard ONNX file: integer codes + codebook decoded in-graph, ORT parity."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from slimcnn.export import decoded_weights, kmeans_onnx, pack_layers, slim_layers, torch_to_onnx
from slimcnn.measure import ExportError
from slimcnn.measure._onnx import ort_session
from slimcnn.models import load_model
from slimcnn.quantize import KMeansQuantSpec, quantize_model, save_packed


def _run(data: bytes, x: torch.Tensor) -> np.ndarray:
    s = ort_session(data, threads=1)
    return np.asarray(s.run(None, {s.get_inputs()[0].name: x.numpy()})[0])


@pytest.mark.parametrize("per_channel", [False, True])
def test_resnet20_kmeans_onnx_bit_exact_and_parity(per_channel: bool) -> None:
    net = load_model("slimcnn:resnet20", seed=0)
    spec = KMeansQuantSpec.parse("*=4,linear=8,layer2*=3", "layer3*=4,layer2.0.conv1=2", per_channel=per_channel)
    res = quantize_model(net.model, spec)
    layers = pack_layers(res.layers)
    assert {p.mask_kind for p in layers.values()} == {"none", "bitmap", "relative"}
    x = torch.randn(3, 3, 32, 32)
    data = kmeans_onnx(res.model, layers, x[:1])
    proto = onnx.load_from_string(data)
    ops = {n.op_type for n in proto.graph.node}
    assert ops >= {"Gather", "BitShift"} and not ops & {"NonZero", "Compress"}  # static shapes: ORT folds them
    assert all(i.name not in {f"{n}.weight" for n in layers} for i in proto.graph.initializer)
    got = decoded_weights(data, [f"{n}.weight" for n in layers])
    for n in layers:
        assert np.array_equal(got[f"{n}.weight"], res.layers[n].decode().numpy()), n
    reference = torch_to_onnx(res.model, x[:1], keep_batchnorm=True).SerializeToString()
    assert np.abs(_run(data, x) - _run(reference, x)).max() <= 1e-5  # dynamic batch (3) too
    with torch.no_grad():
        want = res.model.eval()(x).numpy()
    assert np.abs(_run(data, x) - want).max() <= 1e-4 * max(1.0, float(np.abs(want).max()))
    assert len(data) < 0.3 * len(reference)


def test_slim_file_to_onnx_close_to_slim_size(tmp_path: Path) -> None:
    net = load_model("slimcnn:resnet20", seed=0)
    res = quantize_model(net.model, KMeansQuantSpec.parse("*=3", "layer3*=3"))
    for huffman, limit in ((False, 1.15), (True, 1.3)):  # Huffman in the .slim, fixed width in ONNX
        rep = save_packed(tmp_path / "m.slim", res, source=net.source, info=net.info, huffman=huffman)
        layers = slim_layers(tmp_path / "m.slim")
        data = kmeans_onnx(load_model(f"file:{tmp_path / 'm.slim'}").model, layers, torch.randn(1, 3, 32, 32))
        assert len(data) <= limit * rep.file_bytes


def test_kmeans_onnx_refuses_a_model_that_is_not_the_decoded_one() -> None:
    net = load_model("slimcnn:lenet5", seed=0)
    res = quantize_model(net.model, KMeansQuantSpec.parse("*=2"))
    with pytest.raises(ExportError, match="differs from its k-means codes"):
        kmeans_onnx(net.model, pack_layers(res.layers), torch.randn(1, 1, 32, 32))


def test_fully_pruned_layer_decodes_to_zeros() -> None:
    from slimcnn.export import pack_layer

    net = load_model("slimcnn:lenet5", seed=0)
    res = quantize_model(net.model, KMeansQuantSpec.parse("fc3=2"))
    layers = pack_layers(res.layers)
    with torch.no_grad():
        res.model.fc3.weight.zero_()
    layers["fc3"] = pack_layer("fc3", (10, 84), np.zeros(1, np.float32), np.zeros(0, np.int64), np.zeros((10, 84), bool))
    data = kmeans_onnx(res.model, layers, torch.randn(1, 1, 32, 32))
    assert not decoded_weights(data, ["fc3.weight"])["fc3.weight"].any()
