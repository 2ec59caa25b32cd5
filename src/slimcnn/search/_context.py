"""One search's shared state (:class:`SearchContext`): the model, task, family and budget, and how a point is
fine-tuned, measured, recorded and replayed from the trial log."""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import TYPE_CHECKING, Any

from torch import nn

from slimcnn.search._stored import as_stored, stored_form, stored_input_cost
from slimcnn.search._trials import TrialLog, trial_key
from slimcnn.search.budget import Budget
from slimcnn.search.families import FAMILIES, Family
from slimcnn.search.greedy import TriedPoint
from slimcnn.search.sensitivity import CostFn
from slimcnn.tasks.base import Task
from slimcnn.train import is_main
from slimcnn.train._distributed import from_main
from slimcnn.train._promises import Promise
from slimcnn.types import Cost, LatencyStats, Score

if TYPE_CHECKING:
    from slimcnn.export._int8 import Int8Spec
    from slimcnn.search.run import SearchSpec

progress_log = logging.getLogger("slimcnn.progress")
"""One line per measured point (the CLI shows it on stderr; library users opt in with logging)."""


class SearchContext:
    """Shared state of one search: the model, task, family, budget and how to measure a point."""

    def __init__(self, model: nn.Module, task: Task, budget: Budget, spec: SearchSpec, example_input: Any,
                 source: str, progress: bool, resume: str | None = None, trials: str | None = None,
                 input_score: Score | None = None) -> None:
        self.model, self.task, self.budget, self.spec = model.eval(), task, budget, spec
        self.example_input, self.progress, self.resume = example_input, progress, resume
        self.need_latency = "latency_ms" in budget.limits or budget.objective == "latency_ms" or spec.runtime is not None
        self.runtime = spec.runtime or "onnxruntime"
        kwargs: dict[str, Any] = {"example_input": example_input}
        if spec.amounts is not None:
            kwargs["amounts"] = spec.amounts
        if spec.method == "prune":
            default = "sparsity" if spec.strategy == "cpo" else "l1"
            kwargs |= {"criterion": spec.criterion or default, "round_to": spec.round_to, "exclude": spec.exclude,
                       "task": task, "source": source, "compensate": spec.compensate}
        elif spec.method == "kernel" and spec.criterion is not None:
            kwargs["criterion"] = spec.criterion
        elif spec.method == "kmeans":
            kwargs["codebook"] = spec.codebook
        self.family: Family = FAMILIES.get(spec.method)(**kwargs)
        self.cost_fn = self.family.cost(example_input)
        kernels, bits, _, _ = stored_form(spec.promises)
        if kernels or bits:  # a compact input is counted as its file stores it (as `analyze` counts it)
            self.cost_fn = as_stored(self.cost_fn, example_input, spec.promises, spec.method)
        if spec.int8_weights is not None:
            self.cost_fn = _int8_bytes(self.cost_fn, example_input, spec.int8_weights)
        self.input_score = input_score
        """The model's score on the whole validation data, when the caller measured it already."""
        self.base_score = (input_score if input_score is not None and spec.limit is None
                           else self.evaluate(model, limit=spec.limit))
        self.base_cost = self.measure_cost(model, {})
        if bits and spec.int8_weights is None:  # exactly the input's .slim bytes, not their bound
            self.base_cost = dataclasses.replace(
                self.base_cost, weight_bytes=stored_input_cost(model, example_input, spec.promises).weight_bytes)
        self.tried: list[TriedPoint] = []
        self.model_override: nn.Module | None = None
        """The final model when the strategy built it step by step (``cpo``, ``iterative``)."""
        # a point (an assignment, fine-tuned and judged) does not depend on the budget: replay re-judges it, so
        # compress's least-drop search reuses its first search's points; CPO and iterative trials key the budget
        self.trials = TrialLog(trials, {"metric": self.base_score.value, "params": float(self.base_cost.params),
                                        "macs": float(self.base_cost.macs), "spec": _spec_key(spec)})
        """Finished trials (points, CPO steps, iterative rounds): a re-run skips them."""

    def measure_cost(self, model: nn.Module, assignment: dict[str, float], *, timed: bool = True) -> Cost:
        params, macs, wbytes = self.cost_fn(model, assignment)
        lat = self.point_latency(model) if self.need_latency and timed else None
        act = 0
        if "activation_bytes" in self.budget.limits or self.budget.objective == "activation_bytes":
            act = _peak_activations(model, self.example_input)
        return Cost(params, macs, wbytes, act, latency=lat)

    def point_latency(self, model: nn.Module) -> LatencyStats:
        """``model``'s latency on the scale of the baseline's: timed interleaved with the original in one run and
        scaled by the baseline's median. A point timed alone, minutes after the baseline, is not comparable on a
        busy machine (measured: one model 1.7-3.1 ms across a search under load), so its check would be noise.
        Inside a process group rank 0 times and every rank uses its numbers (decisions must agree)."""
        from slimcnn.measure import CHECK_SECONDS, compare_latency, measure_latency

        base = getattr(self, "base_cost", None)
        if base is None or base.latency is None:  # the baseline itself
            return from_main(lambda: measure_latency(model, self.example_input, runtime=self.runtime,  # type: ignore[arg-type]
                                                     threads=self.spec.threads, runs=20, warmup=3))
        stats = from_main(lambda: compare_latency({"original": self.model, "point": model}, self.example_input,
                                                  runtime=self.runtime, threads=self.spec.threads, runs=20, warmup=3,
                                                  min_seconds=CHECK_SECONDS))  # type: ignore[arg-type]
        k = base.latency.median_ms / stats["original"].median_ms
        p = stats["point"]
        return dataclasses.replace(p, median_ms=p.median_ms * k, p10_ms=p.p10_ms * k, p90_ms=p.p90_ms * k)

    def retime(self, before: nn.Module, after: nn.Module, cost_before: Cost, cost_after: Cost) -> tuple[Cost, Cost]:
        """Time the original and the final model interleaved in one run, so the latency check compares
        two medians taken under the same load (the search's own timings are minutes apart)."""
        from slimcnn.measure import CHECK_SECONDS, compare_latency

        stats = from_main(lambda: compare_latency({"before": before, "after": after}, self.example_input,
                                                  runtime=self.runtime, threads=self.spec.threads, runs=50, warmup=5,
                                                  min_seconds=2 * CHECK_SECONDS))  # type: ignore[arg-type]
        return (dataclasses.replace(cost_before, latency=stats["before"]),
                dataclasses.replace(cost_after, latency=stats["after"]))

    def evaluate(self, model: nn.Module, *, limit: int | None = None) -> Score:
        return self.task.evaluate(model, limit=limit, device=self.spec.device)

    def promises(self, model: nn.Module, assignment: dict[str, float] | None = None) -> tuple[Promise, ...]:
        """What a fine-tune of ``model`` (the original transformed by ``assignment``) must keep."""
        own = getattr(self.family, "promises", None)
        return tuple(self.spec.promises) + (tuple(own(model, assignment or {})) if own is not None else ())

    def finetune(self, model: nn.Module, assignment: dict[str, float] | None = None) -> None:
        """Fine-tune ``model`` in place, keeping the transforms' promises (codebooks, zeros, widths);
        with ``recovery="kd"`` distilled from the search's original model."""
        from slimcnn.train import keep_promises

        if assignment is not None and not any(assignment.values()):
            # nothing was done to the model: a few steps can only move it off its optimum (measured: an untouched
            # CIFAR net lost 1.2 points of top-1 in 20 steps), and its score is the baseline's
            return
        if self.spec.finetune_steps > 0:
            opts: dict[str, Any] = {"device": self.spec.device} | self.spec.finetune
            if self.spec.recovery != "plain":
                opts |= {"teacher": self.model, "recovery": self.spec.recovery}
            with keep_promises(model, self.promises(model, assignment)):
                self.task.finetune(model, self.spec.finetune_steps, progress=False, **opts)

    def measure(self, assignment: dict[str, float], model: nn.Module | None = None) -> TriedPoint:
        """Fine-tune and judge ``model`` (default: the original transformed by ``assignment``, a trial the
        trial log answers when a killed run measured it already)."""
        if model is None:
            key = trial_key("point", assignment)
            done = self.trials.get(key)
            if done is not None and set(self.budget.limits) <= set(done[0].costs):
                return self.replay(done[0])
            point = self.measure(assignment, self.family.apply_many(self.model, assignment))
            self.trials.put(key, point)
            return point
        t0 = time.perf_counter()
        return self.record(self.judge(assignment, model), f"[{time.perf_counter() - t0:.1f} s]")

    def judge(self, assignment: dict[str, float], model: nn.Module) -> TriedPoint:
        """Fine-tune and measure ``model`` without recording it (a rank measuring its share of the trials)."""
        self.finetune(model, assignment)
        score = self.evaluate(model, limit=self.spec.limit)
        cost = self.measure_cost(model, assignment)
        return _point(-1, assignment, self.base_score, score, cost, self.budget, self.base_cost)

    def record(self, point: TriedPoint, note: str) -> TriedPoint:
        """Number ``point`` as the next one tried, keep it and show it (``note``: its time, or where it came from)."""
        point = dataclasses.replace(point, prefix=len(self.tried))
        self.tried.append(point)
        if self.progress and is_main():
            ratios = ", ".join(f"{c.name} {c.amounts()}" for c in point.checks)
            progress_log.info("  point %d: %d knobs, %s %.4g (drop %.3g)%s, %s %s", point.prefix,
                              len(point.assignment), self.base_score.metric, point.metric, point.drop,
                              f", {self.spec.finetune_steps} fine-tune steps" if self.spec.finetune_steps else "",
                              ratios or "no limits", note)
        return point

    def replay(self, point: TriedPoint) -> TriedPoint:
        """Record a point from the trial log (a killed run, or compress's first search of the stage) as if
        measured now, judged against this search's budget."""
        if set(self.budget.limits) <= set(point.costs):
            checks = self.budget.check_values(self.base_cost, self.base_score, point.drop, point.costs)
            point = dataclasses.replace(point, checks=tuple(checks))
        return self.record(point, "(from the trial log)")


