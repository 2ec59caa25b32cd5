"""``prune_``: physically remove channels given by group or by producer layer."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from torch import nn

from slimcnn.errors import UnsupportedLayerError
from slimcnn.graph import ChannelGraph, rollback_on_error, slice_layers_, trace
from slimcnn.prune._verify import check_points, expected, mismatch, observed

log = logging.getLogger(__name__)


def kept_channels(graph: ChannelGraph, removed: set[int]) -> dict[str, list[int]]:
    """{producer FQN: kept output channel indices} for every producer of a touched group."""
    touched = {graph.atom[r][0] for r in removed}
    res = {}
    for fqn, outs in graph.out_roots.items():
        if outs and graph.atom[outs[0]][0] in touched:
            res[fqn] = [c for c, r in enumerate(outs) if r not in removed]
    return res


def prune_(
    model: nn.Module,
    example_input: Any,
    removal: Mapping[int | str, Iterable[int]],
    *,
    graph: ChannelGraph | None = None,
    verify: bool = True,
) -> dict[str, list[int]]:
    """Physically remove channels from ``model`` (in place, transactionally: when it raises, the model is
    left exactly as it was).

    Args:
        model: the model; traced on ``example_input`` unless ``graph`` is given.
        example_input: see :func:`slimcnn.graph.trace`.
        removal: ``{group id: [group channel indices]}`` and/or ``{producer FQN: [output channels]}``.
            Removing a channel removes every channel coupled with it.
        graph: a trace of this very model (saves one forward).
        verify: make sure every output keeps its shape: run the pruned model once and compare (for torchvision
            detectors: the outputs of the heads before box selection, see :mod:`slimcnn.prune._verify`), unless
            the trace proves it (``graph.check_reason`` is None). The pruned model must also equal the original
            with the pruned channels zeroed (:func:`slimcnn.graph.zeroed_forward`) to float rounding, at its
            outputs (a detector: at its dense heads).

    Returns:
        ``{producer FQN: kept output channels}`` for every producer whose group was touched
        (the ``layers`` of a :class:`~slimcnn.prune.PrunePlan`).

    Raises:
        ConfigError: a channel is protected (reaches an output, passes an unmappable op) or a layer
            would lose all its channels.
        UnsupportedLayerError: the pruned model no longer runs, changed an output shape or computes something
            else than the zeroed original (e.g. the model's Python code hard-codes a channel count).
    """
    if graph is None:
        graph = trace(model, example_input)
    removed = graph.removed_roots(removal)
    kept = kept_channels(graph, removed)
    if not removed:
        return kept
    points = check_points(model) if verify else None
    if verify and points is None and graph.check_reason is None:
        verify = False  # the trace proves every shape (see ChannelGraph.check_reason): a run would add nothing
        log.debug("no check run: the trace proves that every output keeps its shape")
    before = expected(model, example_input, points, graph, removal) if verify else None
    with rollback_on_error(model):  # a refusal leaves the caller's model as it was
        changed = slice_layers_(model, graph, removed)
        log.info("pruned %d channel units across %d layers", len(removed), len(changed))
        if before is not None:
            try:
                after = observed(model, example_input, points)
            except (RuntimeError, ValueError, IndexError) as e:
                raise UnsupportedLayerError(
                    f"the pruned model fails to run ({str(e).splitlines()[0]}); its forward code probably "
                    f"hard-codes a channel count{_noted(graph)}. Exclude the affected layers (--exclude) or make the "
                    "count dynamic. The model was left unchanged"
                ) from e
            bad = mismatch(before, after)
            if bad:
                raise UnsupportedLayerError(f"{bad}{_noted(graph)}; the model was left unchanged")
    return kept


def _noted(graph: ChannelGraph) -> str:
    """The trace's first reason to run the check, as a hint in a refusal (where to look in the model's code)."""
    return f"; the trace noted: {graph.check_reason}" if graph.check_reason else ""
