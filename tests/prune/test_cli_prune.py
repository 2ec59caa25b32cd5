"""`slimcnn prune` / `slimcnn apply` end to end on a tiny zoo model."""

from __future__ import annotations

import json

import pytest

from slimcnn.cli import main


def test_prune_then_apply(tmp_path, capsys) -> None:
    out = tmp_path / "p"
    rc = main(["prune", "slimcnn:tiny_cnn", "--criterion", "l2", "--macs", "0.5x", "--round-to", "2",
               "--no-latency", "--out", str(out), "--json"])
    assert rc == 0
    result = json.loads(capsys.readouterr().out)
    assert result["after"]["cost"]["macs"] < 0.55 * result["before"]["cost"]["macs"]
    for name in ("model.pt", "model.onnx", "plan.json", "result.json"):
        assert (out / name).stat().st_size > 0
    rc = main(["apply", str(out / "plan.json"), "slimcnn:tiny_cnn", "--no-latency", "--out", str(tmp_path / "a"),
               "--json"])
    assert rc == 0
    again = json.loads(capsys.readouterr().out)
    assert again["after"]["cost"]["params"] == result["after"]["cost"]["params"]
    # bit-identical replay: every artifact but plan.json has the same sha256
    shas = {a["path"]: a["sha256"] for a in result["artifacts"]}
    assert {a["path"]: a["sha256"] for a in again["artifacts"]} == shas


def test_prune_errors_are_one_line(tmp_path, capsys) -> None:
    assert main(["prune", "slimcnn:tiny_cnn", "--out", str(tmp_path / "x")]) == 2
    assert "exactly one of --ratio" in capsys.readouterr().err
    assert main(["prune", "slimcnn:tiny_cnn", "--criterion", "l3", "--ratio", "0.5", "--out", str(tmp_path / "y")]) == 2
    assert "Did you mean" in capsys.readouterr().err


def test_compensated_plan_reapplied_with_the_same_data(tmp_path, capsys) -> None:
    import torch

    from slimcnn.models import load_model, save_model

    src = tmp_path / "lenet5.pt"
    save_model(load_model("slimcnn:lenet5"), src)  # one fixed set of weights for both runs
    model = f"file:{src}"
    out = tmp_path / "p"
    common = ["--task", "classification", "--data", "digits"]
    assert main(["prune", model, "--ratio", "0.5", "--compensate", "mean", *common, "--no-latency",
                 "--out", str(out)]) == 0
    assert json.loads((out / "plan.json").read_text())["steps"][0]["params"]["options"]["compensate"] == "mean"
    assert main(["apply", str(out / "plan.json"), model, "--no-latency", "--out", str(tmp_path / "x")]) == 2
    assert "compensation (--compensate mean)" in capsys.readouterr().err
    assert main(["apply", str(out / "plan.json"), model, *common, "--no-latency",
                 "--out", str(tmp_path / "a")]) == 0
    a = load_model(f"file:{out / 'model.pt'}").model.eval()
    b = load_model(f"file:{tmp_path / 'a' / 'model.pt'}").model.eval()
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x))


def test_odd_widths_get_a_round_to_hint_and_auto_rounds_to_the_ort_block(tmp_path, capsys, monkeypatch) -> None:
    import slimcnn.measure

    monkeypatch.setattr(slimcnn.measure, "ort_channel_block", lambda: 8)  # an AVX2 machine, whatever runs the test
    assert main(["prune", "slimcnn:resnet20", "--ratio", "0.3", "--no-latency", "--out", str(tmp_path / "a")]) == 0
    err = capsys.readouterr().err
    assert "not a multiple of 8" in err and "--round-to auto" in err
    assert main(["prune", "slimcnn:resnet20", "--ratio", "0.3", "--round-to", "auto", "--no-latency",
                 "--out", str(tmp_path / "b")]) == 0
    assert "--round-to auto" not in capsys.readouterr().err
    plan = json.loads((tmp_path / "b" / "plan.json").read_text())["steps"][0]["params"]
    assert all(len(kept) % 8 == 0 for kept in plan["layers"].values() if len(kept) >= 8)
    for bad in ("0", "eight"):
        assert main(["prune", "slimcnn:resnet20", "--ratio", "0.3", "--round-to", bad, "--out", str(tmp_path / "c")]) == 2
        assert "--round-to" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


