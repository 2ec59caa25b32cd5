"""Greedy allocation: cheapest loss per saving first; the budget is checked on measured points."""

from __future__ import annotations

from slimcnn.search.budget import Amount, Budget
from slimcnn.search.greedy import TriedPoint, allocation_path, assignment_at, greedy_search
from slimcnn.search.sensitivity import SensitivityPoint, SensitivityTable


def _table() -> SensitivityTable:
    t = SensitivityTable("psnr", 30.0, True, base_params=300, base_macs=3000, base_weight_bytes=1200)
    # knob "cheap": saves a lot for little loss; "costly": saves little and hurts.
    for amount, drop, macs in [(0.25, 0.01, 2750), (0.5, 0.02, 2500), (0.75, 0.3, 2250)]:
        t.points.append(SensitivityPoint("cheap", amount, 30 - drop, drop, 300, macs, 1200))
    for amount, drop, macs in [(0.25, 0.2, 2900), (0.5, 0.5, 2800), (0.75, 1.0, 2700)]:
        t.points.append(SensitivityPoint("costly", amount, 30 - drop, drop, 300, macs, 1200))
    return t


def _measure_additive(table: SensitivityTable, budget: Budget):  # type: ignore[no-untyped-def]
    from slimcnn.types import Cost, Score

    calls = []

    def measure(assign: dict[str, float]) -> TriedPoint:
        calls.append(dict(assign))
        drop, macs = 0.0, float(table.base_macs)
        for knob, amount in assign.items():
            p = next(q for q in table.curve(knob) if q.amount == amount)
            drop += p.drop
            macs -= table.base_macs - p.macs
        base_c = Cost(300, table.base_macs, 1200, 0)
        c = Cost(300, int(macs), 1200, 0)
        checks = tuple(budget.check(base_c, Score("psnr", 30.0), c, Score("psnr", 30.0 - drop)))
        return TriedPoint(-1, dict(assign), 30 - drop, drop, {"macs": macs}, checks)

    return measure, calls


def test_path_takes_cheap_increments_first() -> None:
    path = allocation_path(_table())
    assert [(s.knob, s.amount) for s in path[:2]] in ([("cheap", 0.25), ("cheap", 0.5)], [("cheap", 0.5)] + [("cheap", 0.75)])
    assert path[0].knob == "cheap"
    assert {s.knob for s in path} == {"cheap", "costly"}


def test_drop_budget_is_met_on_measured_points() -> None:
    table = _table()
    budget = Budget(max_drop=Amount(0.25))
    measure, calls = _measure_additive(table, budget)
    result = greedy_search(table, budget, measure)
    assert result.met and result.best.drop <= 0.25
    assert result.best.assignment.get("cheap") == 0.5
    assert len(calls) <= 12


def test_cost_only_budget_prefers_the_best_metric() -> None:
    table = _table()
    budget = Budget(limits={"macs": Amount(0.85, relative=True)})
    measure, _ = _measure_additive(table, budget)
    result = greedy_search(table, budget, measure)
    assert result.met and result.best.costs["macs"] <= 0.85 * 3000
    assert result.best.drop <= 0.3


def test_infeasible_budget_reports_the_closest_point() -> None:
    table = _table()
    budget = Budget(max_drop=Amount(0.05), limits={"macs": Amount(0.5, relative=True)})
    measure, _ = _measure_additive(table, budget)
    result = greedy_search(table, budget, measure)
    assert not result.met
    assert result.best in result.tried


def test_a_path_that_breaks_the_drop_before_the_costs_detours_off_it() -> None:
    # ESPCN at round_to 16: the sweep (no fine-tuning) ranks conv2 32->16 first; fine-tuned it loses 0.57 dB, while
    # conv1 64->48, which alone meets 0.8x MACs, loses nothing
    from slimcnn.types import Cost, Score

    t = SensitivityTable("psnr", 30.0, True, base_params=300, base_macs=3000, base_weight_bytes=1200)
    t.points += [SensitivityPoint("conv2", 0.5, 10.0, 20.0, 300, 1600, 1200),
                 SensitivityPoint("conv1", 0.25, 15.0, 15.0, 300, 2300, 1200),
                 SensitivityPoint("conv1", 0.5, 5.0, 25.0, 300, 1700, 1200)]
    budget = Budget(max_drop=Amount(0.2), limits={"macs": Amount(0.8, relative=True)})
    recovered = {"conv2": {0.5: 0.57}, "conv1": {0.25: 0.002, 0.5: 0.4}}
    calls = []

    def measure(assign: dict[str, float]) -> TriedPoint:
        calls.append(dict(assign))
        drop = sum(recovered[k][a] for k, a in assign.items())
        macs = 3000 - sum(3000 - next(p.macs for p in t.curve(k) if p.amount == a) for k, a in assign.items())
        checks = tuple(budget.check(Cost(300, 3000, 1200, 0), Score("psnr", 30.0), Cost(300, macs, 1200, 0),
                                    Score("psnr", 30.0 - drop)))
        return TriedPoint(-1, dict(assign), 30 - drop, drop, {"macs": float(macs)}, checks)

    assert [(s.knob, s.amount) for s in allocation_path(t)][0] == ("conv2", 0.5)
    result = greedy_search(t, budget, measure)
    assert result.met and result.best.assignment == {"conv1": 0.25}
    # the path bisected (prefixes 0, 2, 1), then the move with the least predicted drop; no point measured twice
    assert calls == [{}, {"conv2": 0.5, "conv1": 0.25}, {"conv2": 0.5}, {"conv1": 0.25}]
    assert result.best in result.tried
    assert assignment_at(result.path, result.best.prefix) == {}  # off the path (search logs chosen_off_path)
    assert not greedy_search(t, budget, measure, max_evaluations=2).met  # the bound holds detours too
