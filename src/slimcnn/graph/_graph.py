"""Coupled channel groups built from one trace."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from slimcnn.errors import ConfigError
from slimcnn.graph._trace import LayerRecord, TraceState, UnionFind, gc_paused, run_trace

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


class ChannelGraph:
    """The result of :func:`trace`: layer records, atoms (union-find classes) and groups."""

    def __init__(self, state: TraceState, output: Any = None) -> None:
        self.state = state
        self.layers: dict[str, LayerRecord] = state.layers
        self.output = output
        uf = state.uf
        n = uf.n
        roots = uf.roots()
        self._root = roots
        self.out_roots: dict[str, list[int]] = {}
        self.in_roots: dict[str, list[int]] = {}
        uf2 = UnionFind()
        uf2.add(n)
        for fqn, rec in self.layers.items():
            outs = roots[rec.out_base : rec.out_base + rec.n_out] if rec.out_base >= 0 else []
            ins = [roots[i] if i >= 0 else -1 for i in rec.in_rep]
            self.out_roots[fqn], self.in_roots[fqn] = outs, ins
            for rs in (outs, [r for r in ins if r >= 0]):
                uf2.union_many(rs[:1] * (len(rs) - 1), rs[1:])
        group_of = uf2.roots()
        atoms_by_group: dict[int, list[int]] = {}
        for r in sorted(set(roots)):
            atoms_by_group.setdefault(group_of[r], []).append(r)
        blocked: dict[int, str] = {}
        for i, why in sorted(state.blocked.items()):
            blocked.setdefault(roots[i], why)
        self.atom: dict[int, tuple[int, int]] = {}
        """root id -> (group id, group channel index)."""
        for gid, key in enumerate(sorted(atoms_by_group)):
            for k, r in enumerate(atoms_by_group[key]):
                self.atom[r] = (gid, k)
        members: dict[int, list[GroupMember]] = {g: [] for g in range(len(atoms_by_group))}
        for fqn, rec in self.layers.items():
            for role, rs in (("out", self.out_roots[fqn]), ("in", self.in_roots[fqn])):
                valid = [r for r in rs if r >= 0]
                if not valid:
                    continue
                gid = self.atom[valid[0]][0]
                idx = tuple(self.atom[r][1] if r >= 0 else -1 for r in rs)
                members[gid].append(GroupMember(fqn, rec.kind, role, WEIGHT_DIM.get((rec.kind, role), 0), idx))
        self._group_roots: dict[int, list[int]] | None = None
        self._base_macs: int | None = None
        self._groups: list[ChannelGroup] = []
        for gid, key in enumerate(sorted(atoms_by_group)):
            atoms = atoms_by_group[key]
            fixed = tuple((k, blocked[r]) for k, r in enumerate(atoms) if r in blocked)
            self._groups.append(ChannelGroup(gid, len(atoms), tuple(members[gid]), fixed))

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
        roots_of_group = self._roots_of_group()
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
                for i in idx:
                    if not 0 <= i < g.size:
                        raise ConfigError(f"channel {i} out of range for group {g.id} (size {g.size})")
                    out.add(roots_of_group[g.id][i])
        for r in out:
            g, k = self.atom[r]
            fixed = dict(self._groups[g].fixed)
            if k in fixed:
                raise ConfigError(
                    f"channel {k} of group {g} (layers {', '.join(self._groups[g].layers()[:4])}) cannot be "
                    f"removed: {fixed[k]}"
                )
        for fqn in self.layers:
            for rs in (self.out_roots[fqn], self.in_roots[fqn]):
                if rs and all(r in out for r in rs if r >= 0) and all(r >= 0 for r in rs):
                    raise ConfigError(f"removal would leave '{fqn}' with zero channels; keep at least one")
        return out

    def _roots_of_group(self) -> dict[int, list[int]]:
        """``{group id: atom roots in group channel order}`` (built once: pruning calls it per selection)."""
        if self._group_roots is None:
            self._group_roots = {}
            for r, (g, _k) in self.atom.items():
                self._group_roots.setdefault(g, []).append(r)
            for rs in self._group_roots.values():
                rs.sort(key=lambda r: self.atom[r][1])
        return self._group_roots

    def kept(self, removed: set[int]) -> dict[str, tuple[list[int], list[int]]]:
        """Per layer: (kept output channels, kept input channels) under the removed atom roots."""
        res = {}
        for fqn in self.layers:
            ko = [c for c, r in enumerate(self.out_roots[fqn]) if r not in removed]
            ki = [c for c, r in enumerate(self.in_roots[fqn]) if r < 0 or r not in removed]
            res[fqn] = (ko, ki)
        return res

    def estimate_macs(self, removed: set[int] | None = None) -> int:
        """Conv/linear MACs of the traced forward after removing ``removed`` (exact for those layers)."""
        if not removed and self._base_macs is not None:
            return self._base_macs
        removed = removed or set()
        total = 0
        for fqn, rec in self.layers.items():
            if rec.out_base < 0 or not rec.in_rep:
                continue
            n_out = sum(1 for r in self.out_roots[fqn] if r not in removed)
            n_in = sum(1 for r in self.in_roots[fqn] if r < 0 or r not in removed)
            per_group_in = n_in if rec.groups == 1 else len(rec.in_rep) // rec.groups
            total += rec.macs_per_pair * n_out * per_group_in
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
