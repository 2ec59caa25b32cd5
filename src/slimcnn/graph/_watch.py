"""Layer widths that report when the model's Python code reads them during a trace.

Pruning changes a layer's ``out_channels`` / ``in_features`` / ``num_groups`` ...; a forward that compares or
computes with one (``if self.conv.out_channels == 64:``) may take another path once pruned, which no channel
label shows. For the length of a trace these attributes hold :class:`WatchedWidth` ints: equal in value and
in C (``F.conv2d(..., groups=self.groups)`` reads the value directly), but any Python arithmetic, comparison
or conversion outside the layer's own forward records a reason to run the shape check. So does a Python read of
a size or value of channel data (:func:`note_query`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from torch import nn

from slimcnn.graph._labels import _tensors

WIDTH_ATTRS = ("in_channels", "out_channels", "groups", "in_features", "out_features", "num_features",
               "num_channels", "num_groups", "num_parameters")
"""The attributes the built-in slicers set (:mod:`slimcnn.graph._surgery`)."""


class WatchedWidth(int):
    """An ``int`` that calls ``on_use(attr)`` whenever Python code computes with it."""

    on_use: Callable[[str], None]
    attr: str


def _watch(op: str) -> Callable[..., Any]:
    plain = getattr(int, op)

    def method(self: WatchedWidth, *args: Any) -> Any:
        self.on_use(self.attr)
        return plain(self, *args)

    method.__name__ = op
    return method


for _op in ("__eq__ __ne__ __lt__ __le__ __gt__ __ge__ __add__ __radd__ __sub__ __rsub__ __mul__ __rmul__ "
            "__floordiv__ __rfloordiv__ __truediv__ __rtruediv__ __mod__ __rmod__ __divmod__ __rdivmod__ __pow__ "
            "__rpow__ __neg__ __pos__ __abs__ __bool__ __index__ __int__ __float__ __format__ __str__ __repr__ "
            "__and__ __rand__ __or__ __ror__ __lshift__ __rshift__").split():
    setattr(WatchedWidth, _op, _watch(_op))
WatchedWidth.__hash__ = int.__hash__  # type: ignore[method-assign]  # __eq__ is overridden: keep int hashing


@contextmanager
def watched_widths(layers: list[tuple[str, nn.Module]], on_use: Callable[[str], None]) -> Iterator[None]:
    """For the body, every width attribute of ``layers`` (``(fqn, module)``) is a :class:`WatchedWidth` that calls
    ``on_use("<fqn>.<attr>")``; the plain ints are put back after, also when the body raises."""
    saved: list[tuple[nn.Module, str, int]] = []
    try:
        for fqn, m in layers:
            for attr in WIDTH_ATTRS:
                v = m.__dict__.get(attr)
                if type(v) is int:
                    w = WatchedWidth(v)
                    w.attr, w.on_use = f"{fqn}.{attr}", on_use
                    m.__dict__[attr] = w
                    saved.append((m, attr, v))
        yield
    finally:
        for m, attr, v in saved:
            m.__dict__[attr] = v


def note_query(tr: Any, func: Any, args: Any, kwargs: dict[str, Any]) -> None:
    """The tracer ``tr`` saw a query answered with a plain value (``x.shape``, ``x.size(1)``, ``bool(x)``): Python code
    may branch on it or pass it on as a literal, so one of channel data (or of unseen data, e.g. a weight) needs the
    check."""
    name = tr.query_names.get(func)
    if name is None:
        from slimcnn.graph._ops import normalize_name

        obj = getattr(func, "__self__", None) if getattr(func, "__name__", "") == "__get__" else func
        name = tr.query_names[func] = normalize_name(obj)  # a property (Tensor.shape) by its descriptor's name
    from slimcnn.graph._ops import METADATA, SIZE_QUERIES

    if name in METADATA:
        return
    tensors = _tensors(args, kwargs)
    if name in SIZE_QUERIES:
        if any(tr.ids(t) is not None or not tr.seen(t) for t in tensors):
            tr.needs_check(f"the forward reads '{name}' of channel data (it may steer the forward by a "
                           "channel count)")
    elif any(id(t) not in tr.inputs for t in tensors):
        tr.needs_check(f"the forward reads '{name}' of a computed tensor (pruning changes its value, and "
                       "maybe the path it steers)")
