"""report.md / report.html from a run folder alone: written by every run, re-rendered by `slimcnn report DIR`."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from slimcnn.cli import main
from slimcnn.report import render_report

PNG = b"\x89PNG\r\n\x1a\n"


def _sections(md: str) -> list[str]:
    return re.findall(r"^## (.+)$", md, flags=re.M)


def _images(page: str) -> list[str]:
    return re.findall(r"<img\b[^>]*\bsrc=\"([^\"]*)\"", page)


def _artifacts(folder: Path) -> dict[str, dict[str, object]]:
    return {a["path"]: a for a in json.loads((folder / "result.json").read_text())["artifacts"]}


def test_every_run_writes_its_report(prune_run: Path) -> None:
    md = (prune_run / "report.md").read_text()
    assert md.startswith("# slimcnn prune: slimcnn:tiny_cnn\n") and "no budget given" in md
    assert _sections(md) == ["Before and after", "Per layer", "Notes", "Files", "Environment"]  # Notes: untrained
    assert "| MACs | 7,651,648 (7.65M) | 4,457,702 (4.46M) | 0.583x |" in md
    assert "| `stem` | channels | 16 | 12 | 0.75x |" in md  # tiny_cnn's stem keeps 12 of 16 (result.json has the 16)
    assert "![layers.png](layers.png)" in md and (prune_run / "layers.png").read_bytes().startswith(PNG)
    arts = _artifacts(prune_run)
    assert {"layers.png", "model.pt", "model.onnx", "plan.json"} <= arts.keys()  # the figures are listed...
    assert not {"report.md", "report.html", "result.json"} & arts.keys()  # ...the report, a view like result.json, not
    data = (prune_run / "layers.png").read_bytes()
    assert arts["layers.png"] == {"path": "layers.png", "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    notes = json.loads((prune_run / "result.json").read_text())["notes"]
    assert not any("not rendered" in n for n in notes)
    assert not list(prune_run.glob(".*"))  # no temp files left by the atomic writes


@pytest.mark.parametrize("run", ["prune_run", "search_run"])
def test_html_is_self_contained_with_every_figure_embedded(run: str, request: pytest.FixtureRequest) -> None:
    folder: Path = request.getfixturevalue(run)
    page, md = (folder / "report.html").read_text(), (folder / "report.md").read_text()
    srcs = _images(page)
    assert srcs and len(srcs) == md.count("![")  # one embedded image per figure of the Markdown
    for src, name in zip(srcs, re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md), strict=True):
        assert src.startswith("data:image/png;base64,")
        png = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert png.startswith(PNG) and png == (folder / name).read_bytes()
    assert not re.search(r"(?:src|href)=\"(?!data:)", page)  # nothing fetched: no links to files, hosts or CSS/JS
    assert "http://" not in page and "https://" not in page and "<link" not in page


def test_search_report_targets_pareto_and_sensitivity(search_run: Path) -> None:
    md = (search_run / "report.md").read_text()
    assert md.startswith("# slimcnn search: slimcnn:lenet5\n")
    assert "task **classification**" in md and "`digits:val` (n=360)" in md and "**every target met**" in md
    assert _sections(md) == ["Targets vs achieved", "Before and after", "Per layer", "Search: Pareto front",
                             "Sensitivity", "Notes", "Files", "Environment"]  # Notes: untrained
    res = json.loads((search_run / "result.json").read_text())
    checks = {c["name"]: c for c in res["checks"]}
    macs = next(line for line in md.splitlines() if line.startswith("| MACs | `0.9x` |"))
    assert "374,868 (375k) = 0.9x" in macs and "✓ met" in macs and "to spare" in macs
    assert f"= {checks['macs']['value'] / res['before']['cost']['macs']:.3g}x" in macs
    drop = next(line for line in md.splitlines() if line.startswith("| max drop | `5` |"))
    assert f"{checks['max_drop']['value']:.4g} top1" in drop and "✓ met" in drop
    assert "drop on digits:val, first 100 images" in md  # the tried points carry their conditions
    assert re.search(r"\d+ candidates measured, \d+ within every budget\.", md)
    arts = _artifacts(search_run)
    for name in ("pareto.png", "sensitivity.png", "layers.png"):  # re-drawn by the report before they were listed
        assert arts[name]["sha256"] == hashlib.sha256((search_run / name).read_bytes()).hexdigest()


def test_cli_report_rerenders_in_place_identically(search_run: Path, copy_run: Callable[[Path], Path],
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    folder = copy_run(search_run)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    (folder / "report.md").unlink()
    (folder / "pareto.png").write_bytes(b"stale")
    assert main(["report", str(folder), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out == {"markdown": str(folder / "report.md"), "html": str(folder / "report.html")}
    after = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert after == before  # deterministic: the same run renders byte-identical files; result.json untouched


def test_cli_report_keeps_artifact_hashes_true(search_run: Path, copy_run: Callable[[Path], Path]) -> None:
    folder = copy_run(search_run)
    res = json.loads((folder / "result.json").read_text())
    res["artifacts"] = [a for a in res["artifacts"] if a["path"] != "layers.png"]
    (folder / "result.json").write_text(json.dumps(res))
    (folder / "layers.png").unlink()
    assert main(["report", str(folder)]) == 0
    data = (folder / "layers.png").read_bytes()
    assert _artifacts(folder)["layers.png"]["sha256"] == hashlib.sha256(data).hexdigest()


def test_cli_report_without_result_json_is_one_line_exit_2(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "x").mkdir()
    for target in (tmp_path / "x", tmp_path / "missing"):
        assert main(["report", str(target)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1
        assert ("holds no result.json" in err) if target.exists() else ("is not a folder" in err)
    assert not list((tmp_path / "x").iterdir())


def test_a_missed_target_reads_over_by_a_positive_share(search_run: Path, copy_run: Callable[[Path], Path]) -> None:
    """The margin read "over by 10,247 B (10 KiB) (-25.0% of the limit)": a minus after "over by"."""
    folder = copy_run(search_run)
    res = json.loads((folder / "result.json").read_text())
    macs = next(c for c in res["checks"] if c["name"] == "macs")
    macs.update(value=macs["limit"] * 1.25, met=False)
    render_report(folder, result=res)
    row = next(line for line in (folder / "report.md").read_text().splitlines() if line.startswith("| MACs |"))
    assert "over by" in row and "(25.0% of the limit)" in row and "-25" not in row and "✗ NOT met" in row


def test_stage_by_stage_table(prune_run: Path, copy_run: Callable[[Path], Path]) -> None:
    folder = copy_run(prune_run)
    res = json.loads((folder / "result.json").read_text())
    cost = res["before"]["cost"]
    half = {**cost, "macs": cost["macs"] // 2, "params": cost["params"] // 2}
    quarter = {**half, "weight_bytes": cost["weight_bytes"] // 4}
    score = {"metric": "top1", "value": 90.0, "higher_is_better": True, "n": 360, "dataset": "digits:val"}
    res["before"]["score"] = {**score, "value": 91.0}
    res["details"]["stages"] = [  # the compress shape (score/cost/drop) and the brief's (after: {score, cost})
        {"name": "prune", "targets": {"macs": "0.5x"}, "score": score, "cost": half, "drop": 1.0, "met": True,
         "steps": 1},
        {"name": "kmeans", "after": {"score": {**score, "value": 89.5}, "cost": quarter},
         "steps": [{"transform": "kmeans"}], "met": False},
    ]
    render_report(folder, result=res)
    md = (folder / "report.md").read_text()
    assert "## Stage by stage" in md and "against the ORIGINAL" in md
    rows = [line for line in md.splitlines() if line.startswith(("| 1 |", "| 2 |"))]
    assert len(rows) == 2
    assert "**prune** | MACs 0.5x | 90.00 | 1 |" in rows[0] and "0.5x (3.83M)" in rows[0] and "✓" in rows[0]
    assert "**kmeans** | – | 89.50 | 1.5 |" in rows[1] and "0.25x" in rows[1] and "✗ | 1 |" in rows[1]
    assert "recovery" not in md
    res["details"]["stages"][0]["recovered"] = {"steps": 300, "recovery": "plain", "score_before": 61.25}
    render_report(folder, result=res)
    rows = [line for line in (folder / "report.md").read_text().splitlines() if line.startswith(("| 1 |", "| 2 |"))]
    assert rows[0].endswith("| 300 steps plain (from 61.25) |") and rows[1].endswith("| – |")
    # a compress stage judges its points on its own targets and share of the drop: not "within every budget"
    point = {"costs": {"macs": half["macs"]}, "metric": 90.0, "feasible": True, "pareto": True}
    (folder / "pareto.json").write_text(json.dumps({"points": [
        {**point, "stage": 0, "drop": 1.0}, {**point, "stage": 0, "drop": 3.0, "feasible": False},
        {**point, "stage": 1, "drop": 1.5}]}))
    render_report(folder, result=res)
    assert "3 candidates measured over 2 stages, 2 within their stage's targets." in (folder / "report.md").read_text()


def test_render_is_fast_for_a_small_run(search_run: Path, copy_run: Callable[[Path], Path]) -> None:
    folder = copy_run(search_run)
    render_report(folder)  # warm: matplotlib imported once per process
    t0 = time.perf_counter()
    render_report(folder)
    assert time.perf_counter() - t0 < 4.0  # ~0.8 s on a 2-core CPU shared with other jobs


def test_a_report_failure_never_loses_the_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import slimcnn.report
    from slimcnn.run import Plan, RunResult, read_result, write_run

    def broken(*args: object, **kwargs: object) -> None:
        raise ValueError("boom")

    monkeypatch.setattr(slimcnn.report, "render_report", broken)
    out = write_run(tmp_path / "r", RunResult("custom", "slimcnn:tiny_cnn", plan=Plan(source="slimcnn:tiny_cnn")))
    res = read_result(out)
    assert [a["path"] for a in res["artifacts"]] == ["plan.json"]
    assert any("report.md not rendered (ValueError: boom)" in n and "slimcnn report" in n for n in res["notes"])


def test_write_run_reports_a_result_without_measurements(tmp_path: Path) -> None:
    from slimcnn.run import Plan, RunResult, write_run

    out = write_run(tmp_path / "r", RunResult("custom", "slimcnn:tiny_cnn", plan=Plan(source="slimcnn:tiny_cnn")))
    md = (out / "report.md").read_text()
    assert md.startswith("# slimcnn custom: slimcnn:tiny_cnn") and "## Environment" in md
    assert _images((out / "report.html").read_text()) == []


def test_targets_show_the_latency_target_as_given_not_the_timing_switch(tmp_path: Path) -> None:
    from slimcnn.report._data import RunData
    from slimcnn.report._sections import targets

    latency = {"median_ms": 2.0, "p10_ms": 1.9, "p90_ms": 2.1, "runs": 20, "runtime": "onnxruntime", "threads": 2}
    result = {"before": {"cost": {"macs": 100, "params": 10, "latency": latency}},
              "checks": [{"name": "latency_ms", "value": 1.3, "limit": 1.4, "met": True}],
              "options": {"latency": True, "latency_target": "0.7x"}}  # prune: --latency 0.7x, timing on
    section = targets(RunData(tmp_path, result))
    assert section is not None
    (row,) = section.blocks[1].rows  # type: ignore[union-attr]
    assert row[1] == "`0.7x`" and row[-1] == "✓ met"


def test_targets_say_when_no_quality_target_judged_the_drop(tmp_path: Path) -> None:
    from slimcnn.report._data import RunData
    from slimcnn.report._sections import targets

    score = {"metric": "top1", "higher_is_better": True}
    result = {"before": {"score": score | {"value": 83.2}, "cost": {"macs": 100}},
              "after": {"score": score | {"value": 10.45}, "cost": {"macs": 48}},
              "checks": [{"name": "macs", "value": 48, "limit": 50, "met": True}], "options": {"macs": "0.5x"}}
    section = targets(RunData(tmp_path, result))
    assert section is not None and "No quality target was given" in section.blocks[0]
    assert "top1 drop of 72.75" in section.blocks[0]  # type: ignore[operator]
    result["checks"].append({"name": "max_drop", "value": 0.5, "limit": 1.0, "met": True})
    section = targets(RunData(tmp_path, result))
    assert section is not None and "No quality target" not in section.blocks[0]  # type: ignore[operator]
