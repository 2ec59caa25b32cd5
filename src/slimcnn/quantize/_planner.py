"""SRAM planner: per-layer bits and pruning factors that fit a weight-byte budget.

1. Sensitivity sweep: each layer alone at every (bits, prune factor) option; metric drop measured on
   the task's evaluation data (optionally the first ``limit`` images).
2. Greedy allocation: start every layer at its largest option and repeatedly take the move with the
   least metric drop per byte saved (Δdrop / Δbytes) until the weights, as ``model.slim`` stores them
   (codebooks, indices, keep masks, float32 rest), fit.
3. The chosen settings are applied together and measured once more.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from slimcnn.errors import BudgetError, ConfigError
from slimcnn.quantize._kmeans import dequantize, fit_kmeans
from slimcnn.quantize._model import (
    KMeansQuantSpec,
    codebook_itemsize,
    keep_mask_bytes,
    quantizable_layers,
    quantize_model,
    stored_bytes,
    without_zeros,
)
from slimcnn.quantize._prune import magnitude_mask

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LayerOption:
    """One sweep point: a layer at ``bits`` and pruning factor ``prune``."""

    layer: str
    bits: int
    prune: float
    stored_bytes: int
    """Codebook + indices + keep mask as ``model.slim`` stores them."""
    drop: float


@dataclass(frozen=True)
class MemoryPlan:
    """The planner's answer (JSON-ready)."""

    spec: KMeansQuantSpec
    choices: tuple[LayerOption, ...]
    weight_bytes: int
    """The budget."""
    stored_bytes: int
    """What the chosen settings store (:attr:`~slimcnn.quantize.QuantizeResult.weight_bytes`)."""
    baseline: float
    metric: str
    measured: float
    drop: float
    predicted_drop: float
    sweep: tuple[LayerOption, ...]
    limit: int | None


def _evaluate(task: Any, model: nn.Module, limit: int | None) -> Any:
    return task.evaluate(model, limit=limit)


def plan_memory(
    model: nn.Module,
    task: Any,
    *,
    weight_bytes: int,
    max_drop: float | None = None,
    bits_options: tuple[int, ...] = (8, 7, 6, 5, 4, 3, 2, 1),
    prune_options: tuple[float, ...] = (1.0, 2.0, 3.0, 4.0),
    limit: int | None = None,
    base_spec: KMeansQuantSpec | None = None,
    best_effort: bool = False,
) -> MemoryPlan:
    """Pick per-layer bits and pruning factors so the stored weights fit ``weight_bytes`` losing least metric.

    Bytes are what ``model.slim`` stores of the parameters: each conv/linear weight's codebook,
    fixed-width indices and keep mask (a pruned layer pays for its mask, so pruning is chosen only
    where it saves bytes), plus float32 bytes for every other parameter (biases, BN), which the
    budget must hold too. The caller's model is not modified.

    Args:
        model: the trained model.
        task: a :class:`~slimcnn.tasks.Task`; drops are in its metric's unit.
        weight_bytes: the budget in bytes (``slimcnn.search.budget.parse_amount("4MB", "weight_bytes")``).
        max_drop: raise :class:`BudgetError` when the final measured drop exceeds it.
        bits_options: bit widths tried per layer.
        prune_options: pruning factors tried per layer.
        limit: evaluate on the first N images only (sweep and final check).
        base_spec: method/per-channel/codebook options for the quantiser (its rules are ignored).
        best_effort: instead of raising, return the closest plan (the smallest options, or the plan that
            fits but loses more than ``max_drop``); the caller checks ``stored_bytes`` and ``drop``.

    Raises:
        BudgetError: even the smallest options do not fit, or ``max_drop`` is exceeded.
    """
    if not bits_options or not prune_options:
        raise ConfigError("bits_options and prune_options must not be empty")
    base = base_spec or KMeansQuantSpec(bits=(("*", 8),))
    work = copy.deepcopy(model)  # the sweep edits weights; the caller's model is never touched
    layers = quantizable_layers(work)
    modules = dict(work.named_modules())
    ref = _evaluate(task, work, limit)
    itemsize = codebook_itemsize(base.codebook_dtype)
    sign = 1.0 if ref.higher_is_better else -1.0
    sweep: list[LayerOption] = []
    for name in layers:
        weight = modules[name].weight
        orig = weight.detach().clone()
        for f in prune_options:
            mask = without_zeros(magnitude_mask(orig, f), orig)
            kept = orig.numel() if mask is None else int(mask.sum())
            m_bytes = keep_mask_bytes(mask)
            for b in bits_options:
                fit = fit_kmeans(orig, b, per_channel=base.per_channel, method=base.method, mask=mask)
                with torch.no_grad():
                    weight.copy_(dequantize(fit.codebook, fit.indices, mask, orig.shape).to(orig.dtype))
                s = _evaluate(task, work, limit)
                stored = stored_bytes(fit.codebook.numel(), int(fit.codebook.shape[-1]), kept, m_bytes, itemsize)
                sweep.append(LayerOption(name, b, f, stored, sign * (ref.value - s.value)))
        with torch.no_grad():
            weight.copy_(orig)
        log.info("planner: swept %s", name)
    by_layer: dict[str, list[LayerOption]] = {n: sorted((o for o in sweep if o.layer == n), key=lambda o: -o.stored_bytes) for n in layers}
    current = {n: opts[0] for n, opts in by_layer.items()}
    fixed = 4 * (sum(p.numel() for p in work.parameters()) - sum(modules[n].weight.numel() for n in layers))
    total = fixed + sum(o.stored_bytes for o in current.values())  # float32 biases/BN count too
    while total > weight_bytes:
        best: tuple[float, LayerOption] | None = None
        for n, cur in current.items():
            for o in by_layer[n]:
                saved = cur.stored_bytes - o.stored_bytes
                if saved <= 0:
                    continue
                ratio = (o.drop - cur.drop) / saved
                if best is None or ratio < best[0]:
                    best = (ratio, o)
        if best is None:
            if best_effort:
                break
            raise BudgetError(
                f"smallest options need {total:.0f} bytes ({fixed} of them float32 biases/BN) > budget {weight_bytes}; "
                "allow fewer bits or more pruning"
            )
        o = best[1]
        total += o.stored_bytes - current[o.layer].stored_bytes
        current[o.layer] = o
    choices = tuple(current[n] for n in layers)
    spec = replace(
        base,
        bits=tuple((c.layer, c.bits) for c in choices),
        prune=tuple((c.layer, c.prune) for c in choices if c.prune > 1.0),
        global_prune=None,
    )
    result = quantize_model(model, spec)
    final = _evaluate(task, result.model, limit)
    drop = sign * (ref.value - final.value)
    plan = MemoryPlan(spec, choices, weight_bytes, result.weight_bytes, ref.value, ref.metric, final.value, drop,
                      sum(c.drop for c in choices), tuple(sweep), limit)
    if max_drop is not None and drop > max_drop and not best_effort:
        raise BudgetError(
            f"fitting {weight_bytes} bytes costs {drop:.3f} {ref.metric} (> --max-drop {max_drop}); "
            f"closest point: {result.weight_bytes} bytes stored, {ref.metric} {final.value:.3f}"
        )
    return plan