def test_ort_channel_block_follows_the_cpu_flags(monkeypatch) -> None:
    import builtins
    import io

    from slimcnn.measure import ort_channel_block

    real_open = builtins.open
    for flags, block in (("fpu avx2 avx512f", 16), ("fpu sse4_2 avx2", 8), ("fpu neon", 1)):
        monkeypatch.setattr(builtins, "open", lambda path, *a, flags=flags, **k: io.StringIO(f"flags\t: {flags}\n")
                            if path == "/proc/cpuinfo" else real_open(path, *a, **k))
        assert ort_channel_block() == block


def test_unreachable_macs_target_saves_the_closest_model(tmp_path, capsys) -> None:
    out = tmp_path / "p"
    rc = main(["prune", "slimcnn:tiny_cnn", "--macs", "0.1x", "--exclude", "stem*", "--exclude", "down*",
               "--no-latency", "--out", str(out), "--json"])
    assert rc == 1
    result = json.loads(capsys.readouterr().out)
    assert result["details"]["macs_target_met"] is False and result["details"]["macs_reached"] < 1.0
    assert (out / "model.pt").exists() and (out / "plan.json").exists()
    (check,) = result["checks"]  # the written model's MACs against the target: the run's verdict
    assert result["met"] is False and check["name"] == "macs" and check["value"] == result["after"]["cost"]["macs"]
    assert check["limit"] == pytest.approx(0.1 * result["before"]["cost"]["macs"]) and not check["met"]
    assert main(["prune", "slimcnn:tiny_cnn", "--ratio", "0.3", "--no-latency", "--out", str(tmp_path / "r"),
                 "--json"]) == 0
    ratio_only = json.loads(capsys.readouterr().out)
    assert ratio_only["met"] is None and ratio_only["checks"] == []  # no target given: nothing to meet


