"""The search: baseline → strategy (greedy, cpo, iterative, latency) → final model measured against the budget."""

from __future__ import annotations

import copy
import dataclasses
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from torch import nn

from slimcnn.errors import ConfigError
from slimcnn.registry import Registry
from slimcnn.run._artifacts import same_weights
from slimcnn.search._context import SearchContext, _peak_activations
from slimcnn.search.budget import Budget, ConstraintCheck, cost_value, flag
from slimcnn.search.families import FAMILIES
from slimcnn.search.greedy import assignment_at, greedy_search
from slimcnn.search.sensitivity import Knob, SensitivityTable, sensitivity_sweep
from slimcnn.tasks.base import Task
from slimcnn.train._distributed import from_main
from slimcnn.train._promises import Promise
from slimcnn.types import Score

if TYPE_CHECKING:
    from slimcnn.export._int8 import Int8Spec

log = logging.getLogger(__name__)
progress_log = logging.getLogger("slimcnn.progress")
"""One line per measured point (the CLI shows it on stderr; library users opt in with logging)."""


@dataclass(frozen=True)
class SearchSpec:
    """How to search (the budget says for what)."""

    method: str = "prune"
    """Transform family: ``prune``, ``lowrank``, ``kmeans``."""
    strategy: str = "greedy"
    """``greedy`` (default), ``cpo`` (Liu et al.), ``iterative`` (Pavlitska et al.)."""
    criterion: str | None = None
    """Channel criterion for ``prune`` (default ``l1``; ``cpo`` defaults to Liu's ``sparsity``)."""
    amounts: tuple[float, ...] | None = None
    """Amounts a sweep tries (family default when None)."""
    finetune_steps: int = 0
    """Fine-tuning steps: per measured point (greedy), per CPO step, per iteration (iterative)."""
    finetune: dict[str, Any] = field(default_factory=dict)
    """Extra options for ``task.finetune`` (lr, optimizer, batch_size...)."""
    limit: int | None = None
    """Validation images used while searching (the final model is judged on all of them)."""
    workers: int = 1
    runtime: str | None = None
    """Runtime for latency (``onnxruntime``/``torch``); needed for a latency budget."""
    threads: int | None = None
    iterations: int = 3
    alpha: float = 20.0
    params_layers: int = 6
    flops_layers: int = 5
    round_to: int = 1
    exclude: tuple[str, ...] = ()
    compensate: bool | str = False
    """``prune``: ``"mean"`` folds removed channels' mean activations into the next layer's bias, ``"lsq"`` refits
    the next layers by least squares (:data:`~slimcnn.prune.COMPENSATIONS`; True = mean), False: neither."""
    max_evaluations: int = 12
    accumulate: bool = False
    """``cpo``: each trial prunes the retrained model of the state it extends (the paper) instead of the
    original; retraining then accumulates along the steps."""
    device: str = "cpu"
    """Where fine-tuning and evaluation run (``cuda`` on a GPU machine); costs and latency stay on CPU."""
    recovery: str = "plain"
    """How fine-tuning recovers: ``plain`` (the task's loss) or ``kd`` (distillation from the search's
    original model; KD knobs such as ``kd_temperature``/``kd_alpha`` go in ``finetune``)."""
    promises: tuple[Promise, ...] = ()
    """What the input model already promises (earlier transforms: codebooks, zeros), kept by every
    fine-tune of the search together with the family's own promises."""
    codebook: str = "fp32"
    """``kmeans``: centroid storage in ``model.slim``, ``fp32`` or ``fp16`` (half the codebook bytes; the model
    uses the rounded centroids)."""
    int8_weights: Int8Spec | None = None
    """Count ``weight_bytes`` as the ONNX Runtime int8 file this spec writes
    (:func:`~slimcnn.export._int8.int8_model_bytes`) instead of the family's own count: compress gives it to
    a stage whose model a later int8 stage quantises, so the byte budget holds for the file written."""

    def __post_init__(self) -> None:
        from slimcnn.train import RECOVERIES

        if self.recovery not in RECOVERIES:
            raise ConfigError(f"--recovery must be one of {', '.join(RECOVERIES)}, got '{self.recovery}'")
        if self.method not in FAMILIES:
            FAMILIES.get(self.method)  # raises with close matches
        STRATEGIES.get(self.strategy)
        if self.strategy in ("cpo", "iterative", "latency") and self.method != "prune":
            raise ConfigError(f"--strategy {self.strategy} works on filters: use --method prune")
        if self.accumulate and self.strategy != "cpo":
            raise ConfigError("--accumulate works with --strategy cpo")
        from slimcnn.prune._compensate import compensation_mode

        object.__setattr__(self, "compensate", compensation_mode(self.compensate) or False)  # frozen
        if self.compensate and self.method != "prune":
            raise ConfigError(f"--compensate works with --method prune, not '{self.method}'")
        from slimcnn.quantize._model import check_codebook_dtype

        check_codebook_dtype(self.codebook)
        if self.codebook != "fp32" and self.method != "kmeans":
            raise ConfigError(f"--codebook works with --method kmeans, not '{self.method}'")


