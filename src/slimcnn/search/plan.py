"""A search's outcome as a :class:`~slimcnn.run.Plan`: the concrete steps that rebuild its model.

Channel pruning is stored as the kept channels of every pruning step (one per CPO step / iteration);
kernel, low-rank and k-means searches are stored as the facts their transform produced on the
original weights (kept kernels, factor method and rank, bits), so :func:`slimcnn.run.apply_plan`
replays them without the search.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

from torch import nn

from slimcnn.run import Plan, PlanStep


def search_plan(model: nn.Module, spec: Any, result: Any, example_input: Any, *, source: str) -> Plan:
    """The :class:`Plan` of a finished search (``result`` of :func:`slimcnn.search.search`) on ``model``."""
    from slimcnn.prune import fingerprint

    steps = search_steps(model, spec, result, example_input)
    return Plan(steps, source, fingerprint(model), tuple(getattr(example_input, "shape", ())),
                finetuned=spec.finetune_steps > 0)


def search_steps(model: nn.Module, spec: Any, result: Any, example_input: Any) -> tuple[PlanStep, ...]:
    """One step per transform the search applied, in order."""
    assignment = {k: float(v) for k, v in result.assignment.items() if v}
    if spec.method == "prune":
        plans = [p for p in result.strategy_log.get("plans", []) if p] or [result.details.get("prune_plan")]
        return tuple(PlanStep("prune_channels", tuple(p["layers"]), p) for p in plans if p)
    if not assignment:
        return ()
    if spec.method == "kernel":
        return (_kernel_step(model, spec, assignment),)
    if spec.method == "lowrank":
        return (_lowrank_step(model, assignment, example_input),)
    if spec.method == "kmeans":
        from slimcnn.search.families import _literal

        bits = [[_literal(k), int(v)] for k, v in assignment.items()]
        return (PlanStep("kmeans", tuple(assignment), {"bits": bits, "codebook_dtype": spec.codebook}),)
    raise ValueError(f"no plan for search method {spec.method!r}")  # pragma: no cover - FAMILIES are all above


def _kernel_step(model: nn.Module, spec: Any, assignment: dict[str, float]) -> PlanStep:
    from slimcnn.prune.kernel import kept_to_json, kernel_masks

    criterion = spec.criterion or "l1"
    new = copy.deepcopy(model)
    masks = {}
    for layer, amount in assignment.items():  # the family's order: masks of one layer never read another's
        masks[layer] = kernel_masks(new, amount, criterion, layers=[layer])[layer]
    kept = kept_to_json(masks)
    return PlanStep("prune_kernels", tuple(kept), {"kept": kept, "criterion": criterion, "drop_channels": False})


def _lowrank_step(model: nn.Module, assignment: dict[str, float], example_input: Any) -> PlanStep:
    from slimcnn.lowrank import decompose_
    from slimcnn.search.families import LowRankFamily

    family = LowRankFamily(example_input)
    new = copy.deepcopy(model)
    layers: dict[str, dict[str, Any]] = {}
    for layer, amount in assignment.items():
        spec = family._spec(layer, amount)
        spec_dict = {k: v for k, v in dataclasses.asdict(spec).items() if k not in ("include", "exclude")}
        for row in decompose_(new, example_input, spec, runtime=None).layers:
            if row.replaced:
                layers[row.layer] = {"method": row.method, "rank": row.rank, "spec": spec_dict}
    return PlanStep("lowrank", tuple(layers), {"layers": layers})
