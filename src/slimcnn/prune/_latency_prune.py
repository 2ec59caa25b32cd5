"""Prune to a latency target: latency table -> knapsack -> ``prune_model_(keep=...)``, checked by measuring.

:func:`prune_for_latency_` builds (or loads) the model's :class:`~slimcnn.prune._latency_table.LatencyTable`,
scores the groups with any criterion, picks kept widths with the knapsack, prunes a copy and times it whole,
interleaved with the original. The table's prediction may miss (a few % either way on this project's VM),
so the search aims :data:`MARGIN` under the target (the written model is timed again, and a try right at the
target fails that second timing half the time): when the measured ratio is above the aim the knapsack's target is
lowered, when it is more than :data:`CLOSE_ENOUGH` below it is raised (compute left on the table), and the selection
redone (``tries`` in all):
proportionally (``target / measured``, less 0.01 after a miss) until one try met the target and one missed, then
by linear interpolation between the met and the missed try with the closest knapsack targets. A try the table
called infeasible (its fastest widths) that still met the target raises the next target to just above the table's
floor, its prediction for that try: no lower target changes the pick. A try whose check contradicts an earlier
one (predicted faster, measured slower by more than :data:`NOISE`, or the reverse) is timed again together with
that one, and both keep the new measurements (at most one re-timing per try taken; the tries' records keep their
first measurement as ``first_measured_ratio``). The best try (meeting the aim with the
most kept value, else the fastest measured) is applied to ``model``. The first try's knapsack target is the aim itself: started at the
target, 3 of the 5 models of ``benchmarks/latency_aware.py`` missed the aim on their first try at 0.5x, and each
retry cut MACs faster than latency (README, "Pruning to a latency target").

The objective (``objective``) is the importance kept per group, each channel's normalised importance times the
MACs one channel of its group carries (``"macs"``, default: at a latency budget, keep the most compute, i.e.
cut the channels that cost the most time per MAC) or unweighted (``"importance"``, HALP's value: keeps the most
channels, and so removes many MACs per millisecond on models whose cheap channels are the slow ones).
The knapsack normalises each group's scores by their mean, since norms are on each layer's own scale. Taylor
scores (an estimate of the loss change, HALP's criterion) are normalised too: weighting each group back by its
mean score cut ResNet-56's stage-2 residual stream to 8 of 32 channels at 0.41x latency (19.4 % top-1 after
fine-tuning, against 69.2 % for uniform widths; benchmarks/latency_aware.py), since a first-order estimate does
not see what a whole stage at a quarter width costs.
"""

from __future__ import annotations

import copy
import logging
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from torch import Tensor, nn

from slimcnn.errors import ConfigError
from slimcnn.graph import ChannelGraph, trace
from slimcnn.prune._api import PruneOutcome, prune_model_
from slimcnn.prune._compensate import compensation_mode
from slimcnn.prune._criteria import ScoreContext, score_groups
from slimcnn.prune._knapsack import (
    CostBudget,
    LatencySelection,
    keep_counts,
    select_for_latency,
    select_for_latency_and_budgets,
)
from slimcnn.prune._latency_build import build_latency_table
from slimcnn.prune._latency_table import LatencyTable
from slimcnn.prune._select import removal_for_keep

log = logging.getLogger(__name__)

DRIFT = 1.25
"""The original timed this much slower (or faster) in the checks than when its in-graph table was built says the
machine has changed under the table (another tenant, a clock change): its ratios may not hold. On this project's
VM the two agreed within 1.1x on five models in a steady state and differed 1.6-1.7x when the VM ran at its
slower of two speeds."""

