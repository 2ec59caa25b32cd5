"""Kept widths under a latency budget: a multiple-choice knapsack over groups and widths (HALP-style).

Each prunable group offers a few kept widths (multiples of the channel block); a width keeps the
importance of its best channels and saves the table's measured milliseconds. :func:`knapsack_widths`
picks one width per group maximising the kept importance with total saving >= the saving needed,
by dynamic programming over savings discretised (rounded **down**, so the true saving of the
answer is at least the discretised one) into ``resolution`` steps of ``need / resolution`` ms.
With integer savings and ``resolution == need`` the answer is the exact optimum.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from slimcnn.errors import ConfigError
from slimcnn.prune._latency_table import LatencyTable, _kept_layer_channels


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
    """False: the table predicts the target cannot be reached; the fastest widths were chosen."""
    macs_ratio: float | None = None
    """Conv/linear MACs of the selection / the original's (exact, from the graph) when a MACs limit was given."""
    macs_target: float | None = None


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
    out: dict[str, int] = {}
    j = steps
    for n, (opt, prev) in zip(reversed(names), reversed(back), strict=True):
        out[n] = options[n][int(opt[j])][0]
        j = int(prev[j])
    return out, True


def candidate_widths(size: int, min_keep: int, block: int) -> list[int]:
    """Kept widths offered for a group: multiples of ``block`` (of 1 for groups under two blocks) and ``size``."""
    step = block if size >= 2 * block else 1
    ws = {w for w in range(step, size + 1, step) if w >= min_keep} | {size}
    return sorted(ws)


def kept_importance(scores: Tensor, fixed: Sequence[int], width: int) -> float:
    """Sum of the ``width`` best mean-normalised scores, fixed channels first (always kept)."""
    s = scores.detach().double().cpu()
    s = s / (s.abs().mean() + 1e-12)
    pri = s.clone()
    if len(fixed):
        pri[torch.tensor(list(fixed), dtype=torch.long)] = math.inf
    order = torch.argsort(pri, descending=True)[:width]
    return float(s[order].sum())


def select_for_latency(table: LatencyTable, scores: Mapping[int, Tensor], target_ratio: float, *,
                       fixed: Mapping[int, Sequence[int]] | None = None, resolution: int = 2000,
                       bonus: Mapping[str, float] | None = None,
                       weights: Mapping[str, float] | None = None) -> LatencySelection:
    """Kept widths per group reaching ``target_ratio`` x the table's latency with the most importance kept.

    Args:
        table: the model's :class:`LatencyTable`.
        scores: ``{group id: Tensor[group size]}`` (e.g. :func:`slimcnn.prune.score_groups`); higher = keep.
        target_ratio: latency target as a fraction of the original, in (0, 1].
        fixed: ``{group id: fixed group channels}`` (always kept).
        resolution: knapsack discretisation steps.
        bonus: ``{group: value per removed group channel}`` added to each width's value (the MACs price of
            :func:`select_for_latency_and_macs`); ``kept_importance`` of the result excludes it.
        weights: ``{group: multiplier of its channels' normalised importance}`` (missing: 1). With the MACs
            one channel carries (:func:`~slimcnn.prune._latency_prune.prune_for_latency_`'s ``objective="macs"``)
            the knapsack keeps the most important compute per millisecond: it cuts the channels that cost the
            most time per MAC instead of the most channels per millisecond.

    Raises:
        ConfigError: ``target_ratio`` outside (0, 1].
    """
    if not 0 < target_ratio <= 1:
        raise ConfigError(f"--latency must be a fraction of the original in (0, 1], e.g. 0.5x; got {target_ratio}")
    need = (1.0 - target_ratio) * table.base_ms
    options: dict[str, list[tuple[int, float, float]]] = {}
    for g in table.groups:
        sc = scores.get(g.group_id, torch.zeros(g.size))
        fx = list((fixed or {}).get(g.group_id, ()))
        wt = (weights or {}).get(g.layer, 1.0)
        options[g.layer] = [(w, wt * kept_importance(sc, fx, w), max(0.0, g.saving(w)))
                            for w in candidate_widths(g.size, g.min_keep, table.block)]
    priced = {n: [(w, v + (bonus or {}).get(n, 0.0) * (table.group(n).size - w), sv) for w, v, sv in opts]
              for n, opts in options.items()}
    widths, feasible = knapsack_widths(priced, need, resolution=resolution)
    value = sum(next(o[1] for o in options[n] if o[0] == w) for n, w in widths.items())
    pruned = {n: w for n, w in widths.items() if w < table.group(n).size}
    return LatencySelection(pruned, table.predict_ratio(pruned), target_ratio, value, feasible)


