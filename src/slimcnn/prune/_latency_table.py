"""Latency lookup table: per prunable channel group, the time of the layers it touches vs kept width.

After HALP (Shen et al., NeurIPS 2022, https://arxiv.org/abs/2110.10811): prune to a latency budget from a
lookup table. :mod:`slimcnn.prune._latency_build` measures it; this module holds it and predicts from it.

The prediction multiplies the two sides of a layer, since a conv's time goes with input x output channels: a
layer timed ``F`` at full width keeps ``L + (F - L) * A * B``, where ``A = 1 - sum_g (1 - f_g)`` over the
groups on its input side (a concatenation's parts add up), ``B`` likewise on its output side, ``f_g`` the
group's curve at its width (linear between the samples, flat below the smallest) less ``L``, over ``F - L``,
and ``L`` the floor of a node: ONNX Runtime's dispatch to its threads, ~0.04 ms on this project's VM (a 1x1 conv
of 8 channels on one pixel, profiled), which no cut removes and a product of two fractions would halve again;
``ratio = (sum_layers kept + other) / (sum_layers F + other)``. In-graph, every other node (unfused activations,
pooling, adds, concats) counts as a pseudo-layer ``layer + "+"`` of the conv/linear node run just before it, cut
by the same groups (``other`` is what runs before the first layer). An additive model over-predicts cutting
both sides of a layer: ResNet-50 at uniform half width is 0.25x additive, 0.30x product, 0.29-0.30x measured.
:meth:`LatencyTable.savings` gives the knapsack each group's saving linearised at a selection, exact at a fixed
point (:func:`slimcnn.prune._knapsack.select_for_latency`).
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from slimcnn.measure._nodes import AFTER


@dataclass(frozen=True)
class GroupLatency:
    """Measured time of one group's layers as a function of the group's kept width."""

    layer: str
    """The group's first producer FQN (its name; the ``keep`` key of :func:`prune_model_`)."""
    group_id: int
    """Group id in the trace of the unpruned model."""
    size: int
    """Group channels (prunable units)."""
    min_keep: int
    """Fewest channels the group can keep (fixed channels, at least 1)."""
    widths: tuple[int, ...]
    """Sampled kept widths, ascending; the last is ``size``."""
    layers: tuple[str, ...]
    """Timed conv/linear layers of the group (in-graph tables add ``layer + "+"``: the nodes run after it)."""
    sides: tuple[str, ...]
    """Per layer, the side the group cuts: ``"in"``, ``"out"`` or ``"both"`` (a depthwise conv)."""
    parts: tuple[tuple[float, ...], ...]
    """Per layer, its median ms (less the per-call cost) at each sampled width."""

    @property
    def ms(self) -> tuple[float, ...]:
        """Sum of the layers' ms at each sampled width."""
        return tuple(sum(col) for col in zip(*self.parts, strict=True)) if self.parts else (0.0,) * len(self.widths)

    def at(self, width: float) -> float:
        """Interpolated ms at kept ``width`` (flat below the smallest sample)."""
        return float(np.interp(float(width), self.widths, self.ms))

    def saving(self, width: float) -> float:
        """ms saved by keeping ``width`` instead of all ``size`` channels, every other group whole."""
        return self.at(self.size) - self.at(width)

    def cut(self, i: int, width: float, floor: float = 0.0) -> float:
        """Fraction of layer ``i``'s time above ``floor`` that keeping ``width`` removes, in [0, 1] (noise clipped)."""
        return float(self.cuts(i, [width], floor)[0])

    def cuts(self, i: int, widths: Sequence[float], floor: float = 0.0) -> np.ndarray:
        """:meth:`cut` at each of ``widths`` (one interpolation: the knapsack asks for every candidate width)."""
        full = self.parts[i][-1] - floor
        if full <= 1e-12:
            return np.zeros(len(widths))
        kept = (np.interp(np.asarray(widths, dtype=float), self.widths, self.parts[i]) - floor) / full
        return np.clip(1.0 - kept, 0.0, 1.0)


