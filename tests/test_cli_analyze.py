"""``slimcnn analyze``: JSON contract, table, errors (one stderr line, exit 2)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from slimcnn.cli import main


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLIMCNN_CACHE_DIR", str(tmp_path / "cache"))


def test_json_no_latency(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["analyze", "torchvision:resnet18", "--json", "--input", "1x3x64x64", "--no-latency"])
    out, err = capsys.readouterr()
    assert rc == 0
    data = json.loads(out)  # exactly one JSON object
    for key in ("params", "macs", "weight_bytes", "activation_bytes", "latency", "layers", "source", "input_shape"):
        assert key in data
    assert data["params"] == 11_689_512 and data["weight_bytes"] == 4 * 11_689_512
    assert data["input_shape"] == [1, 3, 64, 64] and data["latency"] is None
    assert data["source"] == "torchvision:resnet18"
    assert {"name", "type", "params", "macs", "latency_ms"} <= set(data["layers"][0])
    assert sum(row["macs"] for row in data["layers"]) == data["macs"]
    assert "untrained" in err  # the info note goes to stderr, not into the JSON


def test_json_with_latency_torch_runtime(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["analyze", "torchvision:resnet18", "--json", "--input", "1x3x32x32", "--runtime", "torch",
               "--threads", "1", "--runs", "2"])
    out, _ = capsys.readouterr()
    assert rc == 0
    lat = json.loads(out)["latency"]
    assert {"median_ms", "p10_ms", "p90_ms", "n", "runtime", "threads", "device"} <= set(lat)
    assert lat["runtime"] == "torch" and lat["threads"] == 1 and lat["n"] == 2
    rows = {r["name"]: r for r in json.loads(out)["layers"]}
    assert rows["conv1"]["latency_ms"] > 0 and rows["bn1"]["latency_ms"] is None


def test_table_output(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["analyze", "torchvision:resnet18", "--input", "1x3x32x32", "--no-latency"])
    out, _ = capsys.readouterr()
    assert rc == 0
    assert "layer4.1.conv2" in out and "total" in out and "11,689,512" in out


def test_unknown_source_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["analyze", "nosuch:model"])
    _, err = capsys.readouterr()
    assert rc == 2
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "torchvision:" in lines[0] and "slimcnn:" in lines[0]


def test_wrong_input_shape(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["analyze", "torchvision:resnet18", "--input", "1x1x32x32", "--no-latency"])
    _, err = capsys.readouterr()
    assert rc == 2
    error_lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(error_lines) == 1 and "1x1x32x32" in error_lines[0] and "3 input channels" in error_lines[0]


@pytest.mark.parametrize("args", [["--runtime", "tvm"], ["--input", "1xAx3"]])
def test_bad_options_exit_2(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["analyze", "torchvision:resnet18", "--no-latency", *args]) == 2
    assert "error:" in capsys.readouterr().err


def test_groups_list_what_pruning_sees(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["analyze", "slimcnn:tiny_cnn", "--json", "--no-latency", "--groups"]) == 0
    traced = json.loads(capsys.readouterr().out)
    groups = traced["groups"]
    assert traced["check_run"] is None  # conv, BN, ReLU, add, pool, flatten: the trace proves the pruned shapes
    fixed = [g for g in groups if not g["prunable"]]
    assert len(groups) == 5 and [g["producers"] for g in fixed] == [["fc"]]  # the classifier reaches the output
    assert fixed[0]["fixed"] == fixed[0]["channels"] == 10 and fixed[0]["fixed_because"] == ["reaches a model output"]
    residual = next(g for g in groups if "stem" in g["producers"])
    assert residual["producers"] == ["res_conv2", "stem"]  # added together, so pruned together
    assert main(["analyze", "slimcnn:tiny_cnn", "--no-latency", "--groups"]) == 0
    out = capsys.readouterr().out
    assert "4 of 5 prunable" in out and "no check run needed" in out
    assert main(["analyze", "slimcnn:yolo_fastestv2", "--input", "1x3x64x64", "--no-latency", "--groups"]) == 0
    assert ("one check run of the pruned model (its shapes, and its values against the original with the pruned "
            "channels zeroed), because 'getitem' on channel data") in capsys.readouterr().out


def test_prune_that_removes_nothing_says_why_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    common = ["prune", "slimcnn:tiny_cnn", "--no-latency"]
    assert main([*common, "--ratio", "0.5", "--exclude", "*", "--out", str(tmp_path / "a")]) == 0
    err = capsys.readouterr().err
    assert "no channel group is prunable outside --exclude *" in err and "analyze slimcnn:tiny_cnn --groups" in err
    assert "Warning" not in err and ".py:" not in err  # no raw Python warning with a file and source line
    assert main([*common, "--ratio", "0.01", "--out", str(tmp_path / "b")]) == 0
    assert "removes no whole channel from any of the 4 prunable groups" in capsys.readouterr().err


def test_an_onnx_file_is_counted_and_timed_as_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """It printed 0 params, 0 MACs, 0 bytes and 0.005 ms (a re-export of its wrapper). Now: the file's initializers
    and the file itself in ONNX Runtime; MACs are not claimed."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    assert main(["export", "slimcnn:lenet5", "--format", "onnx", "--runs", "2", "--out", str(tmp_path / "e")]) == 0
    path = tmp_path / "e" / "model.onnx"
    capsys.readouterr()
    assert main(["analyze", f"file:{path}", "--json", "--runs", "5"]) == 0
    data = json.loads(capsys.readouterr().out)
    tensors = [numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer]
    assert data["params"] == sum(t.size for t in tensors) == 61_706  # LeNet-5's parameters, as torch counts them
    assert data["weight_bytes"] == sum(np.asarray(t).nbytes for t in tensors) and data["macs"] is None
    assert data["latency"]["runtime"] == "onnxruntime" and data["latency"]["median_ms"] > 0.0
    assert main(["analyze", f"file:{path}", "--input", "1x1x64x64", "--no-latency"]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]  # after the file's notes (untrained)
    assert last.startswith("error:") and "1x32x32" in last


