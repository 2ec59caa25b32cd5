"""Roll a model back to its state before a failed surgery (transactional pruning)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from torch import Tensor, nn


class ModuleSnapshot:
    """Shallow snapshot of every module of a model; :meth:`restore` puts it back.

    It records each module's attributes and its parameter / buffer / submodule bindings, and the data
    each parameter and buffer points to. No tensor is copied: surgery *replaces* tensors (``slice_layers_``
    and channel rules assign new ones), it never writes into the old ones, so keeping references is
    enough. Cost on torchvision resnet50 (measured): snapshot 1.0 ms + restore 0.5 ms and no tensor memory,
    against 73 ms and a second copy of all weights for ``copy.deepcopy``.
    """

    def __init__(self, model: nn.Module) -> None:
        self._mods: list[tuple[nn.Module, dict[str, Any], dict[str, Any], dict[str, Any], dict[str, Any]]] = []
        self._data: list[tuple[Tensor, Tensor]] = []
        for m in model.modules():
            self._mods.append((m, dict(m.__dict__), dict(m._parameters), dict(m._buffers), dict(m._modules)))
            for t in (*m._parameters.values(), *m._buffers.values()):
                if t is not None:
                    self._data.append((t, t.data))

    def restore(self) -> None:
        """Put every module back as it was when the snapshot was taken."""
        for m, attrs, params, bufs, subs in self._mods:
            m.__dict__.clear()
            m.__dict__.update(attrs)
            m.__dict__["_parameters"] = params
            m.__dict__["_buffers"] = bufs
            m.__dict__["_modules"] = subs
        for t, data in self._data:
            if t.data.data_ptr() != data.data_ptr() or t.shape != data.shape:
                t.data = data


@contextmanager
def rollback_on_error(model: nn.Module) -> Iterator[ModuleSnapshot]:
    """Context manager: if the body raises (any exception), ``model`` is restored before it propagates.

    Example:
        >>> with rollback_on_error(model):
        ...     slice_layers_(model, graph, removed)
        ...     check(model)  # raises -> model is unchanged
    """
    snap = ModuleSnapshot(model)
    try:
        yield snap
    except BaseException:
        snap.restore()
        raise