def _int8_bytes(cost_fn: CostFn, example_input: Any, spec: Int8Spec) -> CostFn:
    """``cost_fn`` with weight bytes counted in the int8 file ``spec`` writes."""
    from slimcnn.export._int8 import int8_model_bytes

    def cost(model: nn.Module, assignment: dict[str, float]) -> tuple[int, int, int]:
        params, macs, _ = cost_fn(model, assignment)
        return params, macs, int8_model_bytes(model, example_input, spec)

    return cost


def _peak_activations(model: nn.Module, example_input: Any) -> int:
    """Peak live activation bytes of one forward pass (the liveness count of ``profile``)."""
    from slimcnn.measure import profile

    return profile(model, example_input).activation_bytes


def _spec_key(spec: SearchSpec) -> str:
    """The options a trial's result depends on (not how many ranks or threads measured it)."""
    skip = ("workers", "threads", "max_evaluations", "promises")
    return repr({f.name: getattr(spec, f.name) for f in dataclasses.fields(spec) if f.name not in skip})


def _point(i: int, assignment: dict[str, float], base: Score, score: Score, cost: Cost, budget: Budget,
           base_cost: Cost) -> TriedPoint:
    costs = {"params": float(cost.params), "macs": float(cost.macs), "weight_bytes": float(cost.weight_bytes)}
    if cost.latency is not None:
        costs["latency_ms"] = cost.latency.median_ms
    if "activation_bytes" in budget.limits:
        costs["activation_bytes"] = float(cost.activation_bytes)
    checks = tuple(budget.check(base_cost, base, cost, score))
    return TriedPoint(i, dict(assignment), score.value, base.drop_to(score), costs, checks)