CLOSE_ENOUGH = 0.02
"""A try measured at most this much (absolute ratio) under the searched target ends the search."""
MARGIN = 0.01
"""The search aims this much (absolute ratio) under the target asked for: the written model is timed again, and
a try measured right at the target passed that second timing about half the time (ResNet-20 at 8x3x32x32,
``--latency 0.7x``: kept try 0.697x, the written model 0.714x)."""
NOISE = 0.03
"""Two checks of different picks whose measurements disagree with their predictions' order by more than this
(relative) are timed again together: the spread of one model's check on this project's VM is 1-3 %, and a
sub-millisecond model's check jumped by 40 % (mobileone_s0 at 128x128: a pick predicted 0.56x measured 0.87x
after one predicted 0.59x measured 0.61x; the search then cut to 0.26x MACs)."""
PREDICTION_STEP = 0.005
"""Predictions closer than this (absolute ratio) are the same pick for :data:`NOISE`."""
OBJECTIVES = ("macs", "importance")
TRIES = 4
"""Selections timed at most by default (``slimcnn prune --tries``)."""
FIXED_SHARE = 0.5
"""A result names where the time goes when the table predicts at least this ratio with every group narrowest."""


@dataclass(frozen=True)
class LatencyPruneResult:
    """What :func:`prune_for_latency_` did."""

    outcome: PruneOutcome
    selection: LatencySelection
    """The applied selection; ``selection.predicted_ratio`` is the table's prediction for it."""
    table: LatencyTable
    measured_ratio: float
    """Pruned / original median latency of the applied try, timed whole and interleaved."""
    table_seconds: float
    target_ratio: float
    """The latency target asked for (``selection.target_ratio`` is the knapsack's, after rescaling)."""
    attempts: tuple[dict[str, Any], ...] = field(default_factory=tuple)
    """Each try: knapsack target, predicted and measured ratio, the original's ms in that timing, feasible; the
    applied one has ``kept: True``."""

    @property
    def table_drift(self) -> float | None:
        """The original's median ms in the checks over its time when the in-graph table was built (``whole_ms``, else
        the node times' sum ``base_ms``); ``None`` for tables of layers timed alone."""
        ms = [a["original_ms"] for a in self.attempts if "original_ms" in a]
        if self.table.source != "in-graph" or not ms or self.table.built_ms <= 0:
            return None
        return statistics.median(ms) / self.table.built_ms

    def fixed_time_message(self) -> str | None:
        """One line when pruning can shorten little of the model's time, else ``None``: the target is below what the
        table reaches, or every group at its narrowest still leaves :data:`FIXED_SHARE` or more of the time (a
        detector's NMS) and the target takes more than half of what pruning can remove."""
        fastest, sel = self.table.fastest_ratio(), self.selection
        where = (f"pruning every channel group to its narrowest leaves {fastest:.0%} of the original's time in the "
                 "latency table (nodes no group shortens: layers outside every group, post-processing such as a "
                 "detector's NMS, each node's dispatch)")
        if not sel.feasible and sel.predicted_ratio > self.target_ratio:
            return (f"the latency table predicts at best {sel.predicted_ratio:.3f}x, above the {self.target_ratio:.3f}x "
                    f"target; pruned to the fastest widths it offers: {where}")
        needed, removable = 1.0 - self.target_ratio, 1.0 - fastest
        if fastest < FIXED_SHARE or needed <= removable / 2:
            return None
        macs = self.outcome.macs_after / max(self.outcome.macs_before, 1)
        return (f"{where}, so a {self.target_ratio:.3f}x target takes {min(1.0, needed / removable):.0%} of what "
                f"pruning can remove (MACs kept {macs:.3f}x)")

    def details(self) -> dict[str, Any]:
        """JSON-ready summary for a result's ``details``."""
        t = self.table
        return {"latency_target": self.target_ratio, "latency_knapsack_target": self.selection.target_ratio,
                "latency_table_drift": self.table_drift,
                "latency_predicted_ratio": self.selection.predicted_ratio, "latency_check_ratio": self.measured_ratio,
                "latency_table": {"groups": len(t.groups), "timings": t.timings, "base_ms": t.base_ms,
                                  "whole_ms": t.whole_ms, "source": t.source,
                                  "runtime": t.runtime, "threads": t.threads, "block": t.block,
                                  "seconds": round(self.table_seconds, 3), "key": t.key},
                "latency_widths": self.selection.widths, "latency_attempts": list(self.attempts),
                **{f"latency_{n}_target": t for n, t in self.selection.targets.items()},
                **{f"latency_{n}_selected": v for n, v in self.selection.reached.items()}}


