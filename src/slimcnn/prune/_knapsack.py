"""Kept widths under a latency budget: a multiple-choice knapsack over groups and widths (HALP-style).

Each prunable group offers a few kept widths (multiples of the channel block); a width keeps the
importance of its best channels and saves the table's measured milliseconds. :func:`knapsack_widths`
picks one width per group maximising the kept importance with total saving >= the saving needed,
by dynamic programming over savings discretised (rounded **down**, so the true saving of the
answer is at least the discretised one) into ``resolution`` steps of ``need / resolution`` ms, then
widened greedily while the exact saving still covers the need (the rounding leaves slack).
With integer savings and ``resolution == need`` the answer is the exact optimum. The table's prediction is not
additive (a layer's two sides multiply), so :func:`select_for_latency` solves it again with each group's saving
linearised at the previous answer until the product model agrees.
:func:`select_for_latency_and_budgets` adds MACs and params budgets (at most a fraction of the original
each) by a Lagrangian price per budget on every removed channel.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from slimcnn.errors import ConfigError
from slimcnn.prune._latency_table import LatencyTable, producer_keep


@dataclass(frozen=True)
class CostBudget:
    """A budget of the joint knapsack beside latency: a model cost at most ``target`` x the original's."""

    name: str
    """The cost and its CLI flag without dashes: ``macs`` or ``params``."""
    target: float
    """Fraction of the original, in (0, 1]."""
    of: Callable[[Mapping[str, int]], float]
    """Exact fraction of the original for ``{group: kept width}`` (groups not listed stay whole)."""
    slope: Mapping[str, float]
    """``{group: fraction saved per removed group channel, the other groups whole}``: the Lagrangian's price
    per channel."""


@dataclass(frozen=True)
class LatencySelection:
    """What :func:`select_for_latency` chose."""

    widths: dict[str, int]
    """{group name (first producer FQN): kept group channels}."""
    predicted_ratio: float
    """Table prediction of pruned / original latency."""
    target_ratio: float
    kept_importance: float
    """Sum over groups of the kept channels' normalised importance (a full group counts its size), each group's
    times its ``weights`` entry when weights were given."""
    feasible: bool
    """False: the table predicts the latency target cannot be reached; the fastest widths were chosen."""
    targets: dict[str, float] = field(default_factory=dict)
    """``{budget name: target fraction}`` of the other budgets (:func:`select_for_latency_and_budgets`)."""
    reached: dict[str, float] = field(default_factory=dict)
    """``{budget name: exact fraction of the selection}``; for an unmet budget, the least the knapsack reached
    under the latency budget."""

    @property
    def unmet(self) -> tuple[str, ...]:
        """Names of the budgets beside latency that the selection does not meet."""
        return tuple(n for n, t in self.targets.items() if self.reached[n] > t + 1e-9)

    def shortfall(self, latency: float | None = None) -> str | None:
        """One line naming each budget that cannot be met and the least reached, or None when all are met.

        ``latency``: the target the user asked for (default: this selection's own, the search's aim under it)."""
        if not self.unmet:
            return None
        asked = self.target_ratio if latency is None else latency
        parts = [f"--{n} {self.targets[n]:.3g}x cannot be met together with --latency {asked:.3g}x: "
                 f"the least the knapsack reaches is {self.reached[n]:.3f}x" for n in self.unmet]
        return "; ".join(parts)


def knapsack_widths(options: Mapping[str, Sequence[tuple[int, float, float]]], need: float, *,
                    resolution: int = 2000) -> tuple[dict[str, int], bool]:
    """One option per group maximising total value with total saving at least ``need``.

    Args:
        options: group -> ``[(width, value, saving)]`` (one entry per candidate width).
        need: total saving required (same unit as ``saving``); ``<= 0`` keeps every group's best value.
        resolution: discretisation steps of ``need``.

    Returns:
        ``({group: width}, feasible)``; when infeasible, each group's largest-saving option.
    """
    names = [n for n in options if options[n]]
    if need <= 0:
        return {n: max(options[n], key=lambda o: (o[1], o[0]))[0] for n in names}, True
    steps = int(resolution)
    unit = need / steps
    neg = -math.inf
    dp = np.full(steps + 1, neg)
    dp[0] = 0.0
    back: list[tuple[np.ndarray, np.ndarray]] = []  # per group: chosen option, previous index
    idx = np.arange(steps + 1)
    for n in names:
        new = np.full(steps + 1, neg)
        opt = np.full(steps + 1, -1, dtype=np.int64)
        prev = np.full(steps + 1, -1, dtype=np.int64)
        for oi, (_, value, saving) in enumerate(options[n]):
            k = min(steps, max(0, int(math.floor(saving / unit + 1e-9))))
            cand = dp + value
            m = steps - k  # states j < m move to j + k; the rest saturate at ``steps``
            if m > 0:
                better = cand[:m] > new[k:steps]
                tgt = idx[k:steps][better]
                new[tgt], opt[tgt], prev[tgt] = cand[:m][better], oi, idx[:m][better]
            jt = int(np.argmax(cand[m:])) + m
            if cand[jt] > new[steps]:
                new[steps], opt[steps], prev[steps] = cand[jt], oi, jt
        dp = new
        back.append((opt, prev))
    if not np.isfinite(dp[steps]):
        return {n: max(options[n], key=lambda o: (o[2], -o[0]))[0] for n in names}, False
    chosen: dict[str, int] = {}
    j = steps
    for n, (opt, prev) in zip(reversed(names), reversed(back), strict=True):
        chosen[n] = int(opt[j])
        j = int(prev[j])
    _widen(options, chosen, need)
    return {n: options[n][chosen[n]][0] for n in names}, True


