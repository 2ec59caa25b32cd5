"""Latency-aware selection: the knapsack on synthetic tables (exact optimum), the table's maths and JSON."""

from __future__ import annotations

import copy
import dataclasses
import itertools
import random

import pytest
import torch

from slimcnn.errors import ConfigError
from slimcnn.prune._knapsack import candidate_widths, kept_importance, knapsack_widths, select_for_latency
from slimcnn.prune._latency_build import sample_widths
from slimcnn.prune._latency_table import GroupLatency, LatencyTable


def _brute(options, need):
    best, arg = -float("inf"), None
    names = list(options)
    for combo in itertools.product(*(options[n] for n in names)):
        if sum(o[2] for o in combo) >= need and sum(o[1] for o in combo) > best:
            best, arg = sum(o[1] for o in combo), {n: o[0] for n, o in zip(names, combo, strict=True)}
    return best, arg


@pytest.mark.parametrize("seed", range(6))
def test_knapsack_is_the_exact_optimum_on_integer_savings(seed) -> None:
    rng = random.Random(seed)
    options = {f"g{i}": [(w, float(rng.randint(0, 20)), float(rng.randint(0, 9))) for w in (8, 16, 24)] + [(32, 25.0, 0.0)]
               for i in range(4)}
    need = rng.randint(5, 20)
    best, _ = _brute(options, need)
    widths, feasible = knapsack_widths(options, need, resolution=need)
    assert feasible == (best > -float("inf"))
    if feasible:
        got = sum(next(o[1] for o in options[n] if o[0] == w) for n, w in widths.items())
        assert got == best
        assert sum(next(o[2] for o in options[n] if o[0] == w) for n, w in widths.items()) >= need


def test_knapsack_widens_what_rounding_down_gave_up() -> None:
    # savings in steps of 0.1: a@12 (0.49) + b@8 (0.51) saves exactly the need but rounds to 4 + 5 < 10 steps
    options = {"a": [(8, 0.0, 0.55), (12, 1.0, 0.49), (16, 2.0, 0.0)], "b": [(8, 1.0, 0.51), (16, 2.0, 0.0)]}
    best, arg = _brute(options, 1.0)
    assert knapsack_widths(options, 1.0, resolution=10) == (arg, True) == ({"a": 12, "b": 8}, True)
    assert best == 2.0


def test_knapsack_infeasible_takes_the_fastest_widths_and_zero_need_keeps_all() -> None:
    options = {"a": [(8, 1.0, 1.0), (16, 2.0, 0.0)], "b": [(4, 1.0, 2.0), (8, 2.0, 0.0)]}
    assert knapsack_widths(options, 10.0) == ({"a": 8, "b": 4}, False)
    assert knapsack_widths(options, 0.0) == ({"a": 16, "b": 8}, True)


def _group(name: str, gid: int, size: int, widths: tuple[int, ...], layers: dict) -> GroupLatency:
    """A curve from ``{layer: (side, ms at each width)}``."""
    return GroupLatency(name, gid, size, 1, widths, tuple(layers), tuple(s for s, _ in layers.values()),
                        tuple(p for _, p in layers.values()))


def _of(layer_ms: dict, *groups: GroupLatency) -> LatencyTable:
    return LatencyTable("k", "fp", "onnxruntime", 2, (1, 3, 8, 8), 8, layer_ms, groups, 6)


def _table() -> LatencyTable:
    return _of({"a": 2.0, "b": 2.0, "c": 6.0},
               _group("a", 0, 32, (8, 16, 24, 32), {"a": ("out", (0.5, 1.0, 1.5, 2.0)), "b": ("in", (0.5, 1.0, 1.5, 2.0))}),
               _group("c", 1, 16, (8, 16), {"c": ("out", (3.0, 6.0))}))


def test_table_interpolates_predicts_and_round_trips() -> None:
    t = _table()
    assert t.group("a").at(20) == pytest.approx(2.5)
    assert t.group("a").at(4) == 1.0  # flat below the smallest sample
    assert t.predict_ratio({"a": 16, "c": 8}) == pytest.approx((10 - 2 - 3) / 10)
    noisy = _group("n", 2, 16, (8, 16), {"n": ("out", (7.0, 6.0))})  # timed slower pruned: saves nothing
    assert _of({"n": 6.0, "x": 4.0}, noisy).predict_ratio({"n": 8}) == 1.0
    assert LatencyTable.from_dict(t.to_dict()) == t
    with pytest.raises(KeyError, match="no group named 'z'"):
        t.group("z")