def prune_for_latency_(
    model: nn.Module,
    example_input: Any,
    target_ratio: float,
    *,
    criterion: str = "l1",
    exclude: Sequence[str] = (),
    reduce: Literal["sum", "mean", "max"] = "sum",
    task: Any = None,
    calib: int = 8,
    seed: int = 0,
    source: str = "",
    tries: int = TRIES,
    runs: int = 20,
    threads: int | None = None,
    cache: bool = True,
    macs: float | None = None,
    params: float | None = None,
    objective: Literal["macs", "importance"] = "macs",
    compensate: bool | str = False,
    runtime: Literal["onnxruntime", "torch"] = "onnxruntime",
) -> LatencyPruneResult:
    """Prune ``model`` in place so that its measured latency on ``runtime`` is at most ``target_ratio`` x the original.

    Args:
        model: the model (pruned in place; unchanged when a step raises).
        example_input: input tensor; its shape is the one timed.
        target_ratio: latency target as a fraction of the original, in (0, 1).
        criterion: a :data:`slimcnn.prune.CRITERIA` name ranking channels (and groups, by kept importance).
        exclude: fnmatch patterns of layers whose groups stay.
        reduce: group score reduction.
        task: task for data-driven criteria.
        calib: calibration batches for data-driven criteria.
        seed: seed of the random criterion.
        source: model source recorded in the plan.
        tries: selections measured at most (>= 1).
        runs: interleaved timing rounds per check (at least: a check goes on until each model has been timed for
            :data:`~slimcnn.measure.CHECK_SECONDS`).
        threads: the runtime's intra-op threads (``None`` = physical cores).
        cache: use the latency-table cache.
        macs: also keep conv/linear MACs at most this fraction of the original (exact, from the graph; see
            :func:`~slimcnn.prune._knapsack.select_for_latency_and_budgets`).
        params: also keep the parameter count at most this fraction of the original (exact, from the graph's
            kept channels); with ``macs``, all three budgets at once.
        objective: ``"macs"`` (importance weighted by each group's MACs per channel) or ``"importance"``
            (see the module notes).
        runtime: ``"onnxruntime"`` (CPU, default) or ``"torch"`` (PyTorch eager, CPU): where the table is measured
            (inside the whole model either way, :func:`~slimcnn.prune._latency_build.build_latency_table`) and the
            tries are timed.
        compensate: ``"mean"`` or ``"lsq"`` compensation of the layers reading removed channels, applied once to
            the chosen widths (as :func:`~slimcnn.prune.prune_model_`; needs ``task``). The timed tries skip it:
            it changes weights, not shapes.

    Returns:
        A :class:`LatencyPruneResult`; check ``measured_ratio <= target_ratio`` (not guaranteed) and
        ``selection.unmet`` (MACs/params budgets the knapsack cannot meet under the latency budget:
        ``selection.shortfall()`` says which and how close it came).

    Raises:
        ConfigError: ``target_ratio``, ``macs`` or ``params`` outside (0, 1), ``tries < 1``, an unknown
            ``runtime``, ``objective`` or ``compensate`` mode, or compensation without ``task``.
    """
    from slimcnn.measure import CHECK_SECONDS, compare_latency

    if not 0 < target_ratio < 1:
        raise ConfigError(f"--latency must be a fraction of the original below 1, e.g. 0.5x; got {target_ratio:g}")
    for flag, value in (("macs", macs), ("params", params)):
        if value is not None and not 0 < value <= 1:
            raise ConfigError(f"--{flag} must be a fraction of the original in (0, 1], e.g. 0.5x; got {value:g}")
    if tries < 1:
        raise ConfigError(f"tries must be >= 1, got {tries}")
    if objective not in OBJECTIVES:
        raise ConfigError(f"unknown latency objective '{objective}'; use one of {', '.join(OBJECTIVES)}")
    if (mode := compensation_mode(compensate)) and task is None:  # refused before the table is timed
        raise ConfigError(f"{mode} compensation (--compensate {mode}) needs calibration data: pass --task and --data")
    original = copy.deepcopy(model).eval()
    t0 = time.perf_counter()
    graph = trace(original, example_input)
    table = build_latency_table(original, example_input, exclude=exclude, graph=graph, runtime=runtime, threads=threads,
                                cache=cache)
    table_s = time.perf_counter() - t0
    scores = score_groups(ScoreContext(original, graph, example_input, task, calib, seed, []), criterion, reduce=reduce)
    fixed = {g.id: [i for i, _ in g.fixed] for g in graph.groups()}
    aim = max(target_ratio / 2, target_ratio - MARGIN)
    knapsack_target = aim
    attempts: list[dict[str, Any]] = []
    picks: list[tuple[LatencySelection, dict[str, int]]] = []
    costs = _CostCounter(original, graph, table, scores)
    slope = costs.slopes("macs")
    weights = _objective_weights(slope) if objective == "macs" else None
    budgets = [CostBudget(n, t, lambda w, n=n: costs.fraction(n, w), costs.slopes(n))
               for n, t in (("macs", macs), ("params", params)) if t is not None]

    def pruned_copy(keep: dict[str, int]) -> nn.Module:
        trial = copy.deepcopy(original)
        if keep:
            prune_model_(trial, example_input, criterion=criterion, keep=keep, round_to=table.block, exclude=exclude,
                         reduce=reduce, task=task, calib=calib, seed=seed, graph=graph)
        return trial

    def ratios(trials: dict[str, nn.Module]) -> tuple[dict[str, float], float]:
        lat = compare_latency({"original": original, **trials}, example_input, runtime=runtime, runs=runs,
                              min_seconds=CHECK_SECONDS, warmup=3, threads=threads)
        base = max(lat["original"].median_ms, 1e-12)
        return {n: lat[n].median_ms / base for n in trials}, lat["original"].median_ms

    for _ in range(tries):
        if budgets:
            sel = select_for_latency_and_budgets(table, scores, knapsack_target, budgets, fixed=fixed,
                                                 weights=weights)
        else:
            sel = select_for_latency(table, scores, knapsack_target, fixed=fixed, weights=weights)
        keep = keep_counts(graph, table, sel.widths)
        trial = pruned_copy(keep)
        measured_now, original_ms = ratios({"pruned": trial})
        attempts.append({"knapsack_target": knapsack_target, "predicted_ratio": sel.predicted_ratio,
                         "measured_ratio": measured_now["pruned"], "original_ms": original_ms,
                         "feasible": sel.feasible, "kept_value": sel.kept_importance,
                         **{f"{n}_ratio": v for n, v in sel.reached.items()}})
        picks.append((sel, keep))
        if (earlier := _contradicted(attempts)) is not None:
            # two checks that cannot both be right (the pick predicted faster measured slower): time the two again
            # side by side, and let that one run decide (sub-millisecond models jump between two checks)
            again, again_ms = ratios({"earlier": pruned_copy(picks[earlier][1]), "pruned": trial})
            for i, key in ((earlier, "earlier"), (len(attempts) - 1, "pruned")):
                attempts[i].setdefault("first_measured_ratio", attempts[i]["measured_ratio"])
                attempts[i] |= {"measured_ratio": again[key], "original_ms": again_ms}  # one timing's pair
        measured = attempts[-1]["measured_ratio"]
        if (aim - CLOSE_ENOUGH <= measured <= aim) or (measured > aim and not sel.feasible):
            break
        knapsack_target = _next_knapsack_target(attempts, aim)
        if not 0 < knapsack_target < 1:
            break
    best = 0
    for i in range(1, len(picks)):
        if _better(picks[i][0], attempts[i]["measured_ratio"], picks[best][0], attempts[best]["measured_ratio"], aim):
            best = i
    (sel, keep), measured = picks[best], attempts[best]["measured_ratio"]
    attempts[best]["kept"] = True
    outcome = prune_model_(model, example_input, criterion=criterion, keep=keep, round_to=table.block, exclude=exclude,
                           reduce=reduce, task=task, calib=calib, seed=seed, source=source, graph=graph,
                           compensate=compensate)
    result = LatencyPruneResult(outcome, sel, table, measured, table_s, target_ratio, tuple(attempts))
    if result.table_drift is not None and not 1 / DRIFT <= result.table_drift <= DRIFT:
        log.warning("%s", drift_message(result))
    return result


