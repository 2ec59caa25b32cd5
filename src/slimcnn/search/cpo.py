"""Liu et al.'s computation–performance optimisation (CPO), faithfully.

C.-T. Liu et al., "Computation-Performance Optimization of Convolutional Neural Networks with
Redundant Kernel Removal", ISCAS 2018 (https://arxiv.org/abs/1705.10748), and its TCAS-I 2019
extension. See ``PAPERS.md`` §1.3: probe every layer at r = 0.5 (with retraining) to get its
performance sensitivity PS_i = D_i / (0.5·W_i·H_i·C_i); take layers least-sensitive first; raise
r 0.5 → 0.75 → 0.875 …, retraining and measuring the validation drop at each step; step back to
the midpoint when the drop exceeds the target; move on when PS_i exceeds the runner-up's PS;
recompute PS of layers whose inputs shrank.

The algorithm only talks to an :class:`CPOOracle`, so it is unit-tested with a synthetic oracle and
runs unchanged on real models (where ``drop`` prunes, retrains and evaluates).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Protocol

from slimcnn.errors import ConfigError

log = logging.getLogger(__name__)


class CPOOracle(Protocol):
    """What CPO needs to know about a model.

    An oracle may also offer ``drops(list_of_ratios) -> list[float]``: the drops of independent trials
    measured at once (CPO's probes; :class:`~slimcnn.search.prune_oracle.PruneOracle` shards them over ranks).
    """

    def drop(self, ratios: dict[str, float]) -> float:
        """Validation drop after removing ``ratios[layer]`` of each layer's filters (and retraining)."""
        ...

    def filter_size(self, layer: str, ratios: dict[str, float]) -> float:
        """W·H·C of one filter of ``layer`` — C shrinks when the layers feeding it are pruned."""
        ...

    def filters(self, layer: str) -> int:
        """Number of filters N of ``layer`` in the original model."""
        ...

    def cost(self, ratios: dict[str, float]) -> float:
        """Computation (MACs) of the model pruned by ``ratios`` (no retraining needed)."""
        ...

    def accept(self, ratios: dict[str, float]) -> None:
        """CPO fixed a layer: every later query extends ``ratios`` (earlier states can be forgotten)."""
        ...


@dataclass(frozen=True)
class CPOStep:
    """One evaluation CPO made (the log the paper's procedure can be checked against)."""

    layer: str
    ratio: float
    drop: float
    ps: float | None
    action: str
    """``probe``, ``raise``, ``step_back``, ``switch`` (runner-up is now less sensitive), ``exceeded``,
    ``budget``, ``no_filters_left``."""


@dataclass
class CPOResult:
    """Final per-layer reducing factors and the step log."""

    ratios: dict[str, float]
    drop: float
    steps: list[CPOStep] = field(default_factory=list)
    order: list[str] = field(default_factory=list)
    met: bool = True
    evaluations: int = 0


def removed(ratio: float, n: int) -> int:
    """Filters removed at reducing factor ``ratio`` (never all of them)."""
    return min(n - 1, int(math.floor(ratio * n + 1e-9)))


def cpo_search(
    oracle: CPOOracle,
    layers: list[str],
    *,
    max_drop: float | None = None,
    macs_budget: float | None = None,
    probe_ratio: float = 0.5,
) -> CPOResult:
    """Run CPO in either direction.

    Args:
        oracle: measures drops (with retraining), filter sizes and costs.
        layers: prunable layers (the 1-filter output layer excluded by the caller).
        max_drop: drop target D_exp → least computation (method b).
        macs_budget: computation budget → best metric (method a); stops once the cost fits.
        probe_ratio: the probing reducing factor (0.5 in the paper).

    Returns:
        The reducing factors, the final drop and the step log.
    """
    if (max_drop is None) == (macs_budget is None):
        raise ConfigError("CPO needs exactly one target: --max-drop (least computation) or --macs (best metric)")
    steps: list[CPOStep] = []
    evaluations = 0

    def measure(ratios: dict[str, float]) -> float:
        nonlocal evaluations
        evaluations += 1
        return oracle.drop(ratios)

    probe_drop: dict[str, float] = {}
    ps: dict[str, float] = {}
    probes = [{layer: probe_ratio} for layer in layers]
    measure_all = getattr(oracle, "drops", None)  # the probes are independent: an oracle may measure them at once
    if measure_all is not None:
        evaluations += len(probes)
        drops = list(measure_all(probes))
    else:
        drops = [measure(p) for p in probes]
    for layer, d in zip(layers, drops, strict=True):
        probe_drop[layer] = d
        ps[layer] = d / (probe_ratio * oracle.filter_size(layer, {}))
        steps.append(CPOStep(layer, probe_ratio, d, ps[layer], "probe"))
    remaining = sorted(layers, key=lambda name: ps[name])
    order: list[str] = []
    ratios: dict[str, float] = {}
    current_drop = 0.0
    done = False
    while remaining and not done:
        layer = remaining.pop(0)
        order.append(layer)
        n = oracle.filters(layer)
        runner = remaining[0] if remaining else None
        r_prev, d_prev = 0.0, current_drop
        accepted, d_accepted = 0.0, current_drop
        r = probe_ratio
        while True:
            if removed(r, n) <= removed(r_prev, n):
                steps.append(CPOStep(layer, r_prev, d_prev, None, "no_filters_left"))
                break
            trial = {**ratios, layer: r}
            if macs_budget is not None and oracle.cost(trial) <= macs_budget:
                r = _smallest_ratio_within(oracle, ratios, layer, n, r_prev, r, macs_budget)
                d = measure({**ratios, layer: r})
                accepted, d_accepted = r, d
                steps.append(CPOStep(layer, r, d, None, "budget"))
                done = True
                break
            d = measure(trial)
            if max_drop is not None and d > max_drop:
                steps.append(CPOStep(layer, r, d, None, "exceeded"))
                hi = r
                while True:
                    mid = (r_prev + hi) / 2
                    if removed(mid, n) <= removed(r_prev, n):
                        break
                    d_mid = measure({**ratios, layer: mid})
                    steps.append(CPOStep(layer, mid, d_mid, None, "step_back"))
                    if d_mid <= max_drop:
                        accepted, d_accepted = mid, d_mid
                        break
                    hi = mid
                break
            accepted, d_accepted = r, d
            ps_now = (d - d_prev) / ((r - r_prev) * oracle.filter_size(layer, ratios))
            if runner is not None and ps_now > ps[runner]:
                steps.append(CPOStep(layer, r, d, ps_now, "switch"))
                break
            steps.append(CPOStep(layer, r, d, ps_now, "raise"))
            r_prev, d_prev = r, d
            r = r + (1.0 - r) / 2
        if accepted > 0:
            before = {name: oracle.filter_size(name, ratios) for name in remaining}
            ratios[layer] = accepted
            current_drop = d_accepted
            oracle.accept(dict(ratios))
            for name in remaining:  # PS_{i+1} with its reduced input channels C_{i+1}
                size = oracle.filter_size(name, ratios)
                if size != before[name]:
                    ps[name] = probe_drop[name] / (probe_ratio * size)
            remaining.sort(key=lambda name: ps[name])
        log.info("cpo: %s r=%.4f drop=%.4f", layer, accepted, current_drop)
    met = True
    if macs_budget is not None:
        met = oracle.cost(ratios) <= macs_budget
    return CPOResult(ratios, current_drop, steps, order, met, evaluations)


def _smallest_ratio_within(
    oracle: CPOOracle, ratios: dict[str, float], layer: str, n: int, lo: float, hi: float, budget: float
) -> float:
    """Smallest whole-filter ratio in (lo, hi] whose cost fits ``budget`` (cost is monotone in r)."""
    k_lo, k_hi = removed(lo, n), removed(hi, n)
    while k_hi - k_lo > 1:
        k_mid = (k_lo + k_hi) // 2
        if oracle.cost({**ratios, layer: k_mid / n}) <= budget:
            k_hi = k_mid
        else:
            k_lo = k_mid
    return k_hi / n