def test_the_fastest_ratio_keeps_what_no_group_shortens() -> None:
    t = _table()
    assert t.fastest_ratio() == pytest.approx((0.5 + 0.5 + 3.0) / 10)
    tail = _of({**t.layer_ms, "nms": 30.0}, *t.groups)  # a detector's post-processing: in no group
    assert tail.fastest_ratio() == pytest.approx((4.0 + 30.0) / 40)


def test_a_layer_cut_on_both_sides_keeps_the_product_and_a_concat_side_adds_up() -> None:
    # layer "m" (8 ms): its input is the concat of groups p and q (4 ms of its time each), its output is group r
    p = _group("p", 0, 16, (8, 16), {"m": ("in", (4.0, 8.0))})
    q = _group("q", 1, 16, (8, 16), {"m": ("in", (6.0, 8.0))})
    r = _group("r", 2, 16, (8, 16), {"m": ("out", (4.0, 8.0)), "z": ("in", (1.0, 2.0))})
    t = _of({"m": 8.0, "z": 2.0}, p, q, r)
    assert t.predict_ratio({"p": 8, "r": 8}) == pytest.approx((8 * 0.5 * 0.5 + 1) / 10)  # additive would say 0.1
    assert t.predict_ratio({"p": 8, "q": 8}) == pytest.approx((8 * (1 - 0.5 - 0.25) + 2) / 10)
    assert t.predict_ratio({"p": 8, "q": 8, "r": 8}) == pytest.approx((8 * 0.25 * 0.5 + 1) / 10)
    # the savings linearised at a selection add up to the product model's exactly (the knapsack's fixed point)
    for sel in ({"p": 8, "r": 8}, {"p": 8, "q": 8, "r": 8}, {"q": 8}):
        at = t.kept_sides(sel)
        total = sum(t.savings(n, [w], at)[0] for n, w in sel.items())
        assert total == pytest.approx(t.base_ms * (1 - t.predict_ratio(sel)))
    assert t.savings("r", [8], {}) == [pytest.approx(4.0 + 1.0)]  # at full width: additive


def test_select_for_latency_reaches_the_product_target_that_additive_savings_miss() -> None:
    # two groups on the two sides of one 8 ms layer; additive savings would call halving both a 0.0x model
    a = _group("a", 0, 32, (8, 16, 24, 32), {"m": ("in", (2.0, 4.0, 6.0, 8.0))})
    b = _group("b", 1, 32, (8, 16, 24, 32), {"m": ("out", (2.0, 4.0, 6.0, 8.0))})
    t = _of({"m": 8.0}, a, b)
    scores = {0: torch.ones(32), 1: torch.ones(32)}
    additive = select_for_latency(t, scores, 0.3, rounds=1)
    assert not additive.feasible and additive.predicted_ratio > 0.3  # one round: the additive answer misses
    for target in (0.3, 0.5, 0.6):
        sel = select_for_latency(t, scores, target)
        best = max((wa + wb for wa in (8, 16, 24, 32) for wb in (8, 16, 24, 32)
                    if t.predict_ratio({"a": wa, "b": wb}) <= target + 1e-9), default=None)
        assert sel.feasible and sel.predicted_ratio <= target + 1e-9
        # a heuristic on a non-additive model: at 0.3 it keeps 16 + 16 where 32 + 8 is the optimum
        assert sum(sel.widths.get(n, 32) for n in "ab") >= 0.8 * best


def test_select_for_latency_meets_the_predicted_target_and_keeps_the_best_channels() -> None:
    t = _table()
    scores = {0: torch.arange(32, dtype=torch.float64) + 1, 1: torch.ones(16) * 5}
    sel = select_for_latency(t, scores, 0.6)
    assert sel.feasible and sel.predicted_ratio <= 0.6 + 1e-9
    assert sel.widths  # something was pruned
    assert kept_importance(torch.tensor([1.0, 3.0, 2.0]), [0], [1, 2, 3]) == pytest.approx([0.5, (1 + 3) / 2, 3.0])
    with pytest.raises(ConfigError, match="--latency"):
        select_for_latency(t, scores, 1.5)


