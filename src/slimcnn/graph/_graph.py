"""Coupled channel groups built from one trace."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import nn

from slimcnn.errors import ConfigError
from slimcnn.graph._context import gc_paused
from slimcnn.graph._state import LayerRecord, TraceState, _components
from slimcnn.graph._trace import run_trace
from slimcnn.graph._widths import SplitSizes

# weight axis of each (layer kind, role); per-channel layers slice all their per-channel tensors on axis 0
WEIGHT_DIM: dict[tuple[str, str], int] = {
    ("conv", "out"): 0, ("conv", "in"): 1, ("convt", "out"): 1, ("convt", "in"): 0,
    ("linear", "out"): 0, ("linear", "in"): 1,
}


@dataclass(frozen=True)
class GroupMember:
    """One layer axis inside a :class:`ChannelGroup`.

    ``index[c]`` is the group channel that the layer's channel ``c`` along ``role`` belongs to
    (``-1``: the layer channel carries no channel of this group and is never removed).
    """

    layer: str
    """Module FQN, e.g. ``"layer1.0.conv1"``."""
    kind: str
    """``scatter``, ``conv``, ``convt``, ``linear``, ``bn``, ``gn``, ``in`` or ``prelu``."""
    role: str
    """``out`` (the layer produces these channels) or ``in`` (it reads them; per-channel layers: ``in``)."""
    dim: int
    """The weight axis that gets sliced."""
    index: tuple[int, ...]


@dataclass(frozen=True)
class ChannelGroup:
    """Channels that must be removed together: removing group channel ``i`` removes, in every member,
    the layer channels ``c`` with ``member.index[c] == i``."""

    id: int
    size: int
    """Number of group channels (prunable units)."""
    members: tuple[GroupMember, ...]
    fixed: tuple[tuple[int, str], ...]
    """(group channel, reason) for channels that may not be removed."""

    @property
    def prunable(self) -> bool:
        """True when at least one channel may be removed."""
        return len(self.fixed) < self.size

    @property
    def reason(self) -> str | None:
        """Why the group cannot be pruned (first reason), or None when it can."""
        return None if self.prunable else (self.fixed[0][1] if self.fixed else "empty group")

    @property
    def fixed_set(self) -> frozenset[int]:
        return frozenset(i for i, _ in self.fixed)

    @property
    def producers(self) -> tuple[GroupMember, ...]:
        return tuple(m for m in self.members if m.role == "out")

    def layers(self) -> list[str]:
        """FQNs of all member layers."""
        return sorted({m.layer for m in self.members})


class _Axes:
    """Every layer axis's root labels laid end to end, for per-axis counts of removed channels in one pass."""

    def __init__(self, layers: Mapping[str, LayerRecord], out_arr: Mapping[str, np.ndarray],
                 in_arr: Mapping[str, np.ndarray]) -> None:
        axes = [(f, role, a) for f in layers for role, a in (("out", out_arr[f]), ("in", in_arr[f])) if len(a)]
        self.names = [f for f, _, _ in axes]
        self.len = np.array([len(a) for _, _, a in axes], dtype=np.int64)
        self.start = np.cumsum(self.len) - self.len
        self.flat = np.concatenate([a for _, _, a in axes]) if axes else np.zeros(0, dtype=np.int64)
        self.full = np.array([bool((a >= 0).all()) for _, _, a in axes], dtype=bool)
        # MACs = sum over conv/linear layers of macs_per_pair * kept outputs * kept inputs per group
        index = {(f, role): i for i, (f, role, _) in enumerate(axes)}
        macs = [(rec, index[(f, "out")], index[(f, "in")]) for f, rec in layers.items()
                if rec.out_base >= 0 and (f, "out") in index and (f, "in") in index]
        self.mac_out = np.array([o for _, o, _ in macs], dtype=np.int64)
        self.mac_in = np.array([i for _, _, i in macs], dtype=np.int64)
        self.mac_pair = np.array([rec.macs_per_pair for rec, _, _ in macs], dtype=np.int64)
        # grouped layers keep their per-group input width (whole groups go)
        self.mac_fixed_in = np.array([len(rec.in_rep) // rec.groups if rec.groups != 1 else -1
                                      for rec, _, _ in macs], dtype=np.int64)

    def removed_counts(self, mask: np.ndarray) -> np.ndarray:
        """Removed channels per axis."""
        if not len(self.flat):
            return np.zeros(0, dtype=np.int64)
        return np.add.reduceat(mask[self.flat].astype(np.int64), self.start)

    def emptied(self, mask: np.ndarray) -> str | None:
        """The first layer an axis of which loses every channel (only axes that carry no fixed data), or None."""
        hit = np.flatnonzero(self.full & (self.removed_counts(mask) == self.len))
        return self.names[int(hit[0])] if len(hit) else None

    def macs(self, mask: np.ndarray) -> int:
        kept = self.len - self.removed_counts(mask)
        if not len(self.mac_out):
            return 0
        n_in = np.where(self.mac_fixed_in >= 0, self.mac_fixed_in, kept[self.mac_in])
        return int((self.mac_pair * kept[self.mac_out] * n_in).sum())


