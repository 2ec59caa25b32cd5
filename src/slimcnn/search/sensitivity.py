"""Sensitivity sweeps: metric(knob, amount) and cost(knob, amount) for any transform family.

A *knob* is one place a transform can act with an amount (a dependency group's filter-pruning ratio,
a layer's low-rank fraction, a layer's k-means bits, ...). The sweep evaluates the model with each
knob alone at each amount on the user's validation subset. It is fast because (1) activations that a
change cannot affect are recorded once and replayed (``_cache``), (2) knobs are sharded over the ranks
of a torch.distributed group (``torchrun``, or ``workers`` local gloo ranks) and gathered, and (3) it
is resumable: finished points are saved after every round of knobs and skipped on rerun.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from slimcnn._io import write_json
from slimcnn.errors import ConfigError
from slimcnn.progress import phase, progress_log
from slimcnn.search._cache import Recording, cacheable_modules, changed_modules, execution_spans
from slimcnn.tasks.base import Task
from slimcnn.train import is_main, join_from_env, world
from slimcnn.train._distributed import from_main, on_local_ranks, round_robin
from slimcnn.types import Score

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Knob:
    """One place a transform acts, and the amounts to try."""

    name: str
    amounts: tuple[float, ...]
    layers: tuple[str, ...] = ()
    """Module FQNs the knob touches (informational; the cache diffs models to find the change)."""


Applier = Callable[[nn.Module, Knob, float], nn.Module]
"""``apply(model, knob, amount) -> transformed copy`` (must not mutate ``model``)."""

CostFn = Callable[[nn.Module, dict[str, float]], tuple[int, int, int]]
"""``cost(model, assignment) -> (params, macs, weight_bytes)``; the assignment lets a family count
what a dense profile cannot see (e.g. k-means bits)."""


@dataclass(frozen=True)
class SensitivityPoint:
    """Metric and cost of the model with one knob at one amount."""

    knob: str
    amount: float
    metric: float
    drop: float
    params: int
    macs: int
    weight_bytes: int
    latency_ms: float | None = None


@dataclass
class SensitivityTable:
    """All points of a sweep plus the conditions they were measured under."""

    metric: str
    baseline: float
    higher_is_better: bool
    base_params: int
    base_macs: int
    base_weight_bytes: int
    points: list[SensitivityPoint] = field(default_factory=list)
    conditions: dict[str, Any] = field(default_factory=dict)

    def curve(self, knob: str) -> list[SensitivityPoint]:
        """The points of one knob, by amount."""
        return sorted((p for p in self.points if p.knob == knob), key=lambda p: p.amount)

    def knobs(self) -> list[str]:
        """Knob names in first-seen order."""
        return list(dict.fromkeys(p.knob for p in self.points))

    def save(self, path: str | Path) -> Path:
        """Atomically write the table as JSON."""
        return write_json(path, self)

    @classmethod
    def load(cls, path: str | Path) -> SensitivityTable:
        """Read a table written by :meth:`save`."""
        data = json.loads(Path(path).read_text())
        points = [SensitivityPoint(**p) for p in data.pop("points")]
        return cls(points=points, **data)


def profile_cost(example_input: Any) -> CostFn:
    """The default cost: params, MACs and fp32 weight bytes counted on the model itself."""
    from slimcnn.measure import profile

    def cost(model: nn.Module, assignment: dict[str, float]) -> tuple[int, int, int]:
        c = profile(model, example_input)
        return c.params, c.macs, c.weight_bytes

    return cost


class _Evaluator:
    """Evaluates transformed copies, replaying cached activations where the change cannot reach."""

    def __init__(self, model: nn.Module, task: Task, example_input: Any, *, limit: int | None, cache: bool,
                 cache_limit_bytes: int, device: str) -> None:
        self.model = model.eval()
        self.task = task
        self.limit = limit
        self.device = device
        self.cache = cache
        self.cache_limit_bytes = cache_limit_bytes
        self.spans = execution_spans(model, example_input) if cache else {}
        self.recording: Recording | None = None
        self.replayed_modules = 0
        self.recording_passes = 0

    def evaluate(self, transformed: nn.Module) -> Score:
        if not self.cache:
            return self.task.evaluate(transformed, limit=self.limit, device=self.device)
        names = cacheable_modules(self.spans, changed_modules(self.model, transformed))
        if not names or not self._ensure_recorded(names):
            return self.task.evaluate(transformed, limit=self.limit, device=self.device)
        assert self.recording is not None
        replay = _shallow_module_copy(transformed)
        self.replayed_modules += len(self.recording.install(replay, names))
        return self.task.evaluate(replay, limit=self.limit, device=self.device)

    def prime(self, knobs: Sequence[Knob]) -> None:
        """Record, in one pass, every module replayable for some knob (predicted from ``knob.layers``).

        Each knob's replayable prefix would otherwise need its own recording pass (which runs the
        whole rest of the network); outputs that do not fit the memory limit are simply not primed.
        """
        if not self.cache:
            return
        wanted: set[str] = set()
        for knob in knobs:
            wanted.update(cacheable_modules(self.spans, {n for n in knob.layers if n in self.spans}))
        if not wanted:
            return
        self.recording = self.recording or Recording()
        names = self.recording.missing(sorted(wanted))
        hooks = self.recording.record(self.model, names, max_bytes=self.cache_limit_bytes)
        try:
            self.task.evaluate(self.model, limit=self.limit, device=self.device)
        finally:
            for h in hooks:
                h.remove()
        self.recording.drop_incomplete()
        self.recording_passes += 1

    def _ensure_recorded(self, names: list[str]) -> bool:
        """Record the outputs of ``names`` on the original model (replaying what is already stored).

        Returns False when the recording would exceed the memory limit (the caller evaluates plainly).
        """
        if self.recording is None:
            self.recording = Recording()
        rec = self.recording
        missing = rec.missing(names)
        if not missing:
            return True
        if rec.bytes > self.cache_limit_bytes:
            rec.forget(set(names))
        original = _shallow_module_copy(self.model)
        rec.install(original, [n for n in names if n not in missing])
        hooks = rec.record(original, missing)
        try:
            self.task.evaluate(original, limit=self.limit, device=self.device)
        except BaseException:
            rec.discard(missing)
            raise
        finally:
            for h in hooks:
                h.remove()
        self.recording_passes += 1
        if sum(rec.sizes[n] for n in names) > self.cache_limit_bytes:
            log.info("activation cache for %s would hold %.0f MB > limit; evaluating without it",
                     names[-1], sum(rec.sizes[n] for n in names) / 1e6)
            rec.discard(missing)
            return False
        return True


def _shallow_module_copy(model: nn.Module) -> nn.Module:
    """Copy the module tree (containers) but share parameters, so replays can be swapped in cheaply."""
    memo: dict[int, Any] = {}
    for p in model.parameters():
        memo[id(p)] = p
    for b in model.buffers():
        memo[id(b)] = b
    return copy.deepcopy(model, memo)


def _sweep_knob(*, model: nn.Module, task: Task, apply: Applier, cost: CostFn, evaluator: _Evaluator,
                baseline: Score, latency: Callable[[nn.Module], float] | None, knob: Knob) -> list[SensitivityPoint]:
    out = []
    for amount in knob.amounts:
        transformed = apply(model, knob, amount).eval()
        score = evaluator.evaluate(transformed)
        params, macs, wbytes = cost(transformed, {knob.name: float(amount)})
        lat = latency(transformed) if latency else None
        out.append(SensitivityPoint(knob.name, float(amount), score.value, baseline.drop_to(score), params, macs, wbytes, lat))
    return out


def sensitivity_sweep(
    model: nn.Module,
    task: Task,
    knobs: Sequence[Knob],
    apply: Applier,
    *,
    example_input: Any = None,
    limit: int | None = None,
    cache: bool = True,
    cache_limit_mb: float = 2048.0,
    workers: int = 1,
    resume: str | Path | None = None,
    latency: Callable[[nn.Module], float] | None = None,
    cost: CostFn | None = None,
    progress: bool = True,
    device: str = "cpu",
) -> SensitivityTable:
    """Measure metric and cost for every knob at every amount, one knob at a time.

    Args:
        model: the baseline model (never mutated).
        task: judges each transformed copy (``task.evaluate(..., limit=limit)``).
        knobs: where to act and which amounts to try.
        apply: builds a transformed copy for ``(knob, amount)``.
        example_input: input for cost counting (default ``task.example_input()``).
        limit: evaluate on the first ``limit`` validation images (a user-sized subset).
        cache: replay activations the change cannot affect.
        cache_limit_mb: skip caching for a knob whose recording would exceed this.
        workers: local ranks (a gloo group of forked processes, one thread each) that share the
            knobs; ignored inside a process group (under ``torchrun`` the knobs are sharded over its
            ranks, every rank returns the whole table, and rank 0 alone reads and writes ``resume``).
        resume: JSON path: finished points are read from it (if present) and it is rewritten after
            every knob, so an interrupted sweep continues where it stopped.
        latency: optional ``latency(model) -> ms`` measured for each point.
        cost: counts params/MACs/weight bytes (default :func:`profile_cost`).
        progress: show a progress bar with ETA.
        device: where to evaluate.

    Returns:
        The :class:`SensitivityTable`.
    """
    if workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")
    join_from_env(device)
    example_input = task.example_input() if example_input is None else example_input
    t0 = time.perf_counter()
    baseline = task.evaluate(model, limit=limit, device=device)
    cost = cost or profile_cost(example_input)
    bp, bm, bw = cost(model, {})
    table = SensitivityTable(baseline.metric, baseline.value, baseline.higher_is_better, bp, bm, bw)
    done: set[tuple[str, float]] = set()
    # rank 0 reads the resume file; every rank skips the points it holds
    previous = from_main(lambda: SensitivityTable.load(resume) if resume is not None and Path(resume).exists() else None)
    if previous is not None:
        # weight bytes too: the same model counted another way (compress's int8 file) is not the same sweep
        if ((previous.base_params, previous.base_macs, previous.base_weight_bytes) == (bp, bm, bw)
                and abs(previous.baseline - baseline.value) < 1e-9):
            table.points = previous.points
            done = {(p.knob, p.amount) for p in previous.points}
            total = sum(len(k.amounts) for k in knobs)
            measured = len({(k.name, float(a)) for k in knobs for a in k.amounts} & done)
            if is_main() and measured == total:
                progress_log.info("sensitivity sweep: all %d points measured already, none run again", total)
            elif is_main():
                progress_log.info("resuming the sensitivity sweep: %d of %d points already measured", measured, total)
        elif is_main():
            log.warning("ignoring %s: it was measured on a different model or data", resume)
    todo = [Knob(k.name, tuple(a for a in k.amounts if (k.name, float(a)) not in done), k.layers) for k in knobs]
    todo = [k for k in todo if k.amounts]
    evaluator = _Evaluator(model, task, example_input, limit=limit, cache=cache,
                           cache_limit_bytes=int(cache_limit_mb * 1e6), device=device)
    evaluator.prime(todo)
    ctx = dict(model=model, task=task, apply=apply, cost=cost, evaluator=evaluator,
               baseline=baseline, latency=latency)
    ranks = world()[1]
    with contextlib.ExitStack() as stack:
        advance = (stack.enter_context(phase("sensitivity sweep", total=len(todo), unit="knobs"))
                   if progress and is_main() and todo else None)

        def bar(knob: str) -> None:
            if advance is not None:
                advance()

        if ranks > 1:
            _sweep_sharded(ctx, todo, table, resume, bar)
        elif workers > 1 and len(todo) > 1:
            ranks = min(workers, len(todo))
            on_local_ranks(ranks, lambda: _sweep_sharded(ctx, todo, table, resume, bar))
        else:
            for knob in todo:
                table.points.extend(_sweep_knob(**ctx, knob=knob))
                _checkpoint(table, resume)
                bar(knob.name)
    table.conditions = {
        "dataset": baseline.dataset, "subset": limit if limit is not None else baseline.n, "cache": cache,
        "workers": ranks, "seconds": round(time.perf_counter() - t0, 3), "device": device,
        "replayed_modules": evaluator.replayed_modules, "recording_passes": evaluator.recording_passes,
    }
    if is_main():
        _checkpoint(table, resume)
    return table


def _sweep_sharded(ctx: dict[str, Any], todo: list[Knob], table: SensitivityTable, resume: str | Path | None,
                   bar: Callable[[str], None]) -> None:
    """Rank r sweeps knobs r, r + size, ...; after each round every rank gathers all points (rank 0 saves).

    Points arrive in ``todo`` order, so the table is the one a single process writes.
    """
    for gathered in round_robin(todo, lambda knob: _sweep_knob(**ctx, knob=knob)):
        for points in gathered:
            table.points.extend(points or [])
            if points and is_main():
                bar(points[0].knob)
        if is_main():
            _checkpoint(table, resume)


def _checkpoint(table: SensitivityTable, path: str | Path | None) -> None:
    if path is not None:
        table.save(path)


__all__ = ["Applier", "CostFn", "Knob", "SensitivityPoint", "SensitivityTable", "profile_cost", "sensitivity_sweep"]