def test_widths_sit_on_the_channel_block() -> None:
    assert sample_widths(64, 1, 8, 4) == (16, 32, 48, 64)
    assert sample_widths(12, 1, 8, 4) == (3, 6, 9, 12)  # under two blocks: step 1
    assert sample_widths(25, 1, 8, 4) == (8, 16, 25)  # 24 is too close to 25 to time a saving
    assert sample_widths(20, 1, 8, 4) == (8, 16, 20)  # half a block below: kept
    assert sample_widths(64, 1, 8, 4, narrowest=True) == (8, 16, 32, 48, 64)  # PyTorch eager's tables: one block too
    assert sample_widths(12, 2, 8, 4, narrowest=True) == (2, 3, 6, 9, 12)  # at least the fixed channels
    assert candidate_widths(32, 1, 8, (8, 16, 24, 32)) == [8, 16, 24, 32]
    assert candidate_widths(64, 1, 8, (16, 32, 48, 64)) == [8, 16, 24, 32, 40, 48, 56, 64]  # interpolated on blocks
    assert candidate_widths(40, 20, 16, (16, 32, 40)) == [32, 40]
    # under two blocks only the measured widths: inside a block time is a step, not a line between samples
    assert candidate_widths(16, 1, 16, (4, 8, 12, 16)) == [4, 8, 12, 16]
    assert candidate_widths(12, 5, 8, (3, 6, 9, 12)) == [6, 9, 12]


def test_table_is_built_once_per_key_and_cached(tmp_path, monkeypatch) -> None:
    import slimcnn.measure as measure
    import slimcnn.measure._nodes as nodes
    from slimcnn.models import load_model
    from slimcnn.prune._latency_build import build_latency_table

    loaded = load_model("slimcnn:tiny_cnn")
    model, x = loaded.model.eval(), torch.randn(loaded.info.input_shape)
    monkeypatch.setattr(measure, "cpu_contended", lambda: False)
    path = tmp_path / "tables.json"
    first = build_latency_table(model, x, runs=3, warmup=1, cache_path=path)
    # either way of timing is cached (a profile that comes out at 0 ms under load falls back to timing layers alone:
    # seen once in a full run)
    assert first.groups and first.timings > 0 and first.base_ms > 0 and first.source in ("in-graph", "alone")
    assert all(g.widths[-1] == g.size and len(g.widths) == len(g.ms) for g in first.groups)

    def boom(*a, **k):
        raise AssertionError("a cached table must not be timed again")

    monkeypatch.setattr(measure, "time_modules_interleaved", boom)
    monkeypatch.setattr(nodes, "profile_nodes_interleaved", boom)
    assert build_latency_table(model, x, runs=3, warmup=1, cache_path=path) == first
    with pytest.raises(AssertionError, match="timed again"):  # another input shape is another key
        build_latency_table(model, torch.cat([x, x]), runs=3, warmup=1, cache_path=path)


def _real_graph_table():
    """tiny_cnn's real groups with a noise-free curve (1 ms per group at full width, linear, sampled on blocks
    of 8): timings under load are a benchmark, not a test."""
    from slimcnn.graph import trace
    from slimcnn.models import load_model
    from slimcnn.prune._criteria import ScoreContext, score_groups
    from slimcnn.prune._latency_prune import _CostCounter

    loaded = load_model("slimcnn:tiny_cnn")
    model, x = loaded.model.eval(), torch.randn(loaded.info.input_shape)
    graph = trace(model, x)
    groups = []
    for g in graph.groups():
        if g.prunable:
            widths = sample_widths(g.size, 1, 8, 4)
            groups.append(_group(g.producers[0].layer, g.id, g.size, widths,
                                 {g.producers[0].layer: ("out", tuple(w / g.size for w in widths))}))
    table = LatencyTable("k", "fp", "onnxruntime", 1, tuple(x.shape), 8, {g.layer: 1.0 for g in groups}, tuple(groups), 0)
    scores = score_groups(ScoreContext(model, graph, x, None, 8, 0, []), "l1")
    return model, x, graph, table, scores, _CostCounter(model, graph, table, scores)


