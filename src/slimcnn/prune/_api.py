"""One call from a criterion and an amount to a pruned model and its plan."""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from torch import nn

from slimcnn.errors import ConfigError
from slimcnn.graph import ChannelGraph, rollback_on_error, trace
from slimcnn.prune._compensate import Compensation, compensation, compensation_mode
from slimcnn.prune._criteria import ScoreContext, score_groups
from slimcnn.prune._plan import PrunePlan, fingerprint
from slimcnn.prune._select import (
    prunable_groups,
    removal_for_keep,
    removal_for_macs,
    select_removal,
    validate_amount,
)
from slimcnn.prune._surgery import prune_

log = logging.getLogger(__name__)


class NothingPrunableWarning(UserWarning):
    """:func:`prune_model_` found no group it may prune (all protected or excluded) and left the model as is."""


@dataclass(frozen=True)
class PruneOutcome:
    """What :func:`prune_model_` did."""

    plan: PrunePlan
    removal: dict[int, list[int]]
    """{group id: removed group channels} (group ids of the trace of the unpruned model)."""
    prune_ratio: float | None
    """The ratio used (the bisected one for a MACs target)."""
    macs_before: int
    macs_after: int
    """Conv/linear MACs of the traced forward, before and after (exact for those layers)."""
    prunable_groups: int = -1
    """Channel groups that could be pruned (prunable and not excluded); ``0``: nothing was prunable, the
    model is unchanged and a :class:`NothingPrunableWarning` was issued. ``-1``: not counted."""