@dataclass
class SearchResult:
    """The chosen model and everything measured on the way."""

    model: nn.Module
    assignment: dict[str, float]
    details: dict[str, Any]
    before: dict[str, Any]
    after: dict[str, Any]
    checks: list[ConstraintCheck]
    met: bool
    tried: list[dict[str, Any]]
    strategy_log: dict[str, Any]
    sensitivity: SensitivityTable | None
    seconds: float


Strategy = Any
STRATEGIES: Registry[Strategy] = Registry("search strategy")


def out_of_reach(ctx: SearchContext, knobs: list[Knob]) -> tuple[dict[str, float], str] | None:
    """``(every knob at its strongest amount, why)`` when a budget on counted costs (MACs, params, weight bytes)
    is missed even there: greedy only combines the sweep's amounts, so no path reaches it, and a user should
    hear so in seconds, not after an hour of measured points. ``None`` when every counted budget is in reach."""
    counted = {k: a for k, a in ctx.budget.limits.items() if k in ("macs", "params", "weight_bytes")}
    if not counted or not knobs:
        return None
    strongest = {k.name: ctx.family.strongest(k) for k in knobs}
    params, macs, wbytes = ctx.cost_fn(ctx.family.apply_many(ctx.model, strongest), strongest)
    least = {"params": float(params), "macs": float(macs), "weight_bytes": float(wbytes)}
    missed, unmoved = [], []
    for key, amount in counted.items():
        base = float(cost_value(ctx.base_cost, key))
        if least[key] > amount.limit(base):
            missed.append(f"{flag(key)} {amount} (it keeps {least[key]:,.0f} of {base:,.0f}, "
                          f"{least[key] / max(base, 1):.3f}x)")
            if least[key] >= base:
                unmoved.append(flag(key))
    if not missed:
        return None
    if len(unmoved) == len(missed):  # no amount of this method moves these costs: stronger ones cannot help
        return strongest, (f"out of reach of {ctx.family.name}: it does not change {' or '.join(unmoved)} "
                           f"({'; '.join(missed)}). No sweep; use a --method that does, or combine methods "
                           "(slimcnn compress --recipe auto)")
    amounts = ", ".join(sorted({f"{v:g}" for v in strongest.values()}))
    # k-means amounts are bits, which compress does not take from --amounts: name the command that does
    stronger = "give stronger --amounts, "
    if ctx.family.name == "kmeans":
        stronger = "allow 1 bit (slimcnn search --method kmeans --amounts 8,4,2,1), " if min(strongest.values()) > 1 else ""
    return strongest, (f"out of reach of {ctx.family.name} even with every layer at its strongest amount ({amounts}): "
                       f"{'; '.join(missed)}. No sweep: the closest model is that one; loosen the budget, {stronger}"
                       "or combine methods (slimcnn compress --recipe auto)")


@STRATEGIES.register("greedy")
def _greedy(ctx: SearchContext) -> tuple[dict[str, float], dict[str, Any], SensitivityTable | None]:
    knobs = ctx.family.knobs(ctx.model, ctx.example_input)
    if (unreachable := out_of_reach(ctx, knobs)) is not None:
        strongest, why = unreachable
        progress_log.warning("budget %s", why)
        return strongest, {"out_of_reach": why}, None
    table = sensitivity_sweep(ctx.model, ctx.task, knobs, ctx.family.apply,
                              example_input=ctx.example_input, limit=ctx.spec.limit, workers=ctx.spec.workers,
                              cost=ctx.cost_fn, progress=ctx.progress, resume=ctx.resume,
                              device=ctx.spec.device)
    # the sweep costs params/MACs/weight bytes; time and peak activations follow MACs along the path
    cost_key = ctx.budget.objective if ctx.budget.objective not in ("latency_ms", "activation_bytes") else "macs"
    result = greedy_search(table, ctx.budget, ctx.measure, cost_key=cost_key, max_evaluations=ctx.spec.max_evaluations)
    log_ = {"path": [dataclasses.asdict(s) for s in result.path], "chosen_prefix": result.best.prefix,
            "chosen_feasible": result.met,
            # a detour: one move off the path on top of that prefix (greedy.detours)
            "chosen_off_path": result.best.assignment != assignment_at(result.path, result.best.prefix)}
    return result.best.assignment, log_, table