def _budgets(costs, **targets):
    from slimcnn.prune._knapsack import CostBudget

    return [CostBudget(n, t, lambda w, n=n: costs.fraction(n, w), costs.slopes(n)) for n, t in targets.items()]


def _pruned_fractions(model, x, graph, table, widths):
    from slimcnn.prune import prune_model_
    from slimcnn.prune._knapsack import keep_counts

    pruned = copy.deepcopy(model)
    out = prune_model_(pruned, x, keep=keep_counts(graph, table, widths), graph=graph)
    n = sum(p.numel() for p in model.parameters())
    return out.macs_after / out.macs_before, sum(p.numel() for p in pruned.parameters()) / n


def test_latency_and_macs_budgets_together_on_a_real_graph(tmp_path, monkeypatch) -> None:
    from slimcnn.prune._knapsack import select_for_latency_and_budgets

    model, x, graph, table, scores, costs = _real_graph_table()
    assert all(v > 0 for v in costs.slopes("macs").values())
    loose = select_for_latency(table, scores, 0.95)
    assert select_for_latency_and_budgets(table, scores, 0.95, _budgets(costs, macs=1.0)).widths == loose.widths
    both = select_for_latency_and_budgets(table, scores, 0.95, _budgets(costs, macs=0.5))
    assert both.feasible and not both.unmet and both.reached["macs"] <= 0.5 < costs.fraction("macs", loose.widths)
    assert both.predicted_ratio <= 0.95 + 1e-9 and both.targets == {"macs": 0.5}
    macs, _ = _pruned_fractions(model, x, graph, table, both.widths)
    assert macs == pytest.approx(both.reached["macs"])  # the exact count, not an estimate
    impossible = select_for_latency_and_budgets(table, scores, 0.95, _budgets(costs, macs=0.001))
    assert impossible.feasible and impossible.unmet == ("macs",) and impossible.reached["macs"] > 0.001


def test_latency_macs_and_params_budgets_all_hold_at_once(tmp_path, monkeypatch) -> None:
    from slimcnn.prune._knapsack import select_for_latency_and_budgets

    model, x, graph, table, scores, costs = _real_graph_table()
    loose = select_for_latency(table, scores, 0.9)
    loose_params = costs.fraction("params", loose.widths)
    for targets in ({"params": 0.6 * loose_params}, {"params": 0.6 * loose_params, "macs": 0.4}):
        sel = select_for_latency_and_budgets(table, scores, 0.9, _budgets(costs, **targets))
        assert sel.feasible and not sel.unmet and sel.shortfall() is None
        assert sel.predicted_ratio <= 0.9 + 1e-9
        macs, params = _pruned_fractions(model, x, graph, table, sel.widths)
        assert params == pytest.approx(sel.reached["params"]) and params <= targets["params"]  # exact params count
        assert macs <= targets.get("macs", 1.0)
        assert sel.kept_importance <= loose.kept_importance  # a budget only costs value


def test_an_unreachable_params_budget_is_named_with_the_least_reached(tmp_path, monkeypatch) -> None:
    from slimcnn.prune._knapsack import select_for_latency_and_budgets

    _, _, _, table, scores, costs = _real_graph_table()
    sel = select_for_latency_and_budgets(table, scores, 0.9, _budgets(costs, macs=0.9, params=0.001))
    assert sel.unmet == ("params",)
    assert 0.001 < sel.reached["params"] < 1
    msg = sel.shortfall()
    assert msg.startswith("--params 0.001x cannot be met together with --latency 0.9x: the least the knapsack reaches is 0.")
    with pytest.raises(ConfigError, match="--params must be a fraction of the original"):
        select_for_latency_and_budgets(table, scores, 0.9, _budgets(costs, params=1.5))


