"""``slimcnn quantize`` end to end on a small zoo model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from slimcnn.cli import main
from slimcnn.models import load_model


def test_cli_json_and_outputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "q"
    rc = main(["quantize", "slimcnn:lenet5", "--bits", "conv*=6,fc*=2", "--prune", "fc*=3", "--codebook", "fp16",
               "--huffman", "--out", str(out), "--json"])
    assert rc == 0
    obj = json.loads(capsys.readouterr().out)["details"]
    for name in ("model.slim", "model.pt", "model.onnx", "result.json"):
        assert (out / name).is_file()
    assert obj["file_bytes"] == (out / "model.slim").stat().st_size
    assert obj["paper_payload_bytes"] == pytest.approx(sum(r["bits"] * r["kept"] / 8 for r in obj["layers"]))
    biases = sum(p.numel() for n, p in load_model("slimcnn:lenet5").model.named_parameters() if n.endswith(".bias"))
    assert obj["float_bytes"] == 4 * biases  # every conv/linear quantised: the biases stay float32
    assert obj["payload_bytes"] == pytest.approx(obj["paper_payload_bytes"] + obj["float_bytes"])
    assert obj["compression_paper"] > obj["compression_payload"] and obj["larger"] is False
    # the headline counts what the file stores of the parameters: codebooks, indices, masks, float32 rest
    stored = sum(r["file_codebook_bytes"] + r["file_index_bytes"] + r["file_mask_bytes"] for r in obj["layers"])
    assert obj["weight_bytes"] == stored + obj["float_bytes"] < obj["file_bytes"]
    assert obj["weight_bytes"] > obj["payload_bytes"]  # the fc masks and the codebooks are real bytes
    assert {r["name"] for r in obj["layers"]} == {"conv1", "conv2", "fc1", "fc2", "fc3"}
    result = json.loads((out / "result.json").read_text())
    assert result["details"]["original_bytes"] == obj["original_bytes"]
    # weight sharing leaves the activations as they were, and the result says how big they are
    assert result["before"]["cost"]["activation_bytes"] == result["after"]["cost"]["activation_bytes"] > 0


def test_cli_with_task_reports_metric(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["quantize", "slimcnn:lenet5", "--bits", "4", "--task", "classification", "--data", "digits",
               "--limit", "64", "--no-onnx", "--out", str(tmp_path / "q"), "--json"])
    assert rc == 0
    obj = json.loads(capsys.readouterr().out)
    assert obj["before"]["score"]["metric"] == "top1" and obj["details"]["drop"] is not None


@pytest.mark.parametrize(
    ("args", "msg"),
    [
        (["--bits", "conv9=4"], "matches no conv/linear layer"),
        (["--bits", "conv*=20"], "--bits"),
        (["--weight-bytes", "4MB"], "--data"),
        (["--bits", "4", "--weight-bytes", "4 parsecs"], "not a unit"),
    ],
)
def test_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], msg: str) -> None:
    rc = main(["quantize", "slimcnn:lenet5", *args, "--out", str(tmp_path / "q")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert msg in err[-1] and err[-1].startswith("error:")


def test_unquantised_layers_count_and_a_larger_file_is_called_larger(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # fc* left float32: they count at 4 bytes per parameter in the headline payload, not as free
    rc = main(["quantize", "slimcnn:lenet5", "--bits", "conv*=4", "--no-onnx", "--out", str(tmp_path / "a"), "--json"])
    assert rc == 0
    obj = json.loads(capsys.readouterr().out)["details"]
    net = load_model("slimcnn:lenet5").model
    fc = sum(p.numel() for n, p in net.named_parameters() if n.startswith("fc"))
    conv_bias = sum(p.numel() for n, p in net.named_parameters() if n.startswith("conv") and n.endswith(".bias"))
    assert obj["float_bytes"] == 4 * (fc + conv_bias)
    assert obj["payload_bytes"] == pytest.approx(obj["paper_payload_bytes"] + obj["float_bytes"])
    assert obj["compression_payload"] < 1.1 < obj["compression_paper"]

    # a net so small that codebooks and header outweigh the savings: a warning, never "Nx" compression
    (tmp_path / "nets.py").write_text(
        "from torch import nn\n"
        "def build():\n"
        "    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10))\n"
    )
    rc = main(["quantize", f"python:{tmp_path / 'nets.py'}:build", "--bits", "4", "--no-onnx",
               "--out", str(tmp_path / "b")])
    out, err = capsys.readouterr()
    assert rc == 0
    res = json.loads((tmp_path / "b" / "result.json").read_text())["details"]
    assert res["larger"] is True and res["compression_file"] < 1
    warning = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warning) == 1 and "LARGER than the original float32 parameters" in warning[0]
    file_line = next(line for line in out.splitlines() if line.startswith("model.slim file:"))
    assert "x LARGER;" in file_line and "smaller" not in file_line


def test_sram_budget_checked_on_the_written_model_and_plan_replays(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    out, again = tmp_path / "q", tmp_path / "a"
    common = ["quantize", "slimcnn:lenet5", "--task", "classification", "--data", "digits", "--limit", "64", "--no-onnx"]
    assert main([*common, "--weight-bytes", "0.2x", "--out", str(out), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    (check,) = res["checks"]
    assert res["met"] is True and check["name"] == "weight_bytes" and check["value"] <= check["limit"]
    details = res["details"]
    assert check["value"] == details["weight_bytes"] and check["limit"] == pytest.approx(0.2 * 4 * 61706)
    stored = sum(r["file_codebook_bytes"] + r["file_index_bytes"] + r["file_mask_bytes"] for r in details["layers"])
    assert details["weight_bytes"] == stored + details["float_bytes"] == details["plan"]["stored_bytes"]
    assert main(["apply", str(out), "slimcnn:lenet5", "--no-latency", "--out", str(again)]) == 0
    a = load_model(f"file:{out / 'model.pt'}").model.state_dict()
    b = load_model(f"file:{again / 'model.pt'}").model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    # the replay writes the packed file too (it wrote model.pt only, and counted the decoded float32 weights): the
    # same weights, and its budget judged on the same stored bytes
    c = load_model(f"file:{again / 'model.slim'}").model.state_dict()
    assert c.keys() == a.keys() and all(torch.equal(a[k], c[k]) for k in a)
    replay = json.loads((again / "result.json").read_text())
    assert replay["details"]["slim"]["decodes_to_model_pt"] is True
    assert replay["after"]["cost"]["weight_bytes"] == details["weight_bytes"]
    # infeasible: a budget below the float32 biases alone; the closest model is written, exit code 1
    assert main([*common, "--weight-bytes", "100B", "--out", str(tmp_path / "tiny")]) == 1
    assert "NOT met" in capsys.readouterr().err
    assert json.loads((tmp_path / "tiny" / "result.json").read_text())["met"] is False


def test_a_drop_without_centroid_training_names_finetune_steps(trained_lenet: Path, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["quantize", f"file:{trained_lenet}", "--bits", "1", "--data", "digits", "--no-onnx",
               "--out", str(tmp_path / "q"), "--json"])
    captured = capsys.readouterr()
    assert rc == 0
    drop = json.loads(captured.out)["details"]["drop"]
    assert drop > 1.0, "the test needs bits that lose accuracy"
    assert f"top1 dropped {drop:.3g} at these bits; --finetune-steps N trains the centroids" in captured.err


def test_scale_picks_the_sr_models_factor_in_quantize_and_export(tmp_path: Path) -> None:
    """`quantize slimcnn:fsrcnn --scale 3` was "No such option: --scale": only the x2 FSRCNN could be quantised or
    exported from the zoo."""
    for argv in (["quantize", "slimcnn:fsrcnn", "--bits", "6", "--no-onnx"],
                 ["quantize", "slimcnn:fsrcnn", "--scheme", "int8", "--task", "sr", "--data", "photos", "--limit", "1"],
                 ["export", "slimcnn:fsrcnn", "--format", "onnx", "--runs", "1"]):
        out = tmp_path / "_".join(argv[:3]).replace(":", "")
        assert main([*argv, "--scale", "3", "--out", str(out)]) == 0, argv
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["options"]["scale"] == 3, argv
    model = load_model(f"file:{tmp_path / 'quantize_slimcnnfsrcnn_--bits' / 'model.pt'}").model
    assert model.last_part.stride == (3, 3)  # the x3 transposed conv
    assert main(["quantize", "slimcnn:fsrcnn", "--bits", "6", "--scale", "0", "--out", str(tmp_path / "z")]) == 2


@pytest.mark.parametrize("bits", ["4", "conv1=4"])  # conv1=4: the kernel-pruned conv2 is left unshared
def test_a_kernel_pruned_input_and_the_written_slim_are_counted_as_analyze_counts_them(
        bits: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """quantize of a file:model.slimk counted params and MACs of the dense model on both sides (19.2 M MACs for an
    ESPCN .slimk that `analyze` counts at 8.7 M, and for the model.slim written from it); now both match `analyze`
    of the file given and of the file written (weight bytes: quantize's own base stays float32, as --weight-bytes),
    also when the .slim stores a kernel-pruned layer it does not share without its removed kernels."""
    made = tmp_path / "k"
    assert main(["prune", "slimcnn:lenet5", "--granularity", "kernel", "--ratio", "0.6", "--no-latency",
                 "--out", str(made)]) == 0
    out = tmp_path / "q"
    assert main(["quantize", f"file:{made / 'model.slimk'}", "--bits", bits, "--no-onnx", "--out", str(out)]) == 0
    capsys.readouterr()
    res = json.loads((out / "result.json").read_text())
    analyzed = {}
    for name, path in (("in", made / "model.slimk"), ("out", out / "model.slim")):
        assert main(["analyze", f"file:{path}", "--json", "--no-latency"]) == 0
        a = json.loads(capsys.readouterr().out)
        analyzed[name] = (a["params"], a["macs"], a["weight_bytes"])
    before, after = res["before"]["cost"], res["after"]["cost"]
    assert (before["params"], before["macs"]) == analyzed["in"][:2]
    assert (after["params"], after["macs"], after["weight_bytes"]) == analyzed["out"]
    assert after["macs"] < 416520  # the removed kernels are gone (LeNet-5: 416,520 MACs dense)