def prune_model_(
    model: nn.Module,
    example_input: Any,
    *,
    criterion: str = "l1",
    prune_ratio: float | Mapping[str, float] | None = None,
    macs: float | None = None,
    keep: Mapping[str, int] | None = None,
    scope: Literal["local", "global"] = "local",
    round_to: int = 1,
    exclude: Sequence[str] = (),
    reduce: Literal["sum", "mean", "max"] = "sum",
    task: Any = None,
    calib: int = 8,
    batches: Sequence[Any] = (),
    seed: int = 0,
    source: str = "",
    graph: ChannelGraph | None = None,
    compensate: bool | str = False,
    best_effort: bool = False,
) -> PruneOutcome:
    """Score channels with ``criterion`` and physically prune ``model`` in place.

    Transactional: when it raises (a refused removal, a pruned forward that fails, a failed
    compensation), ``model`` is left exactly as it was.

    Exactly one amount: ``prune_ratio`` (fraction removed, per group; a ``{FQN pattern: ratio}`` map for
    per-layer ratios; ``scope="global"`` ranks all groups together), ``macs`` (target fraction of the
    original conv/linear MACs, e.g. ``0.5``; the ratio is found by bisection) or ``keep`` (``{producer
    FQN: output channels to keep}``).

    ``compensate="mean"`` (or ``True``) folds each removed channel's mean activation over the calibration data
    (``batches``, else ``task.calibration_batches(calib)``) into the bias of the layers that read it
    (see :mod:`slimcnn.prune._compensate`; exact for 1×1 / unpadded convs and Linear consumers,
    approximate at the borders of padded ``k > 1`` convs). ``compensate="lsq"`` refits the weights and bias
    of every conv / ConvTranspose / Linear that reads a removed channel by least squares to its original
    output on the calibration data (:func:`~slimcnn.prune.least_squares_fits`; mean folding for other
    consumers). Recorded as ``plan.options["compensate"]`` (the mode, or False).

    With ``macs`` and ``best_effort=True`` an unreachable target prunes as far as possible (check
    ``macs_after``) instead of raising :class:`~slimcnn.errors.BudgetError`.

    When no group may be pruned (every channel protected, or every prunable group matched by ``exclude``), the
    model is returned unchanged with ``prunable_groups == 0`` and a :class:`NothingPrunableWarning`.

    Raises:
        ConfigError: not exactly one amount, an unknown ``compensate`` mode, or compensation without ``task``
            or ``batches``.
        BudgetError: ``macs`` cannot be reached and ``best_effort`` is False.
        UnsupportedLayerError: the pruned model fails to run or changes an output shape (e.g. its
            forward hard-codes a channel count); the model is restored first.

    Example:
        >>> out = prune_model_(model, torch.randn(1, 3, 32, 32), criterion="l1", prune_ratio=0.5)
        >>> out.plan.save("plan.json")
    """
    if sum(a is not None for a in (prune_ratio, macs, keep)) != 1:
        raise ConfigError("give exactly one of --ratio, --macs (or keep counts)")
    mode = compensation_mode(compensate)
    if mode and task is None and not batches:
        raise ConfigError(f"{mode} compensation (--compensate {mode}) needs calibration data: pass --task and "
                          "--data (Python: task=... or batches=[...])")
    validate_amount(prune_ratio=prune_ratio, macs=macs, round_to=round_to)
    fp = fingerprint(model)
    graph = graph or trace(model, example_input)
    shape = tuple(example_input.shape) if hasattr(example_input, "shape") else ()
    options = {"prune_ratio": prune_ratio if not isinstance(prune_ratio, Mapping) else dict(prune_ratio),
               "macs": macs, "keep": dict(keep) if keep else None, "scope": scope, "round_to": round_to,
               "exclude": list(exclude), "reduce": reduce, "seed": seed, "calib": calib,
               "compensate": mode or False}
    n_prunable = len(prunable_groups(graph, exclude))
    if n_prunable == 0 and keep is None:
        n_groups = len(graph.groups())
        why = (f"all {n_groups} channel groups are protected (they reach an output or pass an op that cannot be "
               "mapped)" if not exclude else f"none of the {n_groups} channel groups is prunable outside --exclude "
               f"{list(exclude)}")
        warnings.warn(f"nothing to prune: {why}; the model is left unchanged. `slimcnn analyze MODEL --groups` "
                      "(or slimcnn.graph.trace(model, x).summary()) lists each group and why it is fixed",
                      NothingPrunableWarning, stacklevel=2)
        macs0 = graph.estimate_macs()
        plan = PrunePlan({}, criterion, source, fp, shape, options)
        return PruneOutcome(plan, {}, None, macs0, macs0, prunable_groups=0)
    ctx = ScoreContext(model, graph, example_input, task, calib, seed, list(batches))
    scores = score_groups(ctx, criterion, reduce=reduce)
    used: float | None = None
    if keep is not None:
        removal = removal_for_keep(graph, scores, keep, round_to=round_to)
    elif macs is not None:
        removal, used = removal_for_macs(graph, scores, macs, scope=scope, round_to=round_to, exclude=exclude,
                                         best_effort=best_effort)
    else:
        assert prune_ratio is not None
        removal = select_removal(graph, scores, prune_ratio, scope=scope, round_to=round_to, exclude=exclude)
        used = prune_ratio if isinstance(prune_ratio, float) else None
    before = graph.estimate_macs()
    removed = graph.removed_roots(removal)
    after = graph.estimate_macs(removed)
    comp = Compensation()
    if mode:
        comp = compensation(model, graph, removed, list(batches) or list(task.calibration_batches(calib)), mode)
    # prune_ rolls its own failures back; the outer snapshot is needed only to undo it when compensation fails
    with rollback_on_error(model) if comp else contextlib.nullcontext():
        kept = prune_(model, example_input, removal, graph=graph)
        if comp:
            comp.apply_(model, graph, removed)
            log.info("%s compensation: %d layers refitted, %d biases folded", mode, len(comp.fits), len(comp.deltas))
    plan = PrunePlan({k: tuple(v) for k, v in kept.items()}, criterion, source, fp, shape, options)
    log.info("pruned: conv/linear MACs %d -> %d", before, after)
    return PruneOutcome(plan, removal, used, before, after, prunable_groups=n_prunable)