class ChannelGraph:
    """The result of :func:`trace`: layer records, atoms (union-find classes) and groups."""

    def __init__(self, state: TraceState, output: Any = None) -> None:
        self.state = state
        self.layers: dict[str, LayerRecord] = state.layers
        self.output = output
        n = state.uf.n
        roots = state.uf.roots_array()
        self._root = roots.tolist()
        # numpy label arrays per layer (vectorised bookkeeping: models have tens of thousands of channels)
        self._out_arr: dict[str, np.ndarray] = {}
        self._in_arr: dict[str, np.ndarray] = {}
        edges_a, edges_b = [], []
        for fqn, rec in self.layers.items():
            outs = roots[rec.out_base : rec.out_base + rec.n_out] if rec.out_base >= 0 else roots[:0]
            rep = np.asarray(rec.in_rep, dtype=np.int64)
            ins = rep.copy()
            ins[rep >= 0] = roots[rep[rep >= 0]]
            self._out_arr[fqn], self._in_arr[fqn] = outs, ins
            for rs in (outs, ins[ins >= 0]):  # a layer axis lies in one group
                edges_a.append(rs[:-1])
                edges_b.append(rs[1:])
        self.out_roots: dict[str, list[int]] = {f: a.tolist() for f, a in self._out_arr.items()}
        self.in_roots: dict[str, list[int]] = {f: a.tolist() for f, a in self._in_arr.items()}
        empty = np.zeros(0, dtype=np.int64)
        group_of = _components(n, np.concatenate([empty, *edges_a]), np.concatenate([empty, *edges_b]))
        atoms = np.unique(roots)  # sorted roots
        keys, gid_of_atom, sizes = np.unique(group_of[atoms], return_inverse=True, return_counts=True)
        order = np.lexsort((atoms, gid_of_atom))  # by group, then root: group channel order
        k_of_atom = np.empty(len(atoms), dtype=np.int64)
        k_of_atom[order] = np.arange(len(atoms)) - np.repeat(np.cumsum(sizes) - sizes, sizes)
        self._gid = np.full(n + 1, -1, dtype=np.int64)  # root -> group id; slot -1 (index n): no channel
        self._k = np.full(n + 1, -1, dtype=np.int64)  # root -> group channel index
        self._gid[atoms], self._k[atoms] = gid_of_atom, k_of_atom
        self._atoms_in_order = atoms[order]  # group 0's roots in channel order, then group 1's, ...
        self._group_start = np.cumsum(sizes) - sizes
        self.atom: dict[int, tuple[int, int]] = dict(
            zip(atoms.tolist(), zip(gid_of_atom.tolist(), k_of_atom.tolist(), strict=True), strict=True))
        """root id -> (group id, group channel index)."""
        members: list[list[GroupMember]] = [[] for _ in range(len(keys))]
        for fqn, rec in self.layers.items():
            for role, rs in (("out", self._out_arr[fqn]), ("in", self._in_arr[fqn])):
                valid = rs[rs >= 0]
                if not len(valid):
                    continue
                idx = tuple(self._k[rs].tolist())  # -1 stays -1: self._k[-1] is the no-channel slot
                dim = WEIGHT_DIM.get((rec.kind, role), 0)
                members[int(self._gid[valid[0]])].append(GroupMember(fqn, rec.kind, role, dim, idx))
        fixed: list[list[tuple[int, str]]] = [[] for _ in range(len(keys))]
        blocked: dict[int, str] = {}
        for i, why in sorted(state.blocked.items()):
            blocked.setdefault(self._root[i], why)
        for r, why in blocked.items():
            g, k = self.atom[r]
            fixed[g].append((k, why))
        self._base_macs: int | None = None
        self._fixed_mask = np.zeros(n + 1, dtype=bool)
        self._fixed_mask[list(blocked)] = True
        self._axes = _Axes(self.layers, self._out_arr, self._in_arr)
        self._groups: list[ChannelGroup] = [
            ChannelGroup(gid, int(sizes[gid]), tuple(members[gid]), tuple(sorted(fixed[gid])))
            for gid in range(len(keys))
        ]

    @property
    def check_reason(self) -> str | None:
        """Why a pruned copy of the model must be run once to check that every output keeps its shape, or None
        when the trace proves it: the channel data passed only layers with a built-in slicer and ops whose result
        shape follows their inputs' shapes (element-wise, pooling, reductions, flatten, permute, pixel shuffle,
        concat along the channel axis), no Python code read a size of it, a value of a computed tensor or a layer
        width, and every tensor the forward used came from the input or from an op the trace saw (no weight used
        outside its layer, no TorchScript or C++ extension, no forward hooks on a layer)."""
        return self.state.check_reason

    def groups(self) -> list[ChannelGroup]:
        """All channel groups, in forward order of their first producer."""
        return list(self._groups)

    def group(self, gid: int) -> ChannelGroup:
        """Group ``gid``."""
        if not 0 <= gid < len(self._groups):
            raise ConfigError(f"group id {gid} out of range: the graph has {len(self._groups)} groups")
        return self._groups[gid]

    def producer_group(self, layer: str) -> int:
        """Group id of the output channels of producer ``layer``."""
        outs = self.out_roots.get(layer)
        if not outs:
            names = [f for f, o in self.out_roots.items() if o]
            from slimcnn.errors import unknown_name

            raise unknown_name("prunable layer (conv/linear producer)", layer, names)
        return self.atom[outs[0]][0]

    # ---- removal sets ------------------------------------------------------------------------
    def removed_roots(self, removal: Mapping[int | str, Iterable[int]]) -> set[int]:
        """Turn ``{group id: [group channels]}`` or ``{producer FQN: [output channels]}`` into atom roots.

        Raises:
            ConfigError: out-of-range indices or channels that must not be removed.
        """
        out: set[int] = set()
        for key, idx in removal.items():
            idx = [int(i) for i in idx]
            if isinstance(key, str) and not key.isdigit():
                outs = self.out_roots.get(key) or []
                self.producer_group(key)
                for c in idx:
                    if not 0 <= c < len(outs):
                        raise ConfigError(f"channel {c} out of range for '{key}' ({len(outs)} output channels)")
                    out.add(outs[c])
            else:
                g = self.group(int(key))
                bad = [i for i in idx if not 0 <= i < g.size]
                if bad:
                    raise ConfigError(f"channel {bad[0]} out of range for group {g.id} (size {g.size})")
                start = self._group_start[g.id]
                out.update(self._atoms_in_order[start + np.asarray(idx, dtype=np.int64)].tolist())
        mask = self._mask(out)
        hit = np.flatnonzero(mask & self._fixed_mask)
        if len(hit):
            g, k = self.atom[int(hit[0])]
            raise ConfigError(
                f"channel {k} of group {g} (layers {', '.join(self._groups[g].layers()[:4])}) cannot be "
                f"removed: {dict(self._groups[g].fixed)[k]}"
            )
        emptied = self._axes.emptied(mask)
        if emptied is not None:
            raise ConfigError(f"removal would leave '{emptied}' with zero channels; keep at least one")
        return out

    def _mask(self, removed: set[int]) -> np.ndarray:
        """Boolean mask over root ids (plus a last always-False slot that label ``-1`` indexes)."""
        mask = np.zeros(self.state.uf.n + 1, dtype=bool)
        if removed:
            mask[np.fromiter(removed, dtype=np.int64, count=len(removed))] = True
        return mask

    def kept(self, removed: set[int]) -> dict[str, tuple[list[int], list[int]]]:
        """Per layer: (kept output channels, kept input channels) under the removed atom roots."""
        mask = self._mask(removed)
        res = {}
        for fqn in self.layers:
            outs, ins = self._out_arr[fqn], self._in_arr[fqn]
            res[fqn] = (np.flatnonzero(~mask[outs]).tolist(), np.flatnonzero(~mask[ins]).tolist())
        return res

    def split_sizes(self, removed: set[int]) -> list[tuple[SplitSizes, list[int]]]:
        """Each list of split sizes the forward keeps on a module, with its counts under the removed atom roots."""
        mask, roots = self._mask(removed), self.state.uf.roots_array()
        return [(rec, [len(seg) - int(mask[np.where(seg >= 0, roots[seg], len(roots))].sum()) for seg in rec.segments])
                for rec in self.state.splits.values()]

    def estimate_macs(self, removed: set[int] | None = None) -> int:
        """Conv/linear MACs of the traced forward after removing ``removed`` (exact for those layers)."""
        if not removed and self._base_macs is not None:
            return self._base_macs
        total = self._axes.macs(self._mask(removed or set()))
        if not removed:
            self._base_macs = total
        return total

    def summary(self) -> str:
        """One line per group: id, size, prunable, members."""
        lines = []
        for g in self._groups:
            state = "prunable" if g.prunable else f"fixed ({g.reason})"
            lines.append(f"group {g.id}: {g.size} ch, {len(g.fixed)} fixed, {state}: {', '.join(g.layers()[:6])}")
        return "\n".join(lines)


def trace(model: nn.Module, example_input: Any) -> ChannelGraph:
    """Trace ``model`` with one real forward on ``example_input`` and build its channel groups.

    Args:
        model: any ``nn.Module`` (no torch.fx requirement); run in eval mode without gradients.
        example_input: a Tensor (``model(x)``), a tuple (``model(*x)``) or another object passed as is
            (e.g. a list of images for torchvision detectors). Small spatial sizes trace fastest.

    Returns:
        The :class:`ChannelGraph`; ``graph.groups()`` lists the coupled channel groups.

    Example:
        >>> g = trace(torchvision.models.resnet18(), torch.randn(1, 3, 64, 64))
        >>> [grp.size for grp in g.groups() if grp.prunable][:3]
    """
    with gc_paused():
        state, out = run_trace(model, example_input)
        return ChannelGraph(state, out)
