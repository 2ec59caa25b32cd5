"""CPO on a toy network with a synthetic sensitivity oracle: the paper's procedure, step by step."""

from __future__ import annotations

import pytest

from slimcnn.errors import ConfigError
from slimcnn.search.cpo import cpo_search, removed


class Oracle:
    """Drop = Σ a_i · r_i² ; filter size C_i·9 where C_i shrinks with the previous layer's ratio."""

    def __init__(self, a: dict[str, float], n: int = 64) -> None:
        self.a = a
        self.n = n
        self.calls: list[dict[str, float]] = []
        self.accepted: list[dict[str, float]] = []
        self.chain = list(a)

    def drop(self, ratios: dict[str, float]) -> float:
        self.calls.append(dict(ratios))
        return sum(self.a[k] * r * r for k, r in ratios.items())

    def filter_size(self, layer: str, ratios: dict[str, float]) -> float:
        i = self.chain.index(layer)
        c_in = self.n if i == 0 else self.n - removed(ratios.get(self.chain[i - 1], 0.0), self.n)
        return 9.0 * c_in

    def filters(self, layer: str) -> int:
        return self.n

    def accept(self, ratios: dict[str, float]) -> None:
        self.accepted.append(dict(ratios))

    def cost(self, ratios: dict[str, float]) -> float:
        total = 0.0
        for i, name in enumerate(self.chain):
            c_in = self.n if i == 0 else self.n - removed(ratios.get(self.chain[i - 1], 0.0), self.n)
            total += (self.n - removed(ratios.get(name, 0.0), self.n)) * c_in * 9
        return total


def test_probe_order_least_sensitive_first() -> None:
    oracle = Oracle({"a": 0.8, "b": 0.1, "c": 0.4})
    result = cpo_search(oracle, ["a", "b", "c"], max_drop=0.05)
    probes = [s for s in result.steps if s.action == "probe"]
    assert [s.layer for s in probes] == ["a", "b", "c"] and all(s.ratio == 0.5 for s in probes)
    assert result.order[0] == "b"


def test_ratio_sequence_and_step_back_to_midpoint() -> None:
    # Only one layer: 0.5 → 0.75 → 0.875 raise while drop <= target, then midpoint step-back.
    oracle = Oracle({"x": 1.0})
    result = cpo_search(oracle, ["x"], max_drop=0.7)
    seq = [(s.action, s.ratio) for s in result.steps if s.action != "probe"]
    assert seq[0] == ("raise", 0.5)
    assert seq[1] == ("raise", 0.75)  # 0.5625 <= 0.7
    assert seq[2] == ("exceeded", 0.875)  # 0.7656 > 0.7
    assert seq[3] == ("step_back", (0.75 + 0.875) / 2)  # 0.8125: 0.660 <= 0.7 -> accepted
    assert result.ratios["x"] == pytest.approx(0.8125)
    assert result.drop <= 0.7
    assert oracle.accepted == [{"x": pytest.approx(0.8125)}]  # the oracle learns each fixed state


def test_switch_to_runner_up_when_ps_exceeds_it() -> None:
    # b is least sensitive but its PS grows with r (quadratic drop); it yields to a once PS_b > PS_a.
    oracle = Oracle({"a": 0.3, "b": 0.2}, n=64)
    result = cpo_search(oracle, ["a", "b"], max_drop=10.0)
    b_steps = [s for s in result.steps if s.layer == "b" and s.action in ("raise", "switch")]
    assert result.order[0] == "b"
    assert b_steps[-1].action == "switch"
    # PS_a after b was fixed was recomputed with a's reduced... (a is first in chain: unchanged size)
    assert result.order[1] == "a"


def test_ps_recomputed_after_inputs_shrink() -> None:
    # c follows b in the chain; once b is pruned, c's filters are smaller -> PS_c grows.
    oracle = Oracle({"a": 0.5, "b": 0.01, "c": 0.45})
    result = cpo_search(oracle, ["a", "b", "c"], max_drop=0.02)
    assert result.order[0] == "b"
    # Without recomputation c (0.45) would precede a (0.5); its input shrank so its PS now exceeds a's.
    assert result.order[1] == "a"
    # every fixed state extends the previous one (what a step-by-step retraining oracle relies on)
    for before, after in zip(oracle.accepted, oracle.accepted[1:], strict=False):
        assert all(after[k] >= v for k, v in before.items())


def test_budget_direction_stops_when_cost_fits() -> None:
    oracle = Oracle({"a": 0.5, "b": 0.1, "c": 0.3})
    budget = 0.7 * oracle.cost({})
    result = cpo_search(oracle, ["a", "b", "c"], macs_budget=budget)
    assert result.met and oracle.cost(result.ratios) <= budget
    assert any(s.action == "budget" for s in result.steps)


def test_needs_exactly_one_target() -> None:
    with pytest.raises(ConfigError):
        cpo_search(Oracle({"a": 1.0}), ["a"])