def test_param_counts_of_widths_are_exact_on_grouped_norm_and_linear_layers() -> None:
    from torch import nn

    from slimcnn.graph import trace
    from slimcnn.prune._criteria import ScoreContext, score_groups
    from slimcnn.prune._latency_prune import _CostCounter

    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.PReLU(16),
                          nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.GroupNorm(4, 16), nn.PReLU(),
                          nn.Conv2d(16, 24, 1), nn.ReLU(), nn.Flatten(), nn.Linear(24 * 4 * 4, 5)).eval()
    x = torch.randn(1, 3, 4, 4)
    graph = trace(model, x)
    groups = tuple(_group(g.producers[0].layer, g.id, g.size, (g.size,), {}) for g in graph.groups() if g.prunable)
    table = LatencyTable("k", "fp", "onnxruntime", 1, (1, 3, 4, 4), 8, {"x": 1.0}, groups, 0)
    scores = score_groups(ScoreContext(model, graph, x, None, 8, 0, []), "l1")
    costs = _CostCounter(model, graph, table, scores)
    for frac in (0.25, 0.5, 1.0):
        widths = {g.layer: max(4, int(g.size * frac) // 4 * 4) for g in groups}  # GroupNorm keeps whole groups
        macs, params = _pruned_fractions(model, x, graph, table, widths)
        assert costs.fraction("params", widths) == pytest.approx(params, abs=0)
        assert costs.fraction("macs", widths) == pytest.approx(macs, abs=0)


def test_macs_weights_cut_the_channels_that_cost_the_most_time_per_mac() -> None:
    # two groups, same size, same ms per channel; "heavy" carries 4x the MACs per channel of "light"
    t = _of({"heavy": 4.0, "light": 4.0},
            _group("heavy", 0, 32, (8, 16, 24, 32), {"heavy": ("out", (1.0, 2.0, 3.0, 4.0))}),
            _group("light", 1, 32, (8, 16, 24, 32), {"light": ("out", (1.0, 2.0, 3.0, 4.0))}))
    scores = {0: torch.ones(32), 1: torch.ones(32) * 1.1}  # unweighted, "light" is the more important
    plain = select_for_latency(t, scores, 0.75)
    weighted = select_for_latency(t, scores, 0.75, weights={"heavy": 4.0, "light": 1.0})
    assert plain.widths == {"heavy": 16} and weighted.widths == {"light": 16}
    assert weighted.predicted_ratio <= 0.75 + 1e-9
    assert weighted.kept_importance == pytest.approx(4.0 * 32 + 16)  # a weighted group's value scales


def test_latency_tries_rescale_both_ways_then_interpolate_and_keep_the_best() -> None:
    from slimcnn.prune._knapsack import LatencySelection
    from slimcnn.prune._latency_prune import CLOSE_ENOUGH, _better, _next_knapsack_target

    under = [{"knapsack_target": 0.5, "measured_ratio": 0.4}]
    assert _next_knapsack_target(under, 0.5) == pytest.approx(0.5 * 0.5 / 0.4)  # fast: raised, no margin
    over = [{"knapsack_target": 0.5, "measured_ratio": 0.6}]
    assert _next_knapsack_target(over, 0.5) == pytest.approx(0.5 * 0.5 / 0.6 - 0.01)
    floor = [{"knapsack_target": 0.49, "predicted_ratio": 0.52, "measured_ratio": 0.35, "feasible": False}]
    assert _next_knapsack_target(floor, 0.49) == pytest.approx(0.52 + CLOSE_ENOUGH / 2)  # just above the table's floor
    assert _next_knapsack_target(floor + [{"knapsack_target": 0.7, "measured_ratio": 0.6}], 0.49) > 0.52  # bracketed too
    both = under + [{"knapsack_target": 0.7, "measured_ratio": 0.6}]
    aim = 0.5 - CLOSE_ENOUGH / 2
    assert _next_knapsack_target(both, 0.5) == pytest.approx(0.5 + (aim - 0.4) / 0.2 * 0.2)
    # efficientnet_b0's tries in one run: 0.475 measured faster than 0.462; the bracket is 0.475..0.490 now (it
    # stayed 0.462..0.490 and 0.475 was tried twice)
    noisy = [{"knapsack_target": 0.49, "measured_ratio": 0.509}, {"knapsack_target": 0.462, "measured_ratio": 0.455},
             {"knapsack_target": 0.475, "measured_ratio": 0.449}]
    aim = 0.49 - CLOSE_ENOUGH / 2
    assert _next_knapsack_target(noisy, 0.49) == pytest.approx(0.475 + (aim - 0.449) / (0.509 - 0.449) * 0.015)
    inverted = [{"knapsack_target": 0.45, "measured_ratio": 0.52}, {"knapsack_target": 0.47, "measured_ratio": 0.44}]
    assert 0.45 < _next_knapsack_target(inverted, 0.49) < 0.47  # every met try above the missed one: by measurement

    def sel(value: float) -> LatencySelection:
        return LatencySelection({}, 0.5, 0.5, value, True)

    assert _better(sel(1.0), 0.49, sel(2.0), 0.51, 0.5)  # meeting the target wins over more value
    assert _better(sel(2.0), 0.49, sel(1.0), 0.45, 0.5)  # both met: more value kept
    assert not _better(sel(9.0), 0.55, sel(1.0), 0.52, 0.5)  # both missed: the faster
    over_params = LatencySelection({}, 0.5, 0.5, 9.0, True, {"params": 0.5}, {"params": 0.6})
    assert _better(sel(1.0), 0.55, over_params, 0.45, 0.5)  # the MACs/params budgets come before latency


def test_an_unknown_latency_objective_or_runtime_is_a_config_error() -> None:
    from slimcnn.prune import prune_for_latency_

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.Conv2d(8, 4, 3))
    with pytest.raises(ConfigError, match="unknown latency objective 'fast'; use one of macs, importance"):
        prune_for_latency_(model, torch.randn(1, 3, 8, 8), 0.5, objective="fast")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="runtime must be one of \\['onnxruntime', 'torch'\\], got 'tensorrt'"):
        prune_for_latency_(model, torch.randn(1, 3, 8, 8), 0.5, runtime="tensorrt", cache=False)  # type: ignore[arg-type]