def _widen(options: Mapping[str, Sequence[tuple[int, float, float]]], chosen: dict[str, int], need: float) -> None:
    """Swap options for higher-value ones while the exact total saving still covers ``need`` (in place).

    The dynamic program rounds every saving down, so its answer can save more than needed by up to one step
    per group: a selection saving exactly the need (e.g. uniform widths whose predicted latency is the target)
    looks infeasible to it. Each pass takes the swap with the most value gained per saving given up.
    """
    slack = sum(options[n][i][2] for n, i in chosen.items()) - need
    while True:
        best: tuple[float, str, int] | None = None
        for n, i in chosen.items():
            _, value, saving = options[n][i]
            for k, (_, v, sv) in enumerate(options[n]):
                lost = saving - sv
                if v > value and lost <= slack + 1e-12:
                    rate = (v - value) / max(lost, 1e-12)
                    if best is None or rate > best[0]:
                        best = (rate, n, k)
        if best is None:
            return
        _, n, k = best
        slack -= options[n][chosen[n]][2] - options[n][k][2]
        chosen[n] = k


def candidate_widths(size: int, min_keep: int, block: int, sampled: Sequence[int]) -> list[int]:
    """Kept widths offered for a group: multiples of ``block`` and ``size``; for a group under two blocks, only its
    ``sampled`` (measured) widths and ``size``.

    Inside one block ONNX Runtime pads a conv's channels to the block, so time is not linear between two samples
    there and an interpolated width is over-valued: ResNet-56 at 8x3x32x32 on an AVX-512 CPU (block 16), stage 1's
    inner convs at 12 of 16 channels measured 0.996x (interpolated 0.963x), and knapsacks that took such widths
    measured 0.58x where the table said 0.51x.
    """
    if size < 2 * block:
        return sorted({w for w in sampled if min_keep <= w <= size} | {size})
    ws = {w for w in range(block, size + 1, block) if w >= min_keep} | {size}
    return sorted(ws)


def kept_importance(scores: Tensor, fixed: Sequence[int], widths: Sequence[int]) -> list[float]:
    """Per width, the sum of the ``width`` best mean-normalised scores, fixed channels first (always kept)."""
    s = scores.detach().double().cpu()
    s = s / (s.abs().mean() + 1e-12)
    pri = s.clone()
    if len(fixed):
        pri[torch.tensor(list(fixed), dtype=torch.long)] = math.inf
    best = torch.cumsum(s[torch.argsort(pri, descending=True)], 0)  # one sort for every width
    return [float(best[w - 1]) if w > 0 else 0.0 for w in widths]


