"""int8 as a transform: the ``int8`` plan step replays bit-identically, its module pickles, parity with float."""

from __future__ import annotations

import copy
import io
import json

import numpy as np
import onnx
import pytest
import torch

from slimcnn.errors import ConfigError
from slimcnn.export import Int8Spec, OrtModule, torch_to_onnx
from slimcnn.export._int8 import Int8Quantizer, int8_step_params, int8_weight_bytes
from slimcnn.models import load_model
from slimcnn.run import Plan, PlanStep, apply_plan
from slimcnn.tasks import make_task


@pytest.fixture(scope="module")
def lenet_digits():  # type: ignore[no-untyped-def]
    net = load_model("slimcnn:lenet5", seed=0)
    task = make_task("classification", "digits", info=net.info)
    return net, task


def _run_int8(net, task, spec: Int8Spec, float_layers: list[str]) -> tuple[bytes, dict]:  # type: ignore[no-untyped-def]
    x = task.example_input(1)
    fp32 = torch_to_onnx(net.model, x).SerializeToString()
    with Int8Quantizer(fp32, task.calibration_batches(2), spec) as q:
        return q.quantize(float_layers), int8_step_params(q, float_layers)


@pytest.mark.parametrize("calibration", ["minmax", "entropy"])
def test_int8_step_replays_bit_identically(lenet_digits, calibration: str) -> None:  # type: ignore[no-untyped-def]
    net, task = lenet_digits
    data, params = _run_int8(net, task, Int8Spec(calibration=calibration, samples=128), ["fc3"])  # type: ignore[arg-type]
    # the recorded ranges are plain JSON (min/max only), so they survive plan.json
    assert all(set(d) <= {"CLS", "lowest", "highest"} for d in params["ranges"]["data"].values())
    plan = Plan((PlanStep("int8", ("conv1", "conv2", "fc1", "fc2"), params),), "slimcnn:lenet5", "",
                tuple(task.example_input(1).shape))
    plan = Plan.from_dict(json.loads(json.dumps(plan.to_dict())))
    replayed = apply_plan(net.model, plan, task.example_input(1), strict=False)
    assert isinstance(replayed, OrtModule)
    assert replayed.model_bytes() == data  # no calibration data at replay: the recorded ranges
    # fc3 stayed float: its weight is a float initializer, the others int8
    proto = onnx.load_from_string(data)
    int8_inits = {i.name for i in proto.graph.initializer if i.data_type == onnx.TensorProto.INT8}
    fc3 = next(n for n in proto.graph.node if n.name.startswith("/fc3/"))
    assert fc3.input[1] not in int8_inits and len(int8_inits) >= 4
    assert int8_weight_bytes(data) < sum(p.numel() for p in net.model.parameters()) * 4 / 3


def test_int8_module_pickles_and_matches_float(lenet_digits) -> None:  # type: ignore[no-untyped-def]
    net, task = lenet_digits
    data, _ = _run_int8(net, task, Int8Spec(samples=128), [])
    module = OrtModule(data)
    buf = io.BytesIO()
    torch.save(module, buf)
    buf.seek(0)
    again = torch.load(buf, weights_only=False)
    clone = copy.deepcopy(module)
    xb = task.calibration_batches(1)[0][:64]
    out = module(xb)
    assert torch.equal(again(xb), out) and torch.equal(clone(xb), out)
    with torch.inference_mode():
        ref = net.model.eval()(xb)
    # int8 vs float (untrained LeNet, uint8 activations with ranges from 128 images): the argmax mostly
    # agrees and the error is a few quantisation steps of the output range, far below the output scale
    assert (out.argmax(1) == ref.argmax(1)).float().mean() >= 0.9
    assert (out - ref).abs().max() < 0.1 * ref.abs().max() + 1e-3


def test_reduce_range_is_decided_for_the_cpu_and_recorded(lenet_digits) -> None:  # type: ignore[no-untyped-def]
    from pathlib import Path

    from slimcnn.export._int8 import needs_reduce_range

    info = Path("/proc/cpuinfo")
    flags = set(info.read_text().split()) if info.is_file() else set()
    x86_without_vnni = bool({"avx2", "sse2"} & flags) and not {"avx512_vnni", "avx_vnni", "amx_int8"} & flags
    assert needs_reduce_range() == x86_without_vnni
    _, params = _run_int8(*lenet_digits, Int8Spec(samples=64), [])
    assert params["spec"]["reduce_range"] is x86_without_vnni  # the replay uses the run's choice, on any CPU
    _, forced = _run_int8(*lenet_digits, Int8Spec(samples=64, reduce_range=False), [])
    assert forced["spec"]["reduce_range"] is False