def test_a_node_floor_is_kept_however_much_both_sides_are_cut() -> None:
    # layer "m": 8 ms, 2 ms of it a per-node floor no cut removes; halving each side keeps 2 + 6 * 0.5 * 0.5
    a = _group("a", 0, 16, (8, 16), {"m": ("in", (5.0, 8.0))})
    b = _group("b", 1, 16, (8, 16), {"m": ("out", (5.0, 8.0))})
    t = dataclasses.replace(_of({"m": 8.0}, a, b), floor_ms=2.0)
    assert t.predict_ratio({"a": 8}) == pytest.approx(5.0 / 8)  # one side: the measured curve itself
    assert t.predict_ratio({"a": 8, "b": 8}) == pytest.approx((2 + 6 * 0.25) / 8)
    at = t.kept_sides({"a": 8, "b": 8})
    total = sum(t.savings(n, [8], at)[0] for n in "ab")
    assert total == pytest.approx(8 - (2 + 6 * 0.25))  # the linearisation stays exact at its point


def test_nodes_a_cut_brings_in_cost_time() -> None:
    """A pseudo-layer at 0 ms in the original (a reorder out of the blocked layout that only the cut copy runs)
    adds its time at the cut width: to the prediction and against the knapsack's saving."""
    g = _group("a", 0, 16, (8, 12, 16), {"a": ("out", (2.0, 3.0, 4.0)), "a+": ("out", (0.1, 0.3, 0.0)),
                                         "b": ("in", (1.0, 1.5, 2.0))})
    t = LatencyTable("k", "fp", "onnxruntime", 2, (8, 16, 32, 32), 16, {"a": 4.0, "a+": 0.0, "b": 2.0}, (g,), 3)
    assert t.added("a", [8, 12, 16]).tolist() == pytest.approx([0.1, 0.3, 0.0])
    assert t.predict_ratio({"a": 12}) == pytest.approx((3.0 + 1.5 + 0.3) / 6.0)
    assert t.savings("a", [8, 12, 16], {}) == pytest.approx([2.0 + 1.0 - 0.1, 1.0 + 0.5 - 0.3, 0.0])