@dataclass(frozen=True)
class LatencyTable:
    """Per-group latency curves of one model on one runtime (see the module notes)."""

    key: str
    """Cache key: fingerprint | runtime | threads | CPU | versions | input shape | sampling | in-graph or alone."""
    fingerprint: str
    runtime: str
    threads: int
    input_shape: tuple[int, ...]
    block: int
    """Channel block the widths were sampled on."""
    layer_ms: dict[str, float]
    """Every timed conv/linear layer's (and in-graph pseudo-layer's) median ms at full width."""
    groups: tuple[GroupLatency, ...]
    timings: int
    """Models profiled (in-graph) or distinct layer variants timed (alone) to build the table."""
    floor_ms: float = 0.0
    """Profiled: the time a conv/linear node takes however few channels it keeps (ONNX Runtime's dispatch to its
    threads; a 1x1 conv of 8 channels on one pixel, profiled), which no cut removes."""
    other_ms: float = 0.0
    """Profiled: the nodes run before the first conv/linear layer, held constant (the nodes after a layer are the
    pseudo-layer ``layer + "+"``)."""
    whole_ms: float = 0.0
    """Profiled: the unpruned model's whole time, run unprofiled in the same rounds: what the checks time (the node
    times of :attr:`base_ms` leave out the time between nodes, 0.707 of 0.750 ms on lcnet_050 at 128x128, or count
    more where the profiler's per-node cost estimate clips at 0); 0 when not known (tables of layers timed alone,
    PyTorch eager)."""
    call_ms: float = 0.0
    """Timed alone: the runtime's per-call cost subtracted from every timing (a one-channel 1x1 conv)."""
    source: str = "in-graph"
    """``"in-graph"`` (times read inside whole models: ONNX Runtime's per-node profile, PyTorch eager's layer hooks) or
    ``"alone"`` (layers timed alone)."""

    @property
    def base_ms(self) -> float:
        """The unpruned model's time in the table: the denominator of :meth:`predict_ratio`."""
        return float(sum(self.layer_ms.values())) + self.other_ms

    @property
    def built_ms(self) -> float:
        """The original's whole time when the table was built: :attr:`whole_ms` where known, else :attr:`base_ms`."""
        return self.whole_ms if self.whole_ms > 0 else self.base_ms

    @functools.cached_property
    def _by_name(self) -> dict[str, GroupLatency]:
        return {g.layer: g for g in self.groups}

    def group(self, layer: str) -> GroupLatency:
        """The curve of the group named ``layer`` (its first producer)."""
        if layer in self._by_name:
            return self._by_name[layer]
        raise KeyError(f"no group named '{layer}' in the latency table; groups: {[g.layer for g in self.groups]}")

    def kept_sides(self, widths: Mapping[str, int]) -> dict[str, list[float]]:
        """``{layer: [input side kept, output side kept]}`` (fractions of full time) for group ``widths``."""
        sides: dict[str, list[float]] = {}
        for name, w in widths.items():
            g = self.group(name)
            for i, (layer, side) in enumerate(zip(g.layers, g.sides, strict=True)):
                kept = sides.setdefault(layer, [1.0, 1.0])
                kept[0 if side == "in" else 1] -= g.cut(i, w, self._floor(layer))
        return {layer: [max(0.0, k) for k in kept] for layer, kept in sides.items()}

    def predict_ratio(self, widths: Mapping[str, int]) -> float:
        """Predicted latency ratio (pruned / original) when each named group keeps ``widths[name]`` channels.

        The product model of the module notes; a width timed slower than the full one saves nothing, as in the
        knapsack that chose it.
        """
        kept = self.kept_sides(widths)
        total = sum(float(self.added(n, [w])[0]) for n, w in widths.items())
        for n, ms in self.layer_ms.items():
            fl = self._floor(n)
            total += fl + (ms - fl) * (kept[n][0] * kept[n][1] if n in kept else 1.0)
        return (total + self.other_ms) / max(self.base_ms, 1e-12)

    def fastest_ratio(self) -> float:
        """The least ratio the table predicts: every group at its narrowest sampled width. What stays is in nodes no
        channel group shortens (post-processing such as NMS, layers outside every group) and each node's floor."""
        return self.predict_ratio({g.layer: g.widths[0] for g in self.groups})

    def added(self, group: str, widths: Sequence[float]) -> np.ndarray:
        """ms that nodes absent from the unpruned graph cost when ``group`` keeps each of ``widths``.

        Cutting a producer inside a channel block makes ONNX Runtime reorder its output out of the blocked
        layout for the next conv: ResNet-56 (8x3x32x32, block 16) with stage 1's inner convs at 12 of 16
        channels ran 0.036 ms of ReorderOutput per block, as much as the consumer conv saved, and measured
        0.996x where a table blind to it said 0.963x. Such nodes are pseudo-layers at 0 ms in the original; the
        product model cannot scale them, so they add up here (flat, not linearised).
        """
        g = self.group(group)
        total = np.zeros(len(widths))
        for i, layer in enumerate(g.layers):
            if layer.endswith(AFTER) and g.parts[i][-1] <= 0.0:
                total += np.maximum(0.0, np.interp(np.asarray(widths, dtype=float), g.widths, g.parts[i]))
        return total

    def _floor(self, layer: str) -> float:
        """The part of ``layer``'s time no cut removes (:attr:`floor_ms`; none for the nodes after a layer)."""
        return 0.0 if layer.endswith(AFTER) else min(self.floor_ms, self.layer_ms.get(layer, 0.0))

    def savings(self, group: str, widths: Sequence[int], at: Mapping[str, Sequence[float]]) -> list[float]:
        """ms that ``group`` saves at each of ``widths``, linearised at the kept sides ``at`` (:meth:`kept_sides`).

        A layer's saving ``F (1 - A B)`` splits exactly as ``F (1 - A)(1 + B) / 2 + F (1 - B)(1 + A) / 2``: each
        side's cut is priced at the mean of the other side's kept fraction, whole and at ``at``. With ``at`` the
        kept sides of a selection, its savings add up to the product model's; with ``at`` empty they are additive.
        """
        g = self.group(group)
        total = np.zeros(len(widths))
        for i, (layer, side) in enumerate(zip(g.layers, g.sides, strict=True)):
            other = 1.0 if side == "both" else at.get(layer, (1.0, 1.0))[1 if side == "in" else 0]
            fl = self._floor(layer)
            total += (self.layer_ms.get(layer, 0.0) - fl) * g.cuts(i, widths, fl) * (1.0 + other) / 2
        return [float(v) for v in total - self.added(group, widths)]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (round-trips with :meth:`from_dict`)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LatencyTable:
        """Inverse of :meth:`to_dict`."""
        groups = tuple(GroupLatency(**{**g, "widths": tuple(g["widths"]), "layers": tuple(g["layers"]),
                                       "sides": tuple(g["sides"]), "parts": tuple(tuple(p) for p in g["parts"])})
                       for g in d["groups"])
        return cls(**{**d, "input_shape": tuple(d["input_shape"]), "groups": groups})


