"""``slimcnn decompose``: writes a loadable, faster-or-equal model and a per-layer report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from slimcnn.cli import main
from slimcnn.models import load_model


def test_decompose_all_writes_model_and_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "dec"
    rc = main(["decompose", "slimcnn:resnet20", "--all", "--rank-multiple", "4", "--confirm-runs", "3", "--e2e-runs", "3",
               "--threads", "1", "--exclude", "layer2.*", "--exclude", "layer3.*", "--out", str(out), "--json"])
    assert rc == 0
    full = json.loads(capsys.readouterr().out)
    report = full["details"]
    assert report["replaced"], "with --all every shrinking layer is replaced"
    assert not any(name.startswith(("layer2.", "layer3.")) for name in report["replaced"])  # --exclude honoured
    assert full["after"]["cost"]["macs"] < full["before"]["cost"]["macs"]
    assert all(r["method"] in ("svd", "tucker2", "-") for r in report["layers"])
    timed = [r for r in report["layers"] if r["replaced"]]
    assert all(r["ms_before"] > 0 and r["ms_after"] > 0 for r in timed), "--all still times each replaced layer"
    slower = {r["layer"] for r in timed if r["ms_after"] >= r["ms_before"]}
    assert set(report["slower_layers"]) == slower
    assert report["threads"] == 1 and full["after"]["cost"]["latency"]["n"] == 3 and report["speedup"] > 0
    assert (out / "model.onnx").exists()
    assert json.loads((out / "result.json").read_text())["details"]["replaced"] == report["replaced"]
    steps = json.loads((out / "plan.json").read_text())["steps"]
    assert steps[0]["transform"] == "lowrank" and set(steps[0]["layers"]) == set(report["replaced"])
    from slimcnn.models import load_model

    reloaded = load_model(f"file:{out / 'model.pt'}")
    assert reloaded.model(torch.randn(1, 3, 32, 32)).shape == (1, 10)


def test_decompose_rejects_bad_freeze(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    rc = main(["decompose", "slimcnn:resnet20", "--freeze", "sometimes", "--out", str(tmp_path / "x")])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--freeze" in err[0]


_FAST = ["--scan-runs", "2", "--confirm-runs", "4", "--e2e-runs", "4", "--threads", "1"]


def test_nothing_replaced_claims_no_speedup(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import slimcnn.measure

    timed: list[tuple[str, ...]] = []
    real = slimcnn.measure.compare_latency

    def spy(models, *args, **kwargs):  # type: ignore[no-untyped-def]
        timed.append(tuple(models))
        return real(models, *args, **kwargs)

    monkeypatch.setattr(slimcnn.measure, "compare_latency", spy)
    out = tmp_path / "dec"
    rc = main(["decompose", "slimcnn:lenet5", *_FAST, "--min-speedup", "100", "--out", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "no layer was replaced: the model is unchanged" in text and "x side by side" not in text
    full = json.loads((out / "result.json").read_text())
    report = full["details"]
    assert report["replaced"] == [] and report["unchanged"] is True
    assert report["speedup"] == 1.0 and report["slower"] is False
    assert full["before"]["cost"]["latency"] is None and full["after"]["cost"]["latency"] is None
    assert json.loads((out / "plan.json").read_text())["steps"] == []
    assert ("before", "after") not in timed  # the unchanged model is not re-timed end to end


def test_a_slower_decomposed_model_is_flagged(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import slimcnn.measure
    from slimcnn.types import LatencyStats

    def second_is_slower(models, example, **kwargs):  # type: ignore[no-untyped-def]
        ms = dict(zip(models, (1.0, 1.12), strict=False))
        return {k: LatencyStats(ms[k], ms[k], ms[k], 4, "onnxruntime", 1, "cpu", 1, tuple(example.shape))
                for k in models}

    monkeypatch.setattr(slimcnn.measure, "compare_latency", second_is_slower)
    out = tmp_path / "dec"
    rc = main(["decompose", "slimcnn:lenet5", *_FAST, "--all", "--out", str(out), "--json"])
    assert rc == 0
    stdout, err = capsys.readouterr()
    report = json.loads(stdout)["details"]
    assert report["replaced"] and report["slower"] is True and report["speedup"] == pytest.approx(1 / 1.12)
    warning = [line for line in err.splitlines() if line.startswith("warning:")]
    assert warning == [line for line in warning if "the decomposed model is SLOWER than the original "
                                                   "(1.00 ms -> 1.12 ms, 0.89x" in line] and len(warning) == 1
    assert json.loads((out / "result.json").read_text())["details"]["slower"] is True


def test_apply_replays_a_decomposition_bit_identically(tmp_path: Path) -> None:
    out, again = tmp_path / "d", tmp_path / "a"
    assert main(["decompose", "slimcnn:lenet5", *_FAST, "--all", "--out", str(out)]) == 0
    assert main(["apply", str(out), "slimcnn:lenet5", "--no-latency", "--out", str(again)]) == 0
    a = load_model(f"file:{out / 'model.pt'}").model.state_dict()
    b = load_model(f"file:{again / 'model.pt'}").model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_drop_without_fine_tuning_names_finetune_steps(trained_lenet: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """A raw decomposition lost 27.7 points of my ResNet-20 and the output did not say how to recover them."""
    rc = main(["decompose", f"file:{trained_lenet}", "--all", "--ratio", "8", "--confirm-runs", "3", "--e2e-runs", "3",
               "--threads", "1", "--data", "digits", "--out", str(tmp_path / "d")])
    err = capsys.readouterr().err
    assert rc == 0
    res = json.loads((tmp_path / "d" / "result.json").read_text())
    drop = res["before"]["score"]["value"] - res["after"]["score"]["value"]
    assert drop > 1.0, "the test needs a decomposition that loses accuracy"
    assert f"top1 dropped {drop:.3g} without fine-tuning; the same command with --finetune-steps N" in err


def test_a_kernel_pruned_input_keeps_its_removed_kernels_and_its_format(trained_lenet: Path, tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """`decompose file:model.slimk --finetune-steps N` trained the removed kernels of the layers it kept back (no
    promise held them), counted the input dense and wrote a plain model.pt: the layers it keeps hold their zeros
    now, and before / after are what `analyze` gives for the .slimk given and the .slimk written."""
    made = tmp_path / "k"
    assert main(["prune", f"file:{trained_lenet}", "--granularity", "kernel", "--ratio", "0.6", "--no-latency",
                 "--out", str(made)]) == 0
    out = tmp_path / "d"
    rc = main(["decompose", f"file:{made / 'model.slimk'}", "--all", "--exclude", "conv2", "--confirm-runs", "2",
               "--e2e-runs", "2", "--task", "classification", "--data", "digits", "--finetune-steps", "10",
               "--lr", "0.05", "--limit", "50", "--out", str(out)])
    assert rc == 0
    capsys.readouterr()
    res = json.loads((out / "result.json").read_text())
    assert "conv2" not in res["details"]["replaced"] and res["details"]["slimk"]["decodes_to_model_pt"]

    def gone(path: Path) -> float:
        w = load_model(f"file:{path}").model.conv2.weight.detach()
        return float((w.abs().amax(dim=(2, 3)) == 0).float().mean())

    assert gone(out / "model.pt") == gone(made / "model.slimk") > 0.3
    for when, path in (("before", made / "model.slimk"), ("after", out / "model.slimk")):
        assert main(["analyze", f"file:{path}", "--json", "--no-latency"]) == 0
        a = json.loads(capsys.readouterr().out)
        c = res[when]["cost"]
        assert (c["params"], c["macs"], c["weight_bytes"]) == (a["params"], a["macs"], a["weight_bytes"]), when