@STRATEGIES.register("cpo")
def _cpo(ctx: SearchContext) -> tuple[dict[str, float], dict[str, Any], SensitivityTable | None]:
    from slimcnn.search.cpo import cpo_search
    from slimcnn.search.prune_oracle import PruneOracle

    oracle = PruneOracle(ctx)
    macs_lim = ctx.budget.limits.get("macs")
    drop_lim = ctx.budget.drop_limit(ctx.base_score)
    if drop_lim is None and macs_lim is None:
        raise ConfigError("--strategy cpo needs --max-drop (least computation) or --macs (best metric)")
    result = cpo_search(oracle, oracle.layers(), max_drop=drop_lim if macs_lim is None else None,
                        macs_budget=macs_lim.limit(ctx.base_cost.macs) if macs_lim is not None else None)
    final, plans = oracle.trained(result.ratios)
    ctx.model_override = final
    log_ = {"order": result.order, "steps": [dataclasses.asdict(s) for s in result.steps],
            "evaluations": result.evaluations, "met": result.met, "plans": plans}
    return result.ratios, log_, None


@STRATEGIES.register("latency")
def _latency(ctx: SearchContext) -> tuple[dict[str, float], dict[str, Any], SensitivityTable | None]:
    """Kept widths from the model's per-group latency table and a knapsack (HALP-style, no sweep): most kept
    importance under ``--latency`` (and ``--macs`` / ``--params`` when given), checked by timing the pruned model whole; then
    the usual fine-tune and measurement."""
    from slimcnn.prune import prune_for_latency_

    lat_lim, macs_lim, params_lim = (ctx.budget.limits.get(k) for k in ("latency_ms", "macs", "params"))
    if lat_lim is None:
        raise ConfigError("--strategy latency needs --latency (12ms or 0.5x of the measured original)")
    assert ctx.base_cost.latency is not None  # need_latency holds with a latency limit
    base_ms = ctx.base_cost.latency.median_ms
    frac = lat_lim.limit(base_ms) / base_ms
    if not 0 < frac < 1:
        raise ConfigError(f"--latency {lat_lim} is not below the original's {base_ms:.3g} ms; give a smaller target")
    # MACs and params budgets are priced in the same knapsack as fractions of the original
    macs_frac, params_frac = (min(1.0, lim.limit(base) / max(base, 1)) if lim else None
                              for lim, base in ((macs_lim, ctx.base_cost.macs), (params_lim, ctx.base_cost.params)))
    fam = ctx.family

    def prune() -> tuple[nn.Module, dict[str, Any], float, dict[str, Any]]:
        model = copy.deepcopy(ctx.model)
        res = prune_for_latency_(model, ctx.example_input, frac, criterion=fam.criterion, exclude=fam.exclude,  # type: ignore[attr-defined]
                                 task=ctx.task, source=fam.source, threads=ctx.spec.threads, macs=macs_frac,  # type: ignore[attr-defined]
                                 params=params_frac, compensate=fam.compensate, runtime=ctx.runtime)  # type: ignore[attr-defined]
        if (fixed := res.fixed_time_message()) is not None:
            progress_log.warning("note: %s", fixed)
        return model, res.details(), res.measured_ratio, res.outcome.plan.to_dict()

    model, details, ratio, plan = from_main(prune)  # built from timings: rank 0's widths for every rank
    ctx.measure({}, model=model)
    ctx.model_override = model
    return {}, {"latency": details, "measured_ratio": ratio, "plans": [plan]}, None


@STRATEGIES.register("iterative")
def _iterative(ctx: SearchContext) -> tuple[dict[str, float], dict[str, Any], SensitivityTable | None]:
    from slimcnn.search.iterative_loop import run_iterations

    return run_iterations(ctx)


