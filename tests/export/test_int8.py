"""int8 static PTQ through ONNX Runtime: QDQ, per-channel weights, the task's calibration data."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from slimcnn.errors import ConfigError
from slimcnn.export import Int8Spec, TaskCalibrationReader, quantize_int8, torch_to_onnx
from slimcnn.export._int8 import excluded_nodes, scope_fqn
from slimcnn.measure._onnx import ort_session
from slimcnn.models import load_model
from slimcnn.tasks import make_task


@pytest.fixture(scope="module")
def lenet_digits():  # type: ignore[no-untyped-def]
    net = load_model("slimcnn:lenet5", seed=0)
    task = make_task("classification", "digits", info=net.info)
    return net, task


@pytest.mark.parametrize("calibration", ["minmax", "entropy", "percentile"])
def test_int8_qdq_per_channel(lenet_digits, calibration: str) -> None:  # type: ignore[no-untyped-def]
    net, task = lenet_digits
    x = task.example_input(1)
    fp32 = torch_to_onnx(net.model, x).SerializeToString()
    q = quantize_int8(fp32, task.calibration_batches(2), Int8Spec(calibration=calibration, samples=200))  # type: ignore[arg-type]
    proto = onnx.load_from_string(q)
    ops = [n.op_type for n in proto.graph.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    # per-channel weights: the conv weights' scales are vectors (one per output channel)
    scales = {i.name: onnx.numpy_helper.to_array(i) for i in proto.graph.initializer}
    weight_dq = [n for n in proto.graph.node if n.op_type == "DequantizeLinear" and scales.get(n.input[0]) is not None
                 and scales[n.input[0]].dtype == np.int8]
    assert weight_dq and all(scales[n.input[1]].ndim == 1 and scales[n.input[1]].size > 1 for n in weight_dq)
    xb = task.calibration_batches(1)[0][:64].numpy()
    out_q = ort_session(q, threads=1).run(None, {"input": xb})[0]
    out_f = ort_session(fp32, threads=1).run(None, {"input": xb})[0]
    assert (out_q.argmax(1) == out_f.argmax(1)).mean() >= 0.9
    assert np.abs(out_q - out_f).max() < 0.1 * np.abs(out_f).max() + 1e-3


def test_float_layers_stay_float(lenet_digits) -> None:  # type: ignore[no-untyped-def]
    net, task = lenet_digits
    fp32 = torch_to_onnx(net.model, task.example_input(1))
    assert excluded_nodes(fp32, ("fc*",)) == ["/fc1/Gemm", "/fc2/Gemm", "/fc3/Gemm"]
    q = quantize_int8(fp32.SerializeToString(), task.calibration_batches(1), Int8Spec(samples=64, float_layers=("conv1",)))
    proto = onnx.load_from_string(q)
    conv1 = next(n for n in proto.graph.node if n.name.startswith("/conv1/"))
    producers = {o: n.op_type for n in proto.graph.node for o in n.output}
    assert producers.get(conv1.input[1]) != "DequantizeLinear"  # its weight is the float initializer
    with pytest.raises(ConfigError, match="--float-layers pattern 'conv9'"):
        excluded_nodes(fp32, ("conv9",))


@pytest.mark.parametrize("pruned", [False, True])
def test_int8_model_bytes_equal_the_file_quantised_with_the_task_data(lenet_digits, pruned: bool) -> None:  # type: ignore[no-untyped-def]
    """The byte count a search gives a stage before int8 (one example input calibrates) is the file's own,
    also for a pruned model, where a constant int8/fp32 ratio is not."""
    import copy

    from slimcnn.export._int8 import int8_model_bytes, int8_weight_bytes
    from slimcnn.measure import profile
    from slimcnn.prune import prune_model_

    net, task = lenet_digits
    x = task.example_input(1)
    model = copy.deepcopy(net.model)
    if pruned:
        prune_model_(model, x, prune_ratio=0.5)
    spec = Int8Spec(samples=128, float_layers=("fc3",))
    written = int8_weight_bytes(quantize_int8(torch_to_onnx(model, x).SerializeToString(),
                                              task.calibration_batches(1), spec))
    assert int8_model_bytes(model, x, spec) == written
    ratios = {p: int8_model_bytes(m, x) / profile(m, x).weight_bytes
              for p, m in (("whole", net.model), ("pruned", model))}
    assert not pruned or ratios["pruned"] > ratios["whole"]  # the per-channel share grows as layers thin


def test_scope_fqn_and_reader() -> None:
    assert scope_fqn("/layer1/layer1.0/conv1/Conv") == "layer1.0.conv1"
    assert scope_fqn("/features/features.0/Conv") == "features.0"
    assert scope_fqn("/conv1/Conv") == "conv1"
    r = TaskCalibrationReader([torch.zeros(4, 1, 2, 2), torch.ones(4, 1, 2, 2)], "input", samples=6)
    assert r.get_next()["input"].shape[0] == 6 and r.get_next() is None and r.samples == 6  # type: ignore[index]
    r2 = TaskCalibrationReader([torch.zeros(100, 1, 2, 2), torch.ones(100, 1, 2, 2)], "input", samples=140)
    assert [a.shape[0] for a in r2.arrays] == [35] * 4  # equal batches: ORT's histogram calibrators stack them
    r.rewind()
    assert r.get_next() is not None


@pytest.mark.parametrize(("kwargs", "msg"), [({"calibration": "kl"}, "--calibration"), ({"samples": 0}, "--calibration-samples"),
                                             ({"percentile": 100.0}, "--percentile")])
def test_int8_spec_errors_name_the_flag(kwargs: dict[str, object], msg: str) -> None:
    with pytest.raises(ConfigError, match=msg):
        Int8Spec(**kwargs)  # type: ignore[arg-type]
