"""int8 float fallback: per-layer sensitivity on the task's data, the most sensitive layers kept in float."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest

from slimcnn.cli import main
from slimcnn.errors import ConfigError
from slimcnn.export import Int8Spec


def _float_weight_layers(path: Path) -> set[str]:
    from slimcnn.export._int8 import scope_fqn

    proto = onnx.load(str(path))
    producers = {o: n.op_type for n in proto.graph.node for o in n.output}
    return {scope_fqn(n.name) for n in proto.graph.node if n.op_type in ("Conv", "Gemm")
            and producers.get(n.input[1]) != "DequantizeLinear"}


def _export(tmp_path: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[Path, dict]:  # type: ignore[type-arg]
    out = tmp_path / "i8"
    rc = main(["export", "slimcnn:lenet5", "--format", "onnx-int8", "--task", "classification", "--data", "digits",
               "--calibration-samples", "64", "--limit", "300", "--sweep-limit", "150", "--runs", "3", *extra,
               "--out", str(out), "--json"])
    assert rc == 0
    return out, json.loads(capsys.readouterr().out)


def test_auto_keeps_the_top_of_the_sensitivity_order(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, res = _export(tmp_path, capsys, "--float-fallback", "auto", "--max-drop", "0")
    fb = res["details"]["float_fallback"]
    order = [r["layer"] for r in fb["sensitivity"]]
    assert sorted(order) == ["conv1", "conv2", "fc1", "fc2", "fc3"]
    errs = [r["output_error"] for r in fb["sensitivity"]]
    assert errs == sorted(errs, reverse=True) and all(e > 0 for e in errs)
    k = len(fb["chosen"])
    assert fb["chosen"] == order[:k] and _float_weight_layers(out / "model.onnx") == set(order[:k])
    # greedy: the last step is on the final data; every step before it missed the target on its data
    last = fb["steps"][-1]
    assert last["on"] == "final" and last["float_layers"] == k and last["n"] == 300
    # the reported drop is re-measured on the written ONNX and equals the greedy's verified drop
    assert fb["final_drop"] == pytest.approx(res["before"]["score"]["value"] - res["after"]["score"]["value"])
    assert fb["final_drop"] == pytest.approx(fb["verified_drop"]) and fb["final_met"] == fb["met"]
    assert fb["met"] == (fb["final_drop"] <= 0) and (fb["met"] or k == 5)
    assert main(["evaluate", f"file:{out / 'model.onnx'}", "--task", "classification", "--data", "digits",
                 "--limit", "300", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["value"] == res["after"]["score"]["value"]


def test_fixed_count_keeps_the_n_most_sensitive(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, res = _export(tmp_path, capsys, "--float-fallback", "2", "--float-layers", "conv1")
    fb = res["details"]["float_fallback"]
    order = [r["layer"] for r in fb["sensitivity"]]
    assert "conv1" not in order and fb["forced_float"] == ["conv1"]  # --float-layers are float anyway
    assert fb["chosen"] == order[:2] and _float_weight_layers(out / "model.onnx") == {"conv1", *order[:2]}
    assert "float fallback (2): kept in float" in "\n".join(res["notes"])


@pytest.mark.parametrize(
    ("args", "msg"),
    [
        (["--float-fallback", "auto"], "--float-fallback auto needs --max-drop"),
        (["--float-fallback", "some"], "--float-fallback must be 'auto' or a number"),
        (["--float-fallback", "2", "--max-drop", "0.5"], "--max-drop is the target of --float-fallback auto"),
        (["--float-fallback", "auto", "--max-drop", "-1"], "--max-drop -1: a drop must be >= 0"),
        (["--float-fallback", "auto", "--max-drop", "0.5", "--sweep-limit", "0"], "--sweep-limit must be"),
    ],
)
def test_bad_fallback_flags_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], msg: str) -> None:
    out = tmp_path / "o"
    rc = main(["export", "slimcnn:lenet5", "--format", "onnx-int8", "--task", "classification", "--data", "digits",
               *args, "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and msg in err, err
    assert not out.exists()


def test_fallback_flag_on_another_format_is_refused(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    rc = main(["export", "slimcnn:lenet5", "--format", "onnx", "--float-fallback", "auto", "--out", str(tmp_path / "o")])
    assert rc == 2 and "apply to --format onnx-int8" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="--float-fallback"):
        Int8Spec(float_fallback="0")