def select_for_latency(table: LatencyTable, scores: Mapping[int, Tensor], target_ratio: float, *,
                       fixed: Mapping[int, Sequence[int]] | None = None, resolution: int = 2000,
                       bonus: Mapping[str, float] | None = None,
                       weights: Mapping[str, float] | None = None, rounds: int = 12) -> LatencySelection:
    """Kept widths per group reaching ``target_ratio`` x the table's latency with the most importance kept.

    The table's prediction multiplies a layer's input and output sides (:mod:`~slimcnn.prune._latency_table`),
    so a group's saving depends on the other groups' widths. Each round solves the knapsack with the savings
    linearised at the previous round's answer (:meth:`LatencyTable.savings`; the first round at full width,
    i.e. additive); at a fixed point the linearised savings are the product model's exactly. The best answer the
    product model calls feasible is kept (else the fastest).

    Args:
        table: the model's :class:`LatencyTable`.
        scores: ``{group id: Tensor[group size]}`` (e.g. :func:`slimcnn.prune.score_groups`); higher = keep.
        target_ratio: latency target as a fraction of the original, in (0, 1].
        fixed: ``{group id: fixed group channels}`` (always kept).
        resolution: knapsack discretisation steps.
        bonus: ``{group: value per removed group channel}`` added to each width's value (the Lagrangian prices of
            :func:`select_for_latency_and_budgets`); ``kept_importance`` of the result excludes it.
        weights: ``{group: multiplier of its channels' normalised importance}`` (missing: 1). With the MACs
            one channel carries (:func:`~slimcnn.prune._latency_prune.prune_for_latency_`'s ``objective="macs"``)
            the knapsack keeps the most important compute per millisecond: it cuts the channels that cost the
            most time per MAC instead of the most channels per millisecond.
        rounds: knapsacks solved at most (re-linearising the savings).

    Raises:
        ConfigError: ``target_ratio`` outside (0, 1].
    """
    if not 0 < target_ratio <= 1:
        raise ConfigError(f"--latency must be a fraction of the original in (0, 1], e.g. 0.5x; got {target_ratio}")
    need = (1.0 - target_ratio) * table.base_ms
    values: dict[str, list[tuple[int, float]]] = {}
    for g in table.groups:
        sc = scores.get(g.group_id, torch.zeros(g.size))
        fx = list((fixed or {}).get(g.group_id, ()))
        wt = (weights or {}).get(g.layer, 1.0)
        ws = candidate_widths(g.size, g.min_keep, table.block, g.widths)
        values[g.layer] = [(w, wt * v) for w, v in zip(ws, kept_importance(sc, fx, ws), strict=True)]
    priced = {n: [(w, v + (bonus or {}).get(n, 0.0) * (table.group(n).size - w)) for w, v in opts]
              for n, opts in values.items()}
    best: LatencySelection | None = None
    at: dict[str, list[float]] = {}
    seen: set[tuple[tuple[str, int], ...]] = set()
    for _ in range(max(1, rounds)):
        options = {n: [(w, v, sv) for (w, v), sv in zip(opts, table.savings(n, [w for w, _ in opts], at), strict=True)]
                   for n, opts in priced.items()}
        widths, feasible = knapsack_widths(options, need, resolution=resolution)
        pruned = {n: w for n, w in widths.items() if w < table.group(n).size}
        predicted = table.predict_ratio(pruned)
        value = sum(next(v for ww, v in values[n] if ww == w) for n, w in widths.items())
        sel = LatencySelection(pruned, predicted, target_ratio, value, feasible and predicted <= target_ratio + 1e-9)
        if best is None or _fitter(sel, best):
            best = sel
        key = tuple(sorted(pruned.items()))
        if key in seen and predicted <= target_ratio + 1e-9:
            break
        seen.add(key)
        now = table.kept_sides(pruned)
        at = {n: [(a + b) / 2 for a, b in zip(at.get(n, (1.0, 1.0)), now.get(n, (1.0, 1.0)), strict=True)]
              for n in set(at) | set(now)}  # damped: the undamped point flips between two answers
        need += (predicted - target_ratio) * table.base_ms  # what the linearisation missed, either way
    assert best is not None
    return best


def _fitter(sel: LatencySelection, best: LatencySelection) -> bool:
    """Feasible beats infeasible; then more kept value if feasible, else the faster prediction."""
    if sel.feasible != best.feasible:
        return sel.feasible
    return sel.kept_importance > best.kept_importance if sel.feasible else sel.predicted_ratio < best.predicted_ratio