def select_for_latency_and_macs(table: LatencyTable, scores: Mapping[int, Tensor], target_ratio: float,
                                macs_target: float, macs_of: Callable[[Mapping[str, int]], float],
                                macs_slope: Mapping[str, float], *, fixed: Mapping[int, Sequence[int]] | None = None,
                                resolution: int = 2000, steps: int = 14,
                                weights: Mapping[str, float] | None = None) -> LatencySelection:
    """:func:`select_for_latency` with a second budget: conv/linear MACs at most ``macs_target`` x the original.

    Lagrangian relaxation: each width also earns ``lam * macs_slope[group] * removed channels`` (the MACs one
    removed channel saves with the other groups whole, as a fraction of the model's), and ``lam`` is bisected
    (``steps`` times) for the smallest price at which the exact MACs of the selection, ``macs_of(widths)``, meet
    the target; the latency budget stays a hard constraint of every knapsack.

    Args:
        table: the model's :class:`LatencyTable`.
        scores: ``{group id: Tensor[group size]}``; higher = keep.
        target_ratio: latency target as a fraction of the original, in (0, 1].
        macs_target: MACs target as a fraction of the original, in (0, 1].
        macs_of: exact MACs fraction of ``{group: kept width}`` (groups not listed stay whole).
        macs_slope: ``{group: MACs fraction saved per removed group channel}``.
        fixed: ``{group id: fixed group channels}`` (always kept).
        resolution: knapsack discretisation steps.
        steps: bisection steps on the price.
        weights: per-group importance multipliers, as in :func:`select_for_latency`.

    Returns:
        The selection meeting both budgets with the smallest price found; ``feasible`` is False when the
        latency knapsack is infeasible or no price reaches the MACs target (then the highest price's widths).

    Raises:
        ConfigError: a target outside (0, 1].
    """
    if not 0 < macs_target <= 1:
        raise ConfigError(f"--macs must be a fraction of the original in (0, 1], e.g. 0.5x; got {macs_target}")
    base = select_for_latency(table, scores, target_ratio, fixed=fixed, resolution=resolution, weights=weights)
    scale = max(base.kept_importance, 1.0)  # prices in units of the model's total kept importance

    def at(lam: float) -> tuple[LatencySelection, float]:
        bonus = {g.layer: lam * scale * macs_slope.get(g.layer, 0.0) for g in table.groups}
        sel = select_for_latency(table, scores, target_ratio, fixed=fixed, resolution=resolution, bonus=bonus,
                                 weights=weights)
        return sel, macs_of(sel.widths)

    sel, macs = base, macs_of(base.widths)
    if macs <= macs_target or not base.feasible:
        return _with_macs(sel, macs, macs_target, base.feasible)
    lo, hi = 0.0, 1.0
    sel_hi, macs_hi = at(hi)
    while macs_hi > macs_target and hi < 1e6:
        lo, hi = hi, hi * 8
        sel_hi, macs_hi = at(hi)
    if macs_hi > macs_target:
        return _with_macs(sel_hi, macs_hi, macs_target, False)
    for _ in range(steps):
        mid = (lo + hi) / 2
        s_mid, m_mid = at(mid)
        if m_mid <= macs_target and s_mid.feasible:
            hi, sel_hi, macs_hi = mid, s_mid, m_mid
        else:
            lo = mid
    return _with_macs(sel_hi, macs_hi, macs_target, sel_hi.feasible)


def _with_macs(sel: LatencySelection, macs: float, target: float, feasible: bool) -> LatencySelection:
    return LatencySelection(sel.widths, sel.predicted_ratio, sel.target_ratio, sel.kept_importance,
                            feasible and macs <= target, macs, target)


def keep_counts(graph: object, table: LatencyTable, widths: Mapping[str, int]) -> dict[str, int]:
    """``keep={producer FQN: output channels}`` for :func:`slimcnn.prune.prune_model_` from group widths."""
    by_id = {g.id: g for g in graph.groups()}  # type: ignore[attr-defined]
    keep: dict[str, int] = {}
    for name, w in widths.items():
        g = by_id[table.group(name).group_id]
        for mem in g.producers:
            if mem.layer not in keep:
                keep[mem.layer] = _kept_layer_channels(mem.index, g.size, w)
    return keep
