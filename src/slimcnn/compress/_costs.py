"""What compress counts: each model's cost as its written file stores it, and each stage's limits."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from slimcnn.run._artifacts import still_convs
from slimcnn.search.budget import Amount, Budget
from slimcnn.types import Cost

if TYPE_CHECKING:
    from slimcnn.compress._run import CompressSpec


def stage_cost(model: nn.Module, x: Any, kmeans_bits: dict[str, int] | None = None,
               kernel_layers: Sequence[str] = (), codebook: str = "fp32") -> Cost:
    """Params, MACs, activation bytes by profiling, the all-zero kernels of ``kernel_layers`` and of the k-means
    layers left out of params and MACs (as the kernel search and ``analyze`` of a ``.slim``/``.slimk`` count
    them); weight bytes with the k-means layers at their bits (``model.slim``), else without the removed kernels
    (``model.slimk``)."""
    from slimcnn.measure import profile
    from slimcnn.search.families import kernel_sparse_cost, kmeans_bytes_delta

    c = profile(model, x)
    wbytes = c.weight_bytes
    bits = still_weighted(model, kmeans_bits or {})
    if layers := still_convs(model, [*kernel_layers, *bits]):
        params, macs, sparse_bytes = kernel_sparse_cost(model, x, layers)
        c = dataclasses.replace(c, params=params, macs=macs)
        wbytes = wbytes if bits else sparse_bytes
    if bits:
        wbytes += kmeans_bytes_delta(model, bits, codebook)
    return dataclasses.replace(c, weight_bytes=wbytes, layers=())


def still_weighted(model: nn.Module, bits: dict[str, int]) -> dict[str, int]:
    """``bits`` of the layers that still hold a ``weight`` tensor."""
    mods = dict(model.named_modules())
    return {k: b for k, b in bits.items() if isinstance(getattr(mods.get(k), "weight", None), torch.Tensor)}


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
                 spec: CompressSpec, factors: dict[str, float] | None = None,
                 kernel_layers: Sequence[str] = ()) -> dict[str, Amount]:
    """The stage's limits relative to its input model (so latency is compared within one run; params and MACs
    without the removed kernels of ``kernel_layers``, as ``base_cost`` counts them); a latency target a later
    int8 stage scales by a factor is divided by that factor."""
    limits: dict[str, Amount] = {}
    if not owned:
        return limits
    if factors:
        budget = Budget(budget.max_drop, {k: dataclasses.replace(a, value=a.value / factors[k]) if k in factors else a
                                          for k, a in budget.limits.items()}, budget.objective)
    cur = stage_cost(current, x, kernel_layers=kernel_layers)
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