def select_for_latency_and_budgets(table: LatencyTable, scores: Mapping[int, Tensor], target_ratio: float,
                                   budgets: Sequence[CostBudget], *, fixed: Mapping[int, Sequence[int]] | None = None,
                                   resolution: int = 2000, steps: int = 14, rounds: int = 3,
                                   weights: Mapping[str, float] | None = None) -> LatencySelection:
    """:func:`select_for_latency` with more budgets at once (MACs, params: each at most a fraction of the original).

    Lagrangian relaxation, one price per budget: each removed group channel earns ``sum_k lam_k * slope_k``
    (``slope_k``: the fraction of cost ``k`` one channel of the group saves), the latency budget staying a hard
    constraint of every knapsack. The prices are set by coordinate bisection: each unmet budget's price is
    raised to the smallest that meets it (the others fixed; ``rounds`` passes, since raising one price also
    lowers the other costs), then each price is lowered as far as every budget still holds (the least value
    given up). Exact costs come from ``budget.of``.

    Args:
        table: the model's :class:`LatencyTable`.
        scores: ``{group id: Tensor[group size]}``; higher = keep.
        target_ratio: latency target as a fraction of the original, in (0, 1].
        budgets: the other budgets (distinct names).
        fixed: ``{group id: fixed group channels}`` (always kept).
        resolution: knapsack discretisation steps.
        steps: bisection steps per price.
        rounds: passes raising the unmet budgets' prices.
        weights: per-group importance multipliers, as in :func:`select_for_latency`.

    Returns:
        The selection with ``targets``/``reached`` filled in; when a budget cannot be met under the latency
        budget (``unmet``, :meth:`LatencySelection.shortfall`), the widths at the highest price tried.

    Raises:
        ConfigError: a target outside (0, 1].
    """
    for b in budgets:
        if not 0 < b.target <= 1:
            raise ConfigError(f"--{b.name} must be a fraction of the original in (0, 1], e.g. 0.5x; got {b.target:g}")
    base = select_for_latency(table, scores, target_ratio, fixed=fixed, resolution=resolution, weights=weights)
    scale = max(base.kept_importance, 1.0)  # prices in units of the model's total kept importance

    def at(lams: Sequence[float]) -> LatencySelection:
        bonus = {g.layer: scale * sum(lam * b.slope.get(g.layer, 0.0) for lam, b in zip(lams, budgets, strict=True))
                 for g in table.groups}
        sel = select_for_latency(table, scores, target_ratio, fixed=fixed, resolution=resolution, bonus=bonus,
                                 weights=weights)
        return _with_budgets(sel, budgets, {b.name: b.of(sel.widths) for b in budgets})

    lams = [0.0] * len(budgets)
    cur = at(lams)
    if not cur.feasible:
        return cur
    for _ in range(rounds):
        if not cur.unmet:
            break
        for k, b in enumerate(budgets):
            if b.name not in cur.unmet:
                continue
            ok = _meets(b.name)
            price, sel = _raise_price(at, lams, k, ok)
            if not ok(sel):  # even the highest price misses it: the least reached is the answer's
                return _with_budgets(cur, budgets, cur.reached | {b.name: sel.reached[b.name]})
            lams[k], cur = _bisect_price(at, lams, k, lams[k], price, sel, ok, steps)
    if cur.unmet:
        return cur
    for k in range(len(budgets)):  # give back value: the lowest price of each that keeps every budget
        if lams[k] > 0:
            lams[k], cur = _bisect_price(at, lams, k, 0.0, lams[k], cur, lambda s: s.feasible and not s.unmet,
                                         steps)
    return cur


_MAX_PRICE = 1e6


def _priced(lams: Sequence[float], k: int, price: float) -> list[float]:
    return [price if i == k else v for i, v in enumerate(lams)]


def _meets(name: str) -> Callable[[LatencySelection], bool]:
    return lambda s: s.feasible and name not in s.unmet


def _raise_price(at: Callable[[Sequence[float]], LatencySelection], lams: Sequence[float], k: int,
                 ok: Callable[[LatencySelection], bool]) -> tuple[float, LatencySelection]:
    """The first price of budget ``k`` at which ``ok`` holds, in x8 steps from ``max(1, 2 lam_k)`` up to
    :data:`_MAX_PRICE` (returned, with its selection, when none does)."""
    hi = max(1.0, 2 * lams[k])
    while True:
        sel = at(_priced(lams, k, hi))
        if ok(sel) or hi >= _MAX_PRICE:
            return hi, sel
        hi = min(hi * 8, _MAX_PRICE)


def _bisect_price(at: Callable[[Sequence[float]], LatencySelection], lams: Sequence[float], k: int, lo: float,
                  hi: float, sel_hi: LatencySelection, ok: Callable[[LatencySelection], bool],
                  steps: int) -> tuple[float, LatencySelection]:
    """The smallest price of budget ``k`` in ``(lo, hi]`` found by bisection at which ``ok`` holds (it does at
    ``hi``), with its selection."""
    for _ in range(steps):
        mid = (lo + hi) / 2
        sel = at(_priced(lams, k, mid))
        if ok(sel):
            hi, sel_hi = mid, sel
        else:
            lo = mid
    return hi, sel_hi


def _with_budgets(sel: LatencySelection, budgets: Sequence[CostBudget], reached: dict[str, float]) -> LatencySelection:
    return dataclasses.replace(sel, targets={b.name: b.target for b in budgets}, reached=reached)


def keep_counts(graph: object, table: LatencyTable, widths: Mapping[str, int]) -> dict[str, int]:
    """``keep={producer FQN: output channels}`` for :func:`slimcnn.prune.prune_model_` from group widths."""
    by_id = {g.id: g for g in graph.groups()}  # type: ignore[attr-defined]
    keep: dict[str, int] = {}
    for name, w in widths.items():
        g = by_id[table.group(name).group_id]
        keep.update(producer_keep(g.producers, g.size, w, g.fixed_set))
    return keep
