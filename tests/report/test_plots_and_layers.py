"""The report's figures on synthetic data: Pareto on ratio axes with budgets, sensitivity heatmap, per-layer rows."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import slimcnn.report.plots as plots
from slimcnn.report._data import layer_rows
from slimcnn.report.plots import plot_layers, plot_pareto, plot_sensitivity, sensitivity_grid


@pytest.fixture
def figures(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    """The figures the plot functions draw, kept open for inspection (the PNG is still written)."""
    kept: list[Any] = []

    def save(fig: Any, plt: Any, path: str | Path) -> Path:
        kept.append(fig)
        fig.savefig(path, format="png")
        return Path(path)

    monkeypatch.setattr(plots, "_save", save)
    yield kept
    import matplotlib.pyplot as plt

    for f in kept:
        plt.close(f)


POINTS = [
    {"costs": {"macs": 800.0, "params": 90.0}, "drop": 0.1, "metric": 90.9, "feasible": True, "pareto": True},
    {"costs": {"macs": 500.0, "params": 60.0}, "drop": 0.8, "metric": 90.2, "feasible": True, "pareto": True},
    {"costs": {"macs": 300.0, "params": 40.0}, "drop": 3.0, "metric": 88.0, "feasible": False, "pareto": False},
]


def test_pareto_is_on_ratio_axes_with_budgets_baseline_and_the_chosen_model(tmp_path: Path,
                                                                             figures: list[Any]) -> None:
    path = plot_pareto(POINTS, tmp_path / "p.png", x=["macs", "params"], metric="top1",
                       chosen={"macs": 480.0, "params": 55.0, "drop": 0.7},
                       baseline={"macs": 1000.0, "params": 100.0}, limits={"macs": 600.0}, max_drop=1.0)
    assert path.read_bytes().startswith(b"\x89PNG")
    (fig,) = figures
    macs_ax, params_ax = fig.axes[:2]
    assert macs_ax.get_xlabel() == "MACs / original" and params_ax.get_xlabel() == "params / original"
    assert macs_ax.get_ylabel().startswith("top1 drop vs original")
    offsets = {c.get_label(): c.get_offsets().tolist() for c in macs_ax.collections if c.get_label()[0] != "_"}
    assert offsets["original"] == [[1.0, 0.0]]
    assert offsets["chosen (final)"] == [[pytest.approx(0.48), pytest.approx(0.7)]]
    assert sorted(x for x, _ in offsets["tried"]) == [pytest.approx(0.5), pytest.approx(0.8)]
    assert offsets["tried (infeasible)"] == [[pytest.approx(0.3), pytest.approx(3.0)]]
    lines = {ln.get_label(): (list(ln.get_xdata()), list(ln.get_ydata())) for ln in macs_ax.lines}
    assert lines["MACs budget"][0] == [0.6, 0.6] and lines["max drop"][1] == [1.0, 1.0]
    assert "MACs budget" not in {ln.get_label() for ln in params_ax.lines}  # a budget only where it is one
    assert "max drop" in {ln.get_label() for ln in params_ax.lines}


def test_pareto_colours_stages_and_keeps_absolute_axes_without_a_baseline(tmp_path: Path,
                                                                          figures: list[Any]) -> None:
    staged = [dict(p, stage=i % 2) for i, p in enumerate(POINTS)]
    plot_pareto(staged, tmp_path / "p.png", x="macs", metric="top1")
    (ax,) = figures[0].axes
    labels = {c.get_label() for c in ax.collections}
    assert {"stage 1", "stage 1 (infeasible)", "stage 2"} <= labels
    assert ax.get_xlabel() == "MACs" and "original" not in labels


def test_sensitivity_heatmap_from_json_or_table(tmp_path: Path, figures: list[Any]) -> None:
    sens = {"metric": "psnr", "baseline": 30.0, "points": [
        {"knob": "conv1", "amount": 0.25, "drop": 0.1}, {"knob": "conv1", "amount": 0.5, "drop": 0.4},
        {"knob": "conv2", "amount": 0.5, "drop": 1.2}]}
    metric, base, knobs, amounts, grid = sensitivity_grid(sens)
    assert (metric, base, knobs, amounts) == ("psnr", 30.0, ["conv1", "conv2"], [0.25, 0.5])
    assert grid[0] == [0.1, 0.4] and math.isnan(grid[1][0]) and grid[1][1] == 1.2
    plot_sensitivity(sens, tmp_path / "s.png")
    ax = figures[0].axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["conv1", "conv2"]
    assert sorted(t.get_text() for t in ax.texts) == ["0.1", "0.4", "1.2"]  # the missing cell stays empty


def _result(steps: list[dict[str, Any]], details: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"plan": {"steps": steps}, "details": details or {}}


def test_layer_rows_per_transform() -> None:
    rows = layer_rows(_result([
        {"transform": "prune_channels", "layers": ["a"], "params": {"layers": {"a": [0, 2, 5]}}},
        {"transform": "prune_channels", "layers": ["a"], "params": {"layers": {"a": [0, 1]}}},  # a later CPO step
        {"transform": "group_kernels", "layers": ["b"], "params": {"groups": {"b": 4}}},
        {"transform": "lowrank", "layers": ["fc"], "params": {"layers": {"fc": {"method": "svd", "rank": 8}}}},
        {"transform": "kmeans", "layers": ["a", "fc", "x[1]"], "params": {"bits": [["*", 4], ["fc", 2], ["x[[]1[]]", 3]]}},
    ], {"layers": [{"layer": "fc", "shape": [120, 400]}]}))
    got = {(r.layer, r.kind): (r.before, r.after, r.at_least) for r in rows}
    assert got == {("a", "channels"): (None, 2, 6), ("b", "groups"): (1, 4, None), ("fc", "rank"): (120, 8, None),
                   ("a", "bits"): (32, 4, None), ("fc", "bits"): (32, 2, None), ("x[1]", "bits"): (32, 3, None)}


def test_layer_rows_show_int8_and_its_float_fallback() -> None:
    rows = layer_rows(_result([{"transform": "int8", "layers": ["conv2", "fc"], "params": {"float_layers": ["conv1"]}}],
                              {}))
    got = {(r.layer, r.kind): (r.before, r.after, r.note) for r in rows}
    assert got == {("conv2", "bits"): (32, 8, ""), ("fc", "bits"): (32, 8, ""), ("conv1", "bits"): (32, 32, "float fallback")}


def test_layer_rows_use_recorded_widths_and_quantize_rows() -> None:
    res = _result([{"transform": "prune_channels", "params": {"layers": {"conv": [1, 3]}}},
                   {"transform": "kmeans", "layers": ["conv"], "params": {"bits": [["*", 8]]}}],
                  {"layers": [{"name": "conv", "shape": [16, 3, 3, 3], "bits": 5}]})
    got = {(r.layer, r.kind): (r.before, r.after, r.at_least) for r in layer_rows(res)}
    assert got == {("conv", "channels"): (16, 2, None), ("conv", "bits"): (32, 5, None)}
    res = _result([{"transform": "prune_channels", "params": {"layers": {"conv": [1, 3]}}}])
    res["before"] = {"cost": {"layers": [{"name": "conv", "output_shape": [1, 24, 8, 8]}]}}
    assert [(r.before, r.after) for r in layer_rows(res)] == [(24, 2)]


def test_runs_record_the_original_shape_of_every_layer_their_plan_names() -> None:
    from torch import nn

    from slimcnn.run import PlanStep
    from slimcnn.run._measure import original_shapes

    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ConvTranspose2d(8, 6, 2, groups=2), nn.Flatten(), nn.LazyLinear(4))
    steps = [PlanStep("prune_channels", ("0", "1"), {}), PlanStep("kmeans", ("0", "2", "9"), {})]
    # (out, in / groups, ...) for every kind; a layer named twice once; no weight or no such layer: skipped
    assert original_shapes(model, steps) == [{"layer": "0", "shape": [8, 3, 3, 3]}, {"layer": "1", "shape": [6, 4, 2, 2]}]
    rows = layer_rows(_result([{"transform": "prune_channels", "params": {"layers": {"0": [1, 3], "1": [0]}}}],
                              {"layers": original_shapes(model, steps)}))
    assert [(r.layer, r.before, r.after, r.at_least) for r in rows] == [("0", 8, 2, None), ("1", 6, 1, None)]


def test_layers_figure_draws_a_panel_per_kind(tmp_path: Path, figures: list[Any]) -> None:
    rows = layer_rows(_result([
        {"transform": "prune_channels", "params": {"layers": {"a": [0, 2, 5], "b": [1]}}},
        {"transform": "kmeans", "layers": ["a"], "params": {"bits": [["*", 4]]}}]))
    plot_layers(rows, tmp_path / "l.png")
    top, bottom = figures[0].axes
    assert top.get_xlabel() == "output channels" and bottom.get_xlabel() == "bits per weight"
    at = {t.get_text(): y for t, y in zip(top.get_yticklabels(), top.get_yticks(), strict=True)}
    assert at["a"] > at["b"]  # the plan's first layer on top
