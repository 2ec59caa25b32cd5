"""What a trace records: channel ids joined by a vectorised union-find, and per-layer records."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from slimcnn.graph._widths import SplitSizes


def _components(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Smallest id of the connected component of each of ``n`` ids under the edges ``a[i] -- b[i]``.

    Min-label hooking with pointer jumping: every round hooks each edge's larger root under the smaller
    one, then flattens the trees; a few rounds for the graphs a trace builds."""
    label = np.arange(n, dtype=np.int64)
    while len(a):
        la, lb = label[a], label[b]
        low = np.minimum(la, lb)
        np.minimum.at(label, la, low)
        np.minimum.at(label, lb, low)
        while True:  # pointer jumping: every id points at its root
            up = label[label]
            if np.array_equal(up, label):
                break
            label = up
        if np.array_equal(label[a], label[b]):
            break
    return label


class UnionFind:
    """Union-find over integer ids, resolved in one pass.

    Unions are recorded as edges and :meth:`roots` labels the connected components once, vectorised: a
    per-union Python find costs more than the traced forward on models with thousands of channels.
    """

    def __init__(self) -> None:
        self.n = 0
        self._a: list[int] = []
        self._b: list[int] = []
        self._roots: np.ndarray | None = None

    def add(self, n: int) -> int:
        """Allocate ``n`` new ids; returns the first."""
        start = self.n
        self.n += n
        self._roots = None
        return start

    def union(self, a: int, b: int) -> None:
        self.union_many([a], [b])

    def union_many(self, a: list[int], b: list[int]) -> None:
        """Union ``a[i]`` with ``b[i]`` for every ``i``."""
        self._a.extend(a)
        self._b.extend(b)
        self._roots = None

    def roots(self) -> list[int]:
        """The root of every id: the smallest id of its component."""
        return self.roots_array().tolist()

    def roots_array(self) -> np.ndarray:
        """:meth:`roots` as an int64 array."""
        if self._roots is None:
            self._roots = _components(self.n, np.asarray(self._a, dtype=np.int64), np.asarray(self._b, dtype=np.int64))
        return self._roots

    def find(self, a: int) -> int:
        return int(self.roots_array()[a])


@dataclass
class LayerRecord:
    """What the trace saw of one leaf layer (all calls merged)."""

    fqn: str
    kind: str
    """``scatter``, ``conv``, ``convt``, ``linear``, ``bn``, ``gn``, ``in``, ``prelu``."""
    out_base: int = -1
    """First id of this producer's output channels (``-1`` for per-channel layers)."""
    n_out: int = 0
    in_rep: list[int] = field(default_factory=list)
    """One representative id per input channel (``-1``: carries no prunable channel)."""
    groups: int = 1
    macs_per_pair: int = 0
    """MACs per (kept out channel x kept in channel per group), summed over calls (conv/linear)."""
    calls: int = 0


@dataclass
class TraceState:
    """Everything one trace learned; :class:`~slimcnn.graph.ChannelGraph` is built from it."""

    uf: UnionFind = field(default_factory=UnionFind)
    blocked: dict[int, str] = field(default_factory=dict)
    layers: dict[str, LayerRecord] = field(default_factory=dict)
    splits: dict[int, SplitSizes] = field(default_factory=dict)
    """Split sizes kept on a module as a list, by the list's ``id`` (see :mod:`slimcnn.graph._widths`)."""
    check_reason: str | None = None
    """Why the pruned model must be run once to check its shapes; None when the trace proves them (see
    :attr:`slimcnn.graph.ChannelGraph.check_reason`)."""

    def owners(self) -> list[tuple[str, int]]:
        """``(producer FQN, output channel)`` of every channel id, in id order."""
        producers = sorted((r.out_base, r.fqn, r.n_out) for r in self.layers.values() if r.out_base >= 0)
        return [(fqn, c) for _, fqn, n in producers for c in range(n)]
