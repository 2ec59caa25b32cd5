"""The contexts a trace (and a shape check) runs in: the cyclic GC paused, the model in eval mode."""

from __future__ import annotations

import gc
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from torch import nn


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector: a trace allocates many short-lived objects, and a full collection it
    would trigger walks the whole process heap (0.4 s with torch and torchvision loaded, more than tracing a
    ShuffleNet). Nothing the trace builds is cyclic garbage, so nothing is lost; collection resumes after."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


@contextmanager
def eval_mode(model: nn.Module, modules: Iterable[nn.Module] | None = None) -> Iterator[None]:
    """``model`` in eval mode for the body, then back to its top-level mode. A model whose modules are all in
    eval mode already is left alone: ``Module.train`` walks and re-sets every submodule, a cost on every trace
    and every shape check of a pruning call. ``modules``: ``model.modules()`` when the caller has them."""
    if not any(m.training for m in (model.modules() if modules is None else modules)):
        yield
        return
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)
