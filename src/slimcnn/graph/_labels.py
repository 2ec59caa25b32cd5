"""Channel-label tensors: keeping them compact, and finding the tensors among an op's arguments and results."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.utils._pytree import tree_flatten


def compact(ids: Tensor, first: int = 0) -> Tensor:
    """``ids`` with every axis from ``first`` on along which it is constant narrowed to size 1 (it broadcasts
    back to the same labels); later label ops then touch a few elements instead of a whole feature map."""
    if sum(s > 1 for s in ids.shape[first:]) <= 1:
        return ids  # already as small as it pays to make it (a channel vector)
    for d in range(first, ids.dim()):
        if ids.shape[d] > 1 and ids.stride(d) == 0:
            ids = ids.narrow(d, 0, 1)  # a broadcast (expanded) axis is constant: no need to compare
    for d in range(first, ids.dim()):
        if constant_along(ids, d):
            ids = ids.narrow(d, 0, 1)
    return ids


def constant_along(ids: Tensor, d: int) -> bool:
    """Whether ``ids`` has size > 1 along ``d`` and the same labels at every position of that axis.

    The first and last slices are compared first: on a channel axis they differ, and the full comparison
    (a pass over a whole label map) is skipped. The full one compares each slice with the next
    (``torch.equal``: no broadcast, no boolean map; twice as fast as ``(ids == first).all()``)."""
    n = ids.shape[d]
    if n <= 1 or not torch.equal(ids.select(d, 0), ids.select(d, n - 1)):
        return False
    return torch.equal(ids.narrow(d, 1, n - 1), ids.narrow(d, 0, n - 1))


def _tensors(args: Any, kwargs: dict[str, Any]) -> list[Tensor]:
    """The tensors among an op's arguments (nested lists/tuples/dicts), without pytree's per-node cost."""
    found: list[Tensor] = []
    stack: list[Any] = [kwargs, args]  # popped last-in first: argument order is kept
    while stack:
        a = stack.pop()
        if isinstance(a, Tensor):
            found.append(a)
        elif isinstance(a, (list, tuple)):
            stack.extend(reversed(a))
        elif isinstance(a, dict):
            stack.extend(reversed(list(a.values())))
    return found


def _out_tensors(out: Any) -> list[Tensor]:
    if isinstance(out, Tensor):  # the usual case, without pytree's per-node cost
        return [out]
    return [t for t in tree_flatten(out)[0] if isinstance(t, Tensor)]
