"""Pavlitska et al.'s loop on real models: sensitivity (no fine-tuning) → select → prune → fine-tune."""

from __future__ import annotations

import copy
from typing import Any

from slimcnn.search._trials import trial_key
from slimcnn.search.iterative import SensitivityPoint, select_layers
from slimcnn.search.sensitivity import SensitivityTable, sensitivity_sweep


def run_iterations(ctx: Any) -> tuple[dict[str, float], dict[str, Any], SensitivityTable | None]:
    """Run ``ctx.spec.iterations`` rounds; returns the last round's assignment (the model is cumulative).

    Each round prunes the *current* model, so the search replaces ``ctx.model`` as it goes and the
    final model is the current model itself (the returned assignment is empty relative to it).
    """
    spec = ctx.spec
    current = ctx.model
    rows: list[dict[str, Any]] = []
    table: SensitivityTable | None = None
    base = ctx.evaluate(ctx.model) if spec.limit is not None else ctx.base_score
    for it in range(1, spec.iterations + 1):
        done = ctx.trials.get(trial_key("iterative", {"round": it, "budget": repr(ctx.budget)}))
        if done is not None:  # a round finished before an interruption (the log holds the last round's model)
            ctx.replay(done[0]["point"])
            rows.append(done[0]["row"])
            if done[1] is not None:
                current, table = done[1]
            continue
        family = ctx.family
        knobs = [k for k in family.knobs(current, ctx.example_input)]
        knobs = [type(k)(k.name, tuple(spec.amounts or (0.25, 0.5, 0.75)), k.layers) for k in knobs]
        table = sensitivity_sweep(current, ctx.task, knobs, family.apply, example_input=ctx.example_input,
                                  limit=spec.limit, workers=spec.workers, cost=ctx.cost_fn, progress=ctx.progress,
                                  device=spec.device)
        ref = table.baseline if table.baseline else 1.0
        points = [
            SensitivityPoint(p.knob, p.amount, _normalised(p.metric, ref, table.higher_is_better),
                             d_params=table.base_params - p.params, d_macs=table.base_macs - p.macs)
            for p in table.points
        ]
        chosen = select_layers(points, alpha=spec.alpha, params_layers=spec.params_layers,
                               flops_layers=spec.flops_layers)
        if not chosen:
            break
        assignment = {s.layer: s.rate for s in chosen}
        pruned = family.apply_many(current, assignment)
        # The per-iteration table is a report: judged on the whole validation set (--limit only
        # shortens the sweeps, as for the other strategies' final model).
        before_ft = ctx.evaluate(pruned)
        ctx.finetune(pruned, assignment)
        after_ft = ctx.evaluate(pruned)
        cost, base_cost = ctx.measure_cost(pruned, {}, timed=False), ctx.base_cost
        if ctx.need_latency:  # the round's model and the original side by side, not minutes apart
            base_cost, cost = ctx.retime(ctx.model, pruned, base_cost, cost)
        ctx.tried.append(_as_point(len(ctx.tried), assignment, base, after_ft, cost, ctx, base_cost))
        rows.append(row := {
            "iteration": it, "selected": [{"layer": s.layer, "rate": s.rate, "reason": s.reason} for s in chosen],
            "params": cost.params, "macs": cost.macs,
            "latency_ms": cost.latency.median_ms if cost.latency else None,
            "latency_ratio": cost.latency.median_ms / base_cost.latency.median_ms
            if cost.latency and base_cost.latency else None,
            "metric_before_ft": before_ft.value, "metric_after_ft": after_ft.value,
            "plan": family.last_plan.to_dict() if getattr(family, "last_plan", None) is not None else None,
        })
        current = pruned
        ctx.trials.put(trial_key("iterative", {"round": it, "budget": repr(ctx.budget)}), {"point": ctx.tried[-1], "row": row}, (current, table))
        ctx.trials.keep_payloads({trial_key("iterative", {"round": it, "budget": repr(ctx.budget)})})  # the next round builds on this one only
    ctx.model_override = current if current is not ctx.model else copy.deepcopy(current)  # never the caller's model
    return {}, {"iterations": [{k: v for k, v in r.items() if k != "plan"} for r in rows], "alpha": spec.alpha,
                "plans": [r["plan"] for r in rows]}, table


def _normalised(metric: float, ref: float, higher_is_better: bool) -> float:
    """metric / baseline (or its inverse for lower-is-better metrics): α-powers stay in range."""
    if higher_is_better:
        return max(metric, 0.0) / abs(ref)
    return abs(ref) / max(metric, 1e-12)


def _as_point(i: int, assignment: dict[str, float], base: Any, score: Any, cost: Any, ctx: Any, base_cost: Any) -> Any:
    from slimcnn.search._context import _point

    return _point(i, assignment, base, score, cost, ctx.budget, base_cost)