def _kept_layer_channels(index: Sequence[int], size: int, width: int, fixed: Collection[int] = ()) -> int:
    """Layer channels left along a member axis when its group keeps ``width`` of ``size`` channels: the removed
    ones are shared over the group's free (not ``fixed``) channels in proportion."""
    free = sum(1 for i in index if i >= 0 and i not in fixed)
    return max(1, len(index) - int(round(free * (size - width) / max(size - len(fixed), 1))))


def producer_keep(producers: Sequence[Any], size: int, width: int, fixed: Collection[int] = ()) -> dict[str, int]:
    """``keep={producer FQN: output channels}`` that leaves a group of ``size`` channels ``width`` of them.

    ``producers`` are the group's :class:`~slimcnn.graph.GroupMember` s with role ``out``; ``fixed`` its fixed
    channels. Only producers whose group channels no wider one already covers are listed: with a residual, the
    full-width producer decides the group alone, and the split convs that each make part of it (MixNet's
    ``conv_pwl.0`` / ``.1``) follow; producers that make disjoint parts (a concatenation) each get their share of
    the free channels, and one whose channels are all fixed none (Res2Net: six of a block's seven 3x3 convs add
    into fixed split chunks)."""
    keep: dict[str, int] = {}
    covered: set[int] = set()
    for mem in sorted(producers, key=lambda m: -len({i for i in m.index if i >= 0})):
        units = {i for i in mem.index if i >= 0}
        if not units & covered:
            covered |= units
            if units - set(fixed):
                keep[mem.layer] = _kept_layer_channels(mem.index, size, width, fixed)
    return keep