def _fixed_table_search(monkeypatch, measured: list[float], original_ms: float = 1.0):
    """``prune_for_latency_(model, x, 0.7)`` on a small conv stack with a synthetic table (every layer 4 ms, linear
    in the kept width: the knapsack's answers do not depend on this machine's timing) and checks that measure
    ``measured`` in turn (one per model timed beside the original), the original at ``original_ms``; returns
    (result, the ratios the checks measured)."""
    from types import SimpleNamespace

    import slimcnn.measure as measure
    from slimcnn.prune import _latency_prune, build_latency_table, prune_for_latency_

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 32, 3), torch.nn.ReLU(), torch.nn.Conv2d(32, 32, 3),
                                torch.nn.ReLU(), torch.nn.Conv2d(32, 4, 3))
    x = torch.randn(1, 3, 16, 16)
    real = build_latency_table(model, x, cache=False)
    groups = tuple(dataclasses.replace(g, parts=tuple(tuple(4.0 * w / g.size for w in g.widths) for _ in g.layers))
                   for g in real.groups)
    table = dataclasses.replace(real, groups=groups, layer_ms=dict.fromkeys(real.layer_ms, 4.0), floor_ms=0.0,
                                other_ms=0.0, source="in-graph")
    monkeypatch.setattr(_latency_prune, "build_latency_table", lambda *a, **k: table)
    ratios = iter(measured)
    calls: list[float] = []

    def fake_compare(models, x, **kw):  # the next ratio for every model but the original, in their order
        out = {"original": SimpleNamespace(median_ms=original_ms)}
        for name in list(models)[1:]:
            calls.append(next(ratios))
            out[name] = SimpleNamespace(median_ms=calls[-1] * original_ms)
        return out

    monkeypatch.setattr(measure, "compare_latency", fake_compare)
    return prune_for_latency_(model, x, 0.7, cache=False), calls


def test_latency_search_aims_under_the_target(monkeypatch) -> None:
    """A try measured right at the target is not kept while tries remain: the written model is timed again."""
    from slimcnn.prune._latency_prune import MARGIN

    res, calls = _fixed_table_search(monkeypatch, [0.697, 0.686, 0.5])
    assert calls == [0.697, 0.686]  # 0.697 is within 0.7 but above the aim; 0.686 lands in the aim's band
    assert res.measured_ratio == pytest.approx(0.686) and 0.7 - MARGIN - 0.02 <= res.measured_ratio <= 0.7 - MARGIN
    assert res.attempts[0]["knapsack_target"] == pytest.approx(0.7 - MARGIN)  # the first try aims at the aim too


def test_latency_search_times_two_contradicting_checks_again(monkeypatch) -> None:
    """A pick predicted faster that measures slower than an earlier one (a jump of the timing, not of the model) sends
    both to one more timing side by side, and the search goes on from that timing."""
    res, calls = _fixed_table_search(monkeypatch, [0.75, 0.95, 0.74, 0.68])
    assert calls == [0.75, 0.95, 0.74, 0.68]  # try 1, try 2, then both again in one run
    first, second = res.attempts
    assert second["predicted_ratio"] < first["predicted_ratio"]
    assert (second["first_measured_ratio"], second["measured_ratio"]) == (0.95, 0.68)
    assert (first["first_measured_ratio"], first["measured_ratio"]) == (0.75, 0.74)
    assert res.measured_ratio == 0.68  # the re-timed try meets the aim's band and is the one applied
    assert [a.get("kept") for a in res.attempts] == [None, True]  # and the result says which try that is
    # consistent checks are not timed again: a faster pick measured faster
    _, calls = _fixed_table_search(monkeypatch, [0.75, 0.68])
    assert calls == [0.75, 0.68]


def test_latency_search_says_when_the_machine_changed_under_its_table(monkeypatch, caplog) -> None:
    """The original timed far from the table's whole-model time: recorded, and one warning that says what to do."""
    from slimcnn.prune import _latency_table

    monkeypatch.setattr(_latency_table.LatencyTable, "built_ms", property(lambda t: 10.0))  # the table's original
    with caplog.at_level("WARNING", logger="slimcnn.prune._latency_prune"):
        steady, _ = _fixed_table_search(monkeypatch, [0.68], original_ms=10.5)
    assert steady.table_drift == pytest.approx(1.05) and not caplog.records
    with caplog.at_level("WARNING", logger="slimcnn.prune._latency_prune"):
        busy, _ = _fixed_table_search(monkeypatch, [0.68], original_ms=17.0)
    assert busy.details()["latency_table_drift"] == pytest.approx(1.7)
    (record,) = caplog.records
    assert "17 ms in these timings but 10 ms when its latency table was built (1.70x)" in record.getMessage()
    assert "delete the table cache" in record.getMessage()