def test_a_slim_file_counts_the_weight_bytes_it_stores(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """k-means exists to shrink the stored weights: analyze of a .slim printed the decoded float32 bytes."""
    out = tmp_path / "q"
    assert main(["quantize", "slimcnn:lenet5", "--bits", "4", "--no-onnx", "--out", str(out), "--json"]) == 0
    stored = json.loads(capsys.readouterr().out)["after"]["cost"]["weight_bytes"]
    assert main(["analyze", f"file:{out / 'model.slim'}", "--json", "--no-latency"]) == 0
    captured = capsys.readouterr()
    data = json.loads(captured.out)
    assert data["weight_bytes"] == stored < data["params"] * 4
    assert sum(row["weight_bytes"] for row in data["layers"]) == stored
    assert f"weight bytes as model.slim stores them: {stored:,} B" in captured.err


def test_a_slimk_file_counts_what_it_stores_and_the_kept_kernels(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """Kernel removal stores only the kept kernels: analyze of a .slimk printed the dense float32 model it decodes
    to (removed kernels as zeros). Now params, MACs and bytes are those compress and the kernel search check."""
    import torch

    from slimcnn.models import load_model
    from slimcnn.search.families import kernel_sparse_cost

    out = tmp_path / "k"
    assert main(["prune", "slimcnn:fsrcnn", "--scale", "3", "--granularity", "kernel", "--ratio", "0.5",
                 "--no-latency", "--out", str(out), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)["details"]["slimk"]
    path = out / "model.slimk"
    assert main(["analyze", f"file:{path}", "--json", "--no-latency", "--input", "1x1x24x24"]) == 0
    captured = capsys.readouterr()
    data = json.loads(captured.out)
    decoded = load_model(f"file:{path}").model
    layers = [n for n, m in decoded.named_modules()
              if isinstance(m, torch.nn.Conv2d) and m.weight.detach().abs().amax(dim=(2, 3)).eq(0).any()]
    assert layers, "the 0.5 kernel ratio removed no kernel"
    x = torch.zeros(1, 1, 24, 24)
    params, macs, wbytes = kernel_sparse_cost(decoded, x, layers)
    dense_params, dense_macs, dense_bytes = kernel_sparse_cost(decoded, x, [])
    assert params < dense_params and macs < dense_macs and wbytes < dense_bytes
    assert (data["params"], data["macs"], data["weight_bytes"]) == (params, macs, wbytes)
    assert wbytes == stats["kernel_value_bytes"] + stats["index_bytes"] + stats["dense_bytes"]  # fsrcnn: no buffers
    assert sum(r["weight_bytes"] for r in data["layers"]) == wbytes
    assert sum(r["macs"] for r in data["layers"]) == macs
    assert f"weights are {wbytes:,} B (float32 after decoding: {dense_bytes:,} B)" in captured.err