def test_prune_names_the_fine_tune_command_when_the_score_drops(tmp_path, capsys, trained_lenet) -> None:
    import shlex

    out = tmp_path / "p"
    data = ["--task", "classification", "--data", "digits", "--limit", "120"]
    assert main(["prune", f"file:{trained_lenet}", "--ratio", "0.7", *data, "--no-latency", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "dropped" in err and "without fine-tuning" in err
    command = shlex.split(err.split("`")[1])  # the command the note names runs as written, N and DIR filled in
    assert command[:2] == ["slimcnn", "train"]
    command = [a.replace("DIR", str(tmp_path / "ft")) for a in command[1:]]
    command[command.index("N")] = "3"
    assert main([*command, "--limit", "120"]) == 0
    assert (tmp_path / "ft" / "model.pt").is_file()


def test_fine_tune_hint_only_past_one_percent(tmp_path) -> None:
    from types import SimpleNamespace

    from slimcnn.cli.prune import _finetune_hint
    from slimcnn.types import Score

    def hint(before: float, after: float, higher_is_better: bool = True) -> str | None:
        scores = [SimpleNamespace(score=Score("m", v, higher_is_better)) for v in (before, after)]
        return _finetune_hint(SimpleNamespace(before=scores[0], after=scores[1]), tmp_path, "sr", "Set5")

    assert hint(33.0, 32.8) is None  # 0.6 %
    assert "dropped 0.5" in hint(33.0, 32.5)
    assert hint(1.0, 1.005, higher_is_better=False) is None
    assert hint(1.0, 1.1, higher_is_better=False) is not None
    assert hint(83.2, 84.0) is None
    assert hint(0.0, 0.0) is None  # an untrained detector: "dropped 0 ... recover it" was printed


@pytest.mark.parametrize("command", [["prune", "slimcnn:tiny_cnn", "--ratio", "0.3", "--no-latency"],
                                     ["decompose", "slimcnn:tiny_cnn"]])
def test_an_exclude_pattern_that_matches_no_layer_is_refused(tmp_path, capsys, command) -> None:
    """`--exclude 'layer9.*'` (a typo) protected nothing and the run pruned every layer, silently."""
    out = tmp_path / "x"
    assert main([*command, "--exclude", "nosuch*", "--out", str(out)]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and "--exclude 'nosuch*' matches no layer of the model" in err[0]
    assert not out.exists()


@pytest.mark.parametrize("kind", ["slimk", "slim", "slim-huffman"])
def test_pruning_a_compressed_input_counts_and_writes_it_as_its_file_stores_it(kind: str, trained_lenet, tmp_path,
                                                                               capsys) -> None:
    """`prune file:model.slimk` (or .slim) counted its input dense and float32 and wrote a plain model.pt: before
    and after are now what `analyze` gives for the file given and the file of the same format written (a .slim with
    Huffman-coded indices is written Huffman-coded again; it was counted and written with fixed-width ones)."""
    made = tmp_path / "in"
    fmt = kind.removesuffix("-huffman")
    make = {"slimk": ["prune", "slimcnn:lenet5", "--granularity", "kernel", "--ratio", "0.6", "--no-latency"],
            "slim": ["quantize", "slimcnn:lenet5", "--bits", "conv*=4,fc*=3", "--prune", "conv*=3,fc*=5", "--no-onnx"],
            # trained weights: their centroids are not used equally often, so Huffman codes are shorter
            "slim-huffman": ["quantize", f"file:{trained_lenet}", "--bits", "3", "--huffman", "--no-onnx"]}[kind]
    assert main([*make, "--out", str(made)]) == 0
    out = tmp_path / "p"
    assert main(["prune", f"file:{made / f'model.{fmt}'}", "--ratio", "0.25", "--no-latency", "--out", str(out)]) == 0
    capsys.readouterr()
    res = json.loads((out / "result.json").read_text())

    def analyzed(path):
        assert main(["analyze", f"file:{path}", "--json", "--no-latency"]) == 0
        a = json.loads(capsys.readouterr().out)
        return a["params"], a["macs"], a["weight_bytes"]

    def cost(when):
        c = res[when]["cost"]
        return c["params"], c["macs"], c["weight_bytes"]

    assert cost("before") == analyzed(made / f"model.{fmt}")
    assert cost("after") == analyzed(out / f"model.{fmt}") and cost("after")[1] < cost("before")[1]
    assert res["details"][fmt]["decodes_to_model_pt"]
    if kind == "slim-huffman":
        from slimcnn.quantize import read_packed

        for path in (made, out):
            tensors = read_packed(path / "model.slim").header["tensors"].values()
            assert "huffman" in {e["indices"]["coding"] for e in tensors if e["kind"] == "kmeans"}
    again = tmp_path / "a"  # apply of the plan onto the same file writes the same file
    assert main(["apply", str(out / "plan.json"), f"file:{made / f'model.{fmt}'}", "--no-latency",
                 "--out", str(again)]) == 0
    assert (again / f"model.{fmt}").read_bytes() == (out / f"model.{fmt}").read_bytes()


def test_analyze_of_a_written_model_names_the_runs_own_input(tmp_path, capsys) -> None:
    """model.json keeps the source's input (it sets evaluation preprocessing), so `analyze file:OUT/model.pt` counts
    at 32x32 a model pruned and counted at --input 1x3x48x48: it says so, and --input reproduces result.json."""
    out = tmp_path / "p"
    assert main(["prune", "slimcnn:tiny_cnn", "--ratio", "0.5", "--input", "1x3x48x48", "--no-latency",
                 "--out", str(out), "--json"]) == 0
    after = json.loads(capsys.readouterr().out)["after"]["cost"]
    assert main(["analyze", f"file:{out / 'model.pt'}", "--json", "--no-latency"]) == 0
    own = capsys.readouterr()
    assert "counted it at input 1x3x48x48" in own.err and "pass --input 1x3x48x48" in own.err
    assert json.loads(own.out)["macs"] < after["macs"]
    assert main(["analyze", f"file:{out / 'model.pt'}", "--json", "--no-latency", "--input", "1x3x48x48"]) == 0
    same = capsys.readouterr()
    assert "counted it at input" not in same.err and json.loads(same.out)["macs"] == after["macs"]


@pytest.mark.parametrize("command", [["prune", "slimcnn:tiny_cnn", "--ratio", "0.5", "--no-latency"],
                                     ["quantize", "slimcnn:tiny_cnn", "--bits", "4", "--no-onnx"]])
def test_an_untrained_original_is_said_in_the_result_and_the_report(command, tmp_path) -> None:
    """The 'untrained' note went to stderr only: result.json and the report said "every target met" on a model at
    chance accuracy without a word. Now it is one of the run's notes (once, also where the command kept it itself)
    and the report's verdict says it."""
    out = tmp_path / "run"
    assert main([*command, "--out", str(out)]) == 0
    notes = json.loads((out / "result.json").read_text())["notes"]
    assert sum(n.startswith("untrained") for n in notes) == 1, notes
    assert "the original has untrained (random) weights" in (out / "report.md").read_text()
