"""Channel counts a forward keeps on a module as a Python list: ``torch.split(x, self.splits, 1)``.

timm's ``MixedConv2d`` (MixNet) splits its input channels by the sizes in ``self.splits`` and sends each part
to its own conv. The sizes are literals to the trace, so the channels they count were fixed. Instead, the
trace records which module attribute holds the list (found by identity: the list object ``split`` received)
and which channels each size counts; pruning rebinds the attribute to the kept counts (a new list, so a
rollback restores the old one). The trace also asks for a check run, which compares the pruned model's
values with the original's: a forward that reads the list elsewhere is judged there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from slimcnn.errors import UnsupportedLayerError

if TYPE_CHECKING:
    from slimcnn.graph._trace import _Tracer


@dataclass(frozen=True)
class SplitSizes:
    """One list of split sizes kept on a module, and the channels each size counts."""

    owners: tuple[tuple[str, str], ...]
    """(module FQN, attribute) of every attribute that holds the list object."""
    sizes: tuple[int, ...]
    """The sizes as traced."""
    segments: tuple[np.ndarray, ...]
    """Per size, one channel id per channel it counts (``-1``: data of no prunable channel, always kept)."""


def _sizes_arg(args: Any, kwargs: dict[str, Any]) -> Any:
    for key in ("split_size_or_sections", "split_size", "split_sizes"):
        if key in kwargs:
            return kwargs[key]
    return args[1] if len(args) > 1 else None


def record_split(tr: _Tracer, args: Any, kwargs: dict[str, Any], src: Tensor, dim: int) -> bool:
    """Record a ``split`` of channel axis ``dim`` of ``src`` by a list kept on a module; False (nothing recorded)
    when the sizes are not such a list."""
    sizes = _sizes_arg(args, kwargs)
    if type(sizes) is not list or not all(type(s) is int for s in sizes) or sum(sizes) != src.shape[dim]:
        return False
    owners = tr.list_owners(sizes)
    if not owners:
        return False
    reps = np.asarray(tr.channel_reps(src, dim, "'split'"), dtype=np.int64)
    bounds = np.cumsum([0, *sizes])
    segments = tuple(reps[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True))
    seen = tr.st.splits.get(id(sizes))
    if seen is None:
        tr.st.splits[id(sizes)] = SplitSizes(tuple(owners), tuple(sizes), segments)
        names = ", ".join(f"'{f}.{a}'" for f, a in owners)
        tr.needs_check(f"the forward splits channels by the sizes in {names}, which pruning rewrites")
        return True
    if seen.sizes != tuple(sizes):
        return False
    # the same list splits another tensor (a module called twice): each size must count the same channels
    for a, b in zip(seen.segments, segments, strict=True):
        both = (a >= 0) & (b >= 0)
        tr.st.uf.union_many(a[both].tolist(), b[both].tolist())
        tr.block(torch.from_numpy(np.concatenate([a[~both], b[~both]])),
                 "a list of split sizes counts prunable channels in one call and fixed data in another")
    return True


def rewrite_splits_(model: nn.Module, new_sizes: list[tuple[SplitSizes, list[int]]]) -> None:
    """Bind every recorded split-size attribute to a new list of its kept counts."""
    modules = dict(model.named_modules())
    for rec, kept in new_sizes:
        if tuple(kept) == rec.sizes:
            continue
        for fqn, attr in rec.owners:
            m = modules.get(fqn)
            if m is None or getattr(m, attr, None) != list(rec.sizes):
                raise UnsupportedLayerError(f"'{fqn}.{attr}' changed since the trace (split sizes {list(rec.sizes)})")
            setattr(m, attr, list(kept))
