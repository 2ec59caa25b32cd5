"""What compress counts: each model's cost as its written file stores it, and each stage's limits."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from torch import nn

from slimcnn.search._stored import stored_cost
from slimcnn.search.budget import Amount, Budget
from slimcnn.types import Cost

if TYPE_CHECKING:
    from slimcnn.compress._run import CompressSpec


def target_ratios(budget: Budget, base_cost: Cost) -> dict[str, float]:
    """Each target as a fraction of the original where that needs no timing (an absolute latency needs one)."""
    out = {}
    for key, amount in budget.limits.items():
        if amount.relative:
            out[key] = amount.value
        elif key != "latency_ms":
            out[key] = amount.value / max(float(getattr(base_cost, key)), 1.0)
    return out


def stage_limits(owned: set[str], budget: Budget, base_cost: Cost, current: nn.Module, original: nn.Module, x: Any,
                 spec: CompressSpec, factors: dict[str, float] | None = None, kmeans_bits: dict[str, int] | None = None,
                 kernel_layers: Sequence[str] = ()) -> dict[str, Amount]:
    """The stage's limits relative to its input model (so latency is compared within one run; params and MACs
    counted as ``base_cost`` counts them, without the all-zero kernels of ``kernel_layers`` and the k-means
    layers); a latency target a later int8 stage scales by a factor is divided by that factor."""
    limits: dict[str, Amount] = {}
    if not owned:
        return limits
    if factors:
        budget = Budget(budget.max_drop, {k: dataclasses.replace(a, value=a.value / factors[k]) if k in factors else a
                                          for k, a in budget.limits.items()}, budget.objective)
    cur = stored_cost(current, x, kmeans_bits, kernel_layers)
    for key in owned:
        amount = budget.limits[key]
        if key == "latency_ms":
            if current is original:
                limits[key] = amount
                continue
            from slimcnn.measure import compare_latency

            lat = compare_latency({"original": original, "current": current}, x, runtime=spec.runtime or "onnxruntime",  # type: ignore[arg-type]
                                  threads=spec.threads, runs=30, warmup=5)
            target = amount.limit(lat["original"].median_ms)
            limits[key] = Amount(target / lat["current"].median_ms, relative=True)
        elif key == "weight_bytes":
            limits[key] = Amount(amount.limit(base_cost.weight_bytes))
        else:
            base, now = getattr(base_cost, key), getattr(cur, key)
            limits[key] = Amount(amount.limit(base) / max(now, 1), relative=True)
    return limits