def drift_message(result: LatencyPruneResult) -> str:
    """One line: the original's time now and when the table was built, and what to do."""
    now = (result.table_drift or 0.0) * result.table.built_ms
    return (f"the original ran at {now:.3g} ms in these timings but {result.table.built_ms:.3g} ms when its latency "
            f"table was built ({result.table_drift:.2f}x): the machine is busier or clocked differently now, so the "
            "table's predictions may not hold; time on an idle machine, or delete the table cache "
            "(latency_tables.json under $SLIMCNN_CACHE_DIR or ~/.cache/slimcnn) to rebuild it")


def _better(sel: LatencySelection, measured: float, best_sel: LatencySelection, best_measured: float,
            target: float) -> bool:
    """A try beats the best so far: it meets the MACs/params budgets and the best does not, else it meets the
    latency target and the best does not, else both meet it and it keeps more value, or neither and it is
    faster."""
    met, best_met = (not sel.unmet, measured <= target), (not best_sel.unmet, best_measured <= target)
    if met != best_met:
        return met > best_met
    return sel.kept_importance > best_sel.kept_importance if met[1] else measured < best_measured


def _contradicted(attempts: Sequence[dict[str, Any]]) -> int | None:
    """The first earlier try the last one contradicts, if any: one predicted faster (by ``PREDICTION_STEP``) but
    measured slower by more than ``NOISE``, or the other way round."""
    last = attempts[-1]
    for i, a in enumerate(attempts[:-1]):
        faster, slower = (last, a) if last["predicted_ratio"] < a["predicted_ratio"] else (a, last)
        if (slower["predicted_ratio"] - faster["predicted_ratio"] > PREDICTION_STEP
                and faster["measured_ratio"] > slower["measured_ratio"] * (1 + NOISE)):
            return i
    return None