def search(
    model: nn.Module,
    task: Task,
    budget: Budget,
    spec: SearchSpec | None = None,
    *,
    example_input: Any = None,
    source: str = "",
    resume: str | None = None,
    trials: str | None = None,
    progress: bool = True,
    input_score: Score | None = None,
    finish_unmet: bool = True,
) -> SearchResult:
    """Find the smallest/fastest transformed ``model`` that meets ``budget`` (``model`` is not mutated).

    The final model is re-measured on the whole validation set and the constraints are checked on
    those measurements; an infeasible budget still returns the closest point reached (``met=False``).

    ``resume`` names the sensitivity sweep's JSON (finished knobs are skipped); ``trials`` names the
    trial log (:mod:`slimcnn.search._trials`): every finished trial (greedy's measured points, CPO's
    steps, iterative rounds) is saved there and a re-run with the same model, data and spec skips it.
    ``input_score``: ``model``'s score on the whole validation data when the caller has it (compress: each
    stage's input), so it is not evaluated again. ``finish_unmet=False``: when the greedy's chosen point missed
    the budget on the search's own data, return at once with ``met=False``, ``model`` unchanged and empty
    ``after``/``checks``, without its final fine-tune, whole-set evaluation and timing (compress then searches
    the stage again at the least drop, and would throw them away).
    """
    spec = spec or SearchSpec()
    t0 = time.perf_counter()
    example_input = task.example_input() if example_input is None else example_input
    ctx = SearchContext(model, task, budget, spec, example_input, source, progress, resume, trials, input_score)
    strategy = STRATEGIES.get(spec.strategy)
    assignment, strategy_log, table = strategy(ctx)
    tried = _pareto([dataclasses.asdict(p) | {"feasible": p.feasible} for p in ctx.tried], budget)
    if not finish_unmet and strategy_log.get("chosen_feasible") is False:
        return SearchResult(
            model=model, assignment=assignment, details={"unfinished": "the chosen point missed the budget"},
            before={"score": ctx.base_score, "cost": ctx.base_cost}, after={}, checks=[], met=False, tried=tried,
            strategy_log=strategy_log, sensitivity=table, seconds=time.perf_counter() - t0)
    if ctx.model_override is not None:  # pruned and fine-tuned step by step already
        final = ctx.model_override
        details: dict[str, Any] = {}
    else:
        final = ctx.family.apply_many(model, assignment)
        details = ctx.family.details(final, assignment)
        ctx.finetune(final, assignment)
        if spec.codebook != "fp32" and spec.finetune_steps:  # centroids trained in float32: round them as stored
            final = ctx.family.apply_many(final, assignment)
    full_before = ctx.base_score if spec.limit is None else ctx.input_score or ctx.evaluate(model)
    # nothing applied and nothing fine-tuned: the final model is the one scored already
    full_after = full_before if same_weights(final, model) else ctx.evaluate(final)
    # the result shows every cost of both ends (the points skip the activation profile no budget needs)
    cost_before = dataclasses.replace(ctx.base_cost, activation_bytes=_peak_activations(model, example_input))
    cost_after = dataclasses.replace(ctx.measure_cost(final, assignment, timed=False),
                                     activation_bytes=_peak_activations(final, example_input))
    if ctx.need_latency:
        cost_before, cost_after = ctx.retime(model, final, cost_before, cost_after)
    checks = budget.check(cost_before, full_before, cost_after, full_after)
    return SearchResult(
        model=final, assignment=assignment, details=details,
        before={"score": full_before, "cost": cost_before}, after={"score": full_after, "cost": cost_after},
        checks=checks, met=all(c.met for c in checks), tried=tried, strategy_log=strategy_log,
        sensitivity=table, seconds=time.perf_counter() - t0,
    )


def _pareto(points: list[dict[str, Any]], budget: Budget) -> list[dict[str, Any]]:
    """Flag points not dominated in (metric higher, objective cost lower)."""
    key = budget.objective
    flat = [{**p, **p["costs"]} for p in points]
    for p in flat:
        x = p.get(key, p.get("macs"))
        p["pareto"] = not any(
            q is not p and q["metric"] >= p["metric"] and q.get(key, q.get("macs")) <= x
            and (q["metric"] > p["metric"] or q.get(key, q.get("macs")) < x)
            for q in flat
        )
    return flat
