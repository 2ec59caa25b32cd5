"""One-shot greedy allocation over sensitivity curves, verified on the real model.

Every knob's curve gives, per amount, the metric drop and the cost. The allocation takes the
cheapest metric loss per unit of saved cost first (each knob offering its next amount), which
orders all increments into one *path* from the baseline to "everything at
its largest amount". Each prefix of the path is a candidate model. The search bisects that path on
*measured* values — the combined model is built (optionally fine-tuned), evaluated and costed — so
the budget is checked on real models, not on the additive prediction.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from slimcnn.search.budget import Budget, ConstraintCheck
from slimcnn.search.sensitivity import SensitivityTable

log = logging.getLogger(__name__)

Assignment = dict[str, float]
"""``{knob: amount}``; knobs not present stay at their baseline."""


@dataclass(frozen=True)
class PathStep:
    """Moving one knob to a new amount, with the predicted effect."""

    knob: str
    amount: float
    d_drop: float
    d_saving: float


@dataclass(frozen=True)
class TriedPoint:
    """A candidate measured on the real (combined, optionally fine-tuned) model."""

    prefix: int
    assignment: dict[str, float]
    metric: float
    drop: float
    costs: dict[str, float]
    checks: tuple[ConstraintCheck, ...]

    @property
    def feasible(self) -> bool:
        """All constraints met."""
        return all(c.met for c in self.checks)

    def violation(self) -> float:
        """How far from feasible (sum of relative overshoots), for the closest-point report."""
        return sum(max(0.0, (c.value - c.limit) / max(abs(c.limit), 1e-12)) for c in self.checks)


@dataclass
class GreedyResult:
    """The chosen point, whether it meets the budget, and every point tried."""

    best: TriedPoint
    met: bool
    path: list[PathStep]
    tried: list[TriedPoint] = field(default_factory=list)


def allocation_path(table: SensitivityTable, cost_key: str = "macs") -> list[PathStep]:
    """Order all increments by predicted metric loss per unit of saved cost (cheapest first)."""
    base_cost = float(getattr(table, f"base_{cost_key}"))
    # Along each curve, from the least to the most saving (amounts may be ratios or bits).
    curves = {k: sorted(table.curve(k), key=lambda p: -float(getattr(p, cost_key))) for k in table.knobs()}
    position = {k: (0.0, 0.0, base_cost) for k in curves}  # (amount, drop, cost)
    index = {k: 0 for k in curves}
    path: list[PathStep] = []
    while True:
        best: tuple[float, str, int] | None = None
        for knob, pts in curves.items():
            _, drop0, cost0 = position[knob]
            # Only a knob's *next* amount competes: every amount stays a step of the path, so the
            # measured bisection can stop between them (jumping ahead would skip the mild amounts).
            j = index[knob]
            while j < len(pts) and cost0 - float(getattr(pts[j], cost_key)) <= 0:
                j += 1
            if j >= len(pts):
                continue
            eff = max(pts[j].drop - drop0, 0.0) / (cost0 - float(getattr(pts[j], cost_key)))
            if best is None or eff < best[0]:
                best = (eff, knob, j)
        if best is None:
            return path
        _, knob, j = best
        p = curves[knob][j]
        _, drop0, cost0 = position[knob]
        path.append(PathStep(knob, p.amount, p.drop - drop0, cost0 - float(getattr(p, cost_key))))
        position[knob] = (p.amount, p.drop, float(getattr(p, cost_key)))
        index[knob] = j + 1


def assignment_at(path: list[PathStep], prefix: int) -> Assignment:
    """The knob amounts after taking the first ``prefix`` steps of ``path``."""
    out: Assignment = {}
    for step in path[:prefix]:
        out[step.knob] = step.amount
    return out


def predicted_prefix(path: list[PathStep], table: SensitivityTable, budget: Budget) -> int:
    """Where the additive prediction says the budget is best met (the bisection's first probe)."""
    from slimcnn.types import Score

    base = Score(table.metric, table.baseline, table.higher_is_better)
    drop_lim = budget.drop_limit(base)
    drop = 0.0
    best = 0
    for i, step in enumerate(path, start=1):
        drop += step.d_drop
        if drop_lim is not None and drop > drop_lim:
            break
        best = i
    return best


MAX_DETOURS = 4
"""Measured moves off the path at most, after the path missed the costs (each one a fine-tuned model)."""


def detours(table: SensitivityTable, path: list[PathStep], prefix: int, at_prefix: TriedPoint,
            cost_key: str = "macs") -> list[Assignment]:
    """Single-knob moves on top of ``prefix`` predicted to meet the ``cost_key`` limit, least predicted drop first.

    The path orders steps by drop per saving on the sweep's (unrecovered) drops; after fine-tuning a step
    that saves less can lose far less. ESPCN with widths rounded to 16: the path's first step (conv2 32 -> 16,
    0.54x MACs) lost 0.57 dB after fine-tuning against a 0.2 dB limit, so the search stopped at the original,
    while conv1 64 -> 48 alone (0.76x, inside a 0.8x limit) lost 0.002 dB. The prediction adds the move's
    saving on its curve to the prefix's measured cost.
    """
    limit = next((c.limit for c in at_prefix.checks if c.name == cost_key), None)
    now = at_prefix.costs.get(cost_key)
    if limit is None or now is None:
        return []
    base = assignment_at(path, prefix)
    base_cost = float(getattr(table, f"base_{cost_key}"))
    moves: list[tuple[float, Assignment]] = []
    for knob in table.knobs():
        curve = table.curve(knob)
        current = next((p for p in curve if knob in base and p.amount == base[knob]), None)
        cost0, drop0 = (float(getattr(current, cost_key)), current.drop) if current else (base_cost, 0.0)
        for p in curve:
            saving = cost0 - float(getattr(p, cost_key))
            if saving > 0 and now - saving <= limit:
                moves.append((p.drop - drop0, {**base, knob: p.amount}))
    return [a for _, a in sorted(moves, key=lambda m: m[0])]


def greedy_search(
    table: SensitivityTable,
    budget: Budget,
    measure: Callable[[Assignment], TriedPoint],
    *,
    cost_key: str = "macs",
    max_evaluations: int = 12,
) -> GreedyResult:
    """Find the longest path prefix (most compression) whose *measured* model meets the budget.

    With a drop limit the objective is minimised (take as much as the drop allows, then check cost
    limits); with only cost limits the shortest prefix that meets them keeps the best metric. When the
    longest prefix within the drop misses the cost limits, up to :data:`MAX_DETOURS` single-knob moves off the
    path are measured on top of it (:func:`detours`), and the first that meets the budget is chosen.

    Args:
        table: the sensitivity sweep.
        budget: the constraints.
        measure: builds, fine-tunes and measures the model for an assignment (returns a ``TriedPoint``
            whose ``prefix`` the search fills in).
        cost_key: the cost the allocation saves (``macs``, ``params`` or ``weight_bytes``).
        max_evaluations: bound on real measurements.
    """
    path = allocation_path(table, cost_key)
    tried: dict[int, TriedPoint] = {}
    detoured: list[TriedPoint] = []

    def at(prefix: int) -> TriedPoint:
        if prefix not in tried:
            point = measure(assignment_at(path, prefix))
            tried[prefix] = TriedPoint(prefix, point.assignment, point.metric, point.drop, point.costs, point.checks)
            log.info("greedy: prefix %d/%d drop=%.4f feasible=%s", prefix, len(path), point.drop, tried[prefix].feasible)
        return tried[prefix]

    def drop_ok(p: TriedPoint) -> bool:
        return all(c.met for c in p.checks if c.name == "max_drop")

    def cost_ok(p: TriedPoint) -> bool:
        return all(c.met for c in p.checks if c.name != "max_drop")

    n = len(path)
    if budget.max_drop is not None:
        # Largest prefix whose measured drop is within the limit (drop grows along the path).
        lo, hi = 0, n
        guess = predicted_prefix(path, table, budget)
        if drop_ok(at(guess)):
            lo = guess
        else:
            hi = guess - 1
        while lo < hi and len(tried) < max_evaluations:
            mid = (lo + hi + 1) // 2
            if drop_ok(at(mid)):
                lo = mid
            else:
                hi = mid - 1
        chosen = at(lo)
        if drop_ok(chosen) and not cost_ok(chosen) and lo < n:  # the next step broke the drop, the costs unmet
            seen = [p.assignment for p in tried.values()]
            for assign in [a for a in detours(table, path, lo, chosen, cost_key) if a not in seen][:MAX_DETOURS]:
                if len(tried) + len(detoured) >= max_evaluations:
                    break
                point = measure(assign)
                detoured.append(TriedPoint(lo, point.assignment, point.metric, point.drop, point.costs, point.checks))
                log.info("greedy: detour %s drop=%.4f feasible=%s", assign, point.drop, detoured[-1].feasible)
                if detoured[-1].feasible:
                    chosen = detoured[-1]
                    break
    else:
        # Smallest prefix whose measured costs meet the limits (best metric).
        lo, hi = 0, n
        if not cost_ok(at(n)):
            lo = n
        while lo < hi and len(tried) < max_evaluations:
            mid = (lo + hi) // 2
            if cost_ok(at(mid)):
                hi = mid
            else:
                lo = mid + 1
        chosen = at(lo)
    points = sorted([*tried.values(), *detoured], key=lambda p: p.prefix)
    feasible = [p for p in points if p.feasible]
    if chosen.feasible:
        best = chosen
    elif feasible:
        best = max(feasible, key=lambda p: p.prefix) if budget.max_drop is not None else min(feasible, key=lambda p: p.prefix)
    else:
        best = min(points, key=lambda p: p.violation())
    return GreedyResult(best, best.feasible, path, points)