def _next_knapsack_target(attempts: Sequence[dict[str, Any]], target: float) -> float:
    """The knapsack target of the next try from the measured ones (see the module notes)."""
    met = [a for a in attempts if a["measured_ratio"] <= target]
    missed = [a for a in attempts if a["measured_ratio"] > target]
    if met and missed:  # bracketed: interpolate between the closest knapsack targets on each side
        # by knapsack target, not by measurement: a try whose measurement fell outside its bracket (noise: a higher
        # target measured faster) would otherwise leave the bracket as it was and the same target be tried again
        hi = min(missed, key=_reached)
        below = [a for a in met if _reached(a) < _reached(hi)]
        if below:
            lo = max(below, key=_reached)
        else:  # noise put every met try above a missed one: the closest measurements on each side
            lo = max(met, key=lambda a: a["measured_ratio"])
            hi = min(missed, key=lambda a: a["measured_ratio"])
        aim = target - CLOSE_ENOUGH / 2
        span = hi["measured_ratio"] - lo["measured_ratio"]
        frac = (aim - lo["measured_ratio"]) / span if span > 1e-12 else 0.0
        return _reached(lo) + max(0.0, min(1.0, frac)) * (hi["knapsack_target"] - _reached(lo))
    last = attempts[-1]
    if not last.get("feasible", True) and not missed:
        # the table called the target unreachable and the fastest widths it offers ran under the target anyway: its
        # floor is pessimistic, and no lower knapsack target changes the pick. Just above that floor is the least
        # pruning the table calls feasible (a proportional step from the floor's measurement overshot: PyTorch
        # eager efficientnet_b0, 0.35x measured at the floor, then a 0.68x target, 0.69x measured)
        return _reached(last) + CLOSE_ENOUGH / 2
    step = last["knapsack_target"] * target / max(last["measured_ratio"], 1e-12)
    return step - 0.01 if missed else step  # a step past timing noise (1-3 %) after a miss