def test_quantizer_needs_data_or_ranges(lenet_digits) -> None:  # type: ignore[no-untyped-def]
    net, task = lenet_digits
    fp32 = torch_to_onnx(net.model, task.example_input(1)).SerializeToString()
    with pytest.raises(ConfigError, match="calibration batches or recorded activation ranges"):
        Int8Quantizer(fp32, None)


def test_symmetric_and_qoperator_variants(lenet_digits) -> None:  # type: ignore[no-untyped-def]
    net, task = lenet_digits
    sym, _ = _run_int8(net, task, Int8Spec(samples=64, symmetric_activations=True), [])
    qop, _ = _run_int8(net, task, Int8Spec(samples=64, quant_format="qoperator"), [])
    zero_points = [onnx.numpy_helper.to_array(i) for i in onnx.load_from_string(sym).graph.initializer
                   if i.name.endswith("zero_point")]
    # symmetric int8 activations: no uint8 zero point left, every int8 one is 0
    assert zero_points and not [z for z in zero_points if z.dtype == np.uint8]
    assert all(not z.any() for z in zero_points if z.dtype == np.int8)
    assert "QLinearConv" in [n.op_type for n in onnx.load_from_string(qop).graph.node]
    with pytest.raises(ConfigError, match="--quant-format"):
        Int8Spec(quant_format="qdq2")  # type: ignore[arg-type]


def test_quantize_scheme_int8_cli(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    from slimcnn.cli import main

    out = tmp_path / "q8"
    rc = main(["quantize", "slimcnn:lenet5", "--scheme", "int8", "--task", "classification", "--data", "digits",
               "--limit", "100", "--out", str(out), "--json"])
    res = json.loads(capsys.readouterr().out)
    assert rc == 0 and res["command"] == "quantize" and res["after"]["score"]["n"] == 100
    assert [s["transform"] for s in res["plan"]["steps"]] == ["int8"]
    assert (out / "model.onnx").is_file() and not (out / "model.slim").exists()
    # slimcnn apply replays the int8 step: the same bytes, measured as the int8 file (its initializers' bytes)
    again = tmp_path / "applied"
    assert main(["apply", str(out / "plan.json"), "slimcnn:lenet5", "--no-latency",
                 "--out", str(again), "--json"]) == 0
    applied = json.loads(capsys.readouterr().out)
    assert (again / "model.onnx").read_bytes() == (out / "model.onnx").read_bytes()
    assert applied["after"]["cost"]["weight_bytes"] == res["after"]["cost"]["weight_bytes"]
    assert applied["after"]["cost"]["macs"] == res["before"]["cost"]["macs"]
    for bad, says in ((["--bits", "4"], "--bits is a k-means option"), (["--scheme", "fp16"], "--scheme must be"),
                      ([], "--task")):
        args = ["quantize", "slimcnn:lenet5", "--scheme", "int8", *bad, "--out", str(tmp_path / "bad")]
        if bad and bad[0] == "--bits":
            args += ["--task", "classification", "--data", "digits"]
        assert main(args) == 2
        assert says in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_int8_stage_falls_back_to_float_and_records_it(lenet_digits) -> None:  # type: ignore[no-untyped-def]
    import dataclasses

    from slimcnn.compress._int8 import int8_stage
    from slimcnn.export._int8 import replay_int8

    net, task = lenet_digits
    x = task.example_input(1)
    # a baseline no int8 model reaches: the greedy fallback must end with every layer in float
    unreachable = dataclasses.replace(task.evaluate(net.model), value=101.0)
    out = int8_stage(net.model, task, x, Int8Spec(samples=64), baseline=unreachable, max_drop=0.5)
    assert out.details["float_fallback"]["met"] is False
    assert sorted(out.float_layers) == ["conv1", "conv2", "fc1", "fc2", "fc3"]
    assert out.params["float_layers"] == out.float_layers and isinstance(out.params["spec"]["reduce_range"], bool)
    assert replay_int8(net.model, out.params, x) == out.data
    assert out.score.value == task.evaluate(OrtModule(out.data)).value