def _reached(attempt: dict[str, Any]) -> float:
    """The knapsack target a try effectively had: an infeasible one stopped at the table's floor, its prediction."""
    if attempt.get("feasible", True):
        return float(attempt["knapsack_target"])
    return max(float(attempt["knapsack_target"]), float(attempt["predicted_ratio"]))


def _objective_weights(slope: dict[str, float]) -> dict[str, float]:
    """``{group: MACs per channel / the groups' mean}``: the ``"macs"`` objective's importance weights."""
    mean = sum(slope.values()) / max(len(slope), 1)
    return {g: v / mean if mean > 0 else 1.0 for g, v in slope.items()}


class _CostCounter:
    """Exact conv/linear MACs and parameter counts of group widths, as fractions of the original's.

    MACs come from the graph; parameters from each traced layer's tensors scaled by its kept channels: a
    conv/linear weight by kept outputs x kept inputs (outputs only for grouped convs, which keep their
    per-group input width), a bias or any per-channel tensor (norms, PReLU) by its kept channels; parameters
    outside traced layers stay.
    """

    def __init__(self, model: nn.Module, graph: ChannelGraph, table: LatencyTable, scores: dict[int, Tensor]) -> None:
        self.graph, self.table, self.scores = graph, table, scores
        modules = dict(model.named_modules())
        self._params = [(f, rec, [(n, p.numel()) for n, p in modules[f].named_parameters(recurse=False)])
                        for f, rec in graph.layers.items() if f in modules]
        self._base = {"macs": max(graph.estimate_macs(), 1),
                      "params": max(sum(p.numel() for p in model.parameters()), 1)}
        self._traced_params = self._count_params(set())
        self._memo: dict[tuple[tuple[str, int], ...], set[int]] = {}

    def fraction(self, cost: str, widths: Mapping[str, int]) -> float:
        """``cost`` (``macs`` or ``params``) of the model pruned to ``{group: kept width}`` / the original's."""
        key = tuple(sorted(widths.items()))
        if key not in self._memo:
            keep = keep_counts(self.graph, self.table, widths)
            self._memo[key] = (self.graph.removed_roots(removal_for_keep(self.graph, self.scores, keep,
                                                                         round_to=self.table.block))
                               if keep else set())
        return self._of_removed(cost, self._memo[key])

    def slopes(self, cost: str) -> dict[str, float]:
        """``{group: cost fraction one removed channel saves, the other groups whole}`` (the group's mean)."""
        roots: dict[int, set[int]] = {}
        for r, (gid, _k) in self.graph.atom.items():
            roots.setdefault(gid, set()).add(r)
        return {g.layer: (1.0 - self._of_removed(cost, roots.get(g.group_id, set()))) / max(g.size, 1)
                for g in self.table.groups}

    def _of_removed(self, cost: str, removed: set[int]) -> float:
        if cost == "macs":
            return self.graph.estimate_macs(removed) / self._base["macs"]
        return (self._base["params"] - self._traced_params + self._count_params(removed)) / self._base["params"]

    def _count_params(self, removed: set[int]) -> int:
        kept = self.graph.kept(removed)
        total = 0
        for f, rec, sizes in self._params:
            n_out, n_in = rec.n_out, len(rec.in_rep)
            k_out, k_in = (len(c) for c in kept[f])
            for name, size in sizes:
                if rec.kind in _WEIGHTED and name == "weight" and rec.groups == 1 and n_out and n_in:
                    total += size // (n_out * n_in) * k_out * k_in
                elif rec.kind in _WEIGHTED and n_out and size % n_out == 0:  # grouped weight, bias
                    total += size // n_out * k_out
                elif rec.kind in _PER_CHANNEL and n_in and size % n_in == 0:
                    total += size // n_in * k_in
                else:
                    total += size
        return total


_WEIGHTED = ("conv", "convt", "linear")
_PER_CHANNEL = ("bn", "gn", "in", "prelu")
