"""Latency lookup table: per prunable channel group, the time of the layers it touches vs kept width.

After HALP (Shen et al., NeurIPS 2022, https://arxiv.org/abs/2110.10811): prune to a latency budget from a
lookup table. Each prunable coupled group (``slimcnn.graph.trace(model, x).groups()``) is sampled at a few kept
widths on the runtime's channel block (:func:`slimcnn.measure.ort_channel_block`).

On ONNX Runtime (the default) the times are read **inside the optimised graph**: the groups are coloured so
that no two of one colour touch the same layer, and for each colour and sampled width a copy of the model with
every group of that colour cut is exported; all copies and the original run interleaved under ONNX Runtime's
profiler (:func:`slimcnn.measure._nodes.profile_nodes_interleaved`), and each conv/linear node is mapped back to
its layer by kernel and output size. A layer timed alone is a different thing: ONNX Runtime wraps it in layout
reorders and a session call, and the error is not proportional (MobileNetV2's stem conv 0.65 ms alone, 0.38 ms
inside; a depthwise 1.09 vs 0.21 ms), so a knapsack over such times picks the cuts that only look cheap: its
0.50x selections measured 0.57x, against 0.49x from the in-graph table (uniform and random widths were within
0.03 either way). When the nodes do not map onto the layers (or with ``runtime="torch"``) every touched layer
is instead rebuilt at each width and timed alone, less the per-call cost of a one-channel 1x1 conv.

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

The table is built once per (model fingerprint, runtime, threads, input shape, CPU, versions, sampling) and
cached in ``latency_tables.json`` beside :func:`slimcnn.measure.default_cache_path`; a table measured while
the CPUs are overloaded is not cached.
"""

from __future__ import annotations

import copy
import fnmatch
import functools
import itertools
import json
import logging
import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from slimcnn._io import write_json
from slimcnn.errors import ConfigError
from slimcnn.graph import ChannelGraph, ChannelGroup, trace
from slimcnn.prune._plan import fingerprint

log = logging.getLogger(__name__)


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
    """Cache key: fingerprint | runtime | threads | CPU | versions | input shape | sampling."""
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
    """Distinct layer variants timed to build the table."""
    floor_ms: float = 0.0
    """Profiled: the time a conv/linear node takes however few channels it keeps (ONNX Runtime's dispatch to its
    threads; a 1x1 conv of 8 channels on one pixel, profiled), which no cut removes."""
    other_ms: float = 0.0
    """Profiled: the nodes run before the first conv/linear layer, held constant (the nodes after a layer are the
    pseudo-layer ``layer + "+"``)."""
    call_ms: float = 0.0
    """Timed alone: the runtime's per-call cost subtracted from every timing (a one-channel 1x1 conv)."""
    source: str = "in-graph"
    """``"in-graph"`` (ONNX Runtime's per-node profile of whole models) or ``"alone"`` (layers timed alone)."""

    @property
    def base_ms(self) -> float:
        """The unpruned model's time in the table: the denominator of :meth:`predict_ratio`."""
        return float(sum(self.layer_ms.values())) + self.other_ms

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
        total = 0.0
        for n, ms in self.layer_ms.items():
            fl = self._floor(n)
            total += fl + (ms - fl) * (kept[n][0] * kept[n][1] if n in kept else 1.0)
        return (total + self.other_ms) / max(self.base_ms, 1e-12)

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
        return [float(v) for v in total]

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


def sample_widths(size: int, min_keep: int, block: int, samples: int) -> tuple[int, ...]:
    """``samples`` kept widths spread over ``(0, size]``, rounded up to the channel block (``size`` included).

    The step is ``block`` when the group has at least two blocks, else 1. A sample less than half a step below
    ``size`` (24 of a 25-unit RegNet group) is dropped: its saving is one noisy difference of two nearly equal
    times, and the knapsack picks exactly such cheap-looking cuts (one timing 0.14 ms fast, shared by twelve
    same-shape groups, made a 0.50x prediction that measured 0.79x); the widths between interpolate instead.
    """
    step = block if size >= 2 * block else 1
    lo = max(min_keep, 1)
    out = set()
    for k in range(1, samples + 1):
        w = int(math.ceil(k * size / samples / step)) * step
        out.add(min(size, max(lo, w)))
    out = {w for w in out if not 0 < size - w < step / 2} | {size}
    return tuple(sorted(out))


def _variant(mod: nn.Module, n_in: int | None, n_out: int | None) -> nn.Module | None:
    """A fresh layer like ``mod`` with ``n_in`` input / ``n_out`` output channels (``None``: unchanged)."""
    if isinstance(mod, nn.Linear):
        return nn.Linear(n_in or mod.in_features, n_out or mod.out_features, bias=mod.bias is not None)
    classes: dict[int, type[nn.Module]] = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
    if not isinstance(mod, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        return None  # transposed convs and others: not timed (constant in the table)
    cin, cout, g = mod.in_channels, mod.out_channels, mod.groups
    if g > 1:
        if g != cin:
            return None  # grouped, not depthwise
        mult = cout // cin
        c = n_in if n_in is not None else (max(1, n_out // mult) if n_out is not None else cin)
        cin, g, cout = c, c, c * mult
    else:
        cin, cout = n_in or cin, n_out or cout
    cls = classes[len(mod.kernel_size)]
    return cls(cin, cout, mod.kernel_size, mod.stride, mod.padding, mod.dilation, g,  # type: ignore[call-arg]
               bias=mod.bias is not None, padding_mode=mod.padding_mode)


def _variant_shape(var: nn.Module, shape: tuple[int, ...]) -> tuple[int, ...]:
    s = list(shape)
    if isinstance(var, nn.Linear):
        s[-1] = var.in_features
    else:
        s[1] = int(var.in_channels)  # type: ignore[arg-type]
    return tuple(s)


def _kept_layer_channels(index: Sequence[int], size: int, width: int) -> int:
    """Layer channels left along a member axis when its group keeps ``width`` of ``size`` channels."""
    inside = sum(1 for i in index if i >= 0)
    return max(1, len(index) - int(round(inside * (size - width) / max(size, 1))))


_CALL = "per-call cost"


def _side(roles: Mapping[str, Any]) -> str:
    return "both" if len(roles) == 2 else next(iter(roles))


def _excluded(g: ChannelGroup, exclude: Sequence[str]) -> bool:
    return any(fnmatch.fnmatch(layer, pat) for layer in g.layers() for pat in exclude)


_Plan = list[tuple[ChannelGroup, tuple[int, ...], dict[str, dict[str, Sequence[int]]]]]


def _plan(graph: ChannelGraph, layers: Collection[str], *, exclude: Sequence[str], block: int, samples: int) -> _Plan:
    """Per prunable group: its sampled widths and ``{layer: {side: group index}}`` of the ``layers`` it cuts."""
    plan: _Plan = []
    for g in graph.groups():
        if not g.prunable or not g.producers or _excluded(g, exclude):
            continue
        axes: dict[str, dict[str, Sequence[int]]] = {}
        for mem in g.members:
            if mem.layer in layers and mem.kind in ("conv", "linear") and mem.role in ("in", "out"):
                axes.setdefault(mem.layer, {})[mem.role] = mem.index
        plan.append((g, sample_widths(g.size, max(len(g.fixed), 1), block, samples), axes))
    return plan


def _curve(g: ChannelGroup, widths: tuple[int, ...], axes: Mapping[str, Mapping[str, Any]],
           parts: Sequence[Sequence[float]]) -> GroupLatency:
    return GroupLatency(layer=g.producers[0].layer, group_id=g.id, size=g.size, min_keep=max(len(g.fixed), 1),
                        widths=widths, layers=tuple(axes), sides=tuple(_side(r) for r in axes.values()),
                        parts=tuple(tuple(p) for p in parts))


def _profile_in_graph(model: nn.Module, x: torch.Tensor, graph: ChannelGraph, *, exclude: Sequence[str], block: int,
                      samples: int, threads: int, warmup: int, runs: int) -> dict[str, Any] | None:
    """Curves from ONNX Runtime's per-node profile of whole pruned models (None: its nodes do not map).

    The groups are coloured so that no two of one colour cut the same layer; one model per colour and sampled
    width cuts every group of that colour, so each layer's time is read with one group cut at a time.
    """
    from slimcnn.measure._nodes import profile_nodes_interleaved
    from slimcnn.prune._api import prune_model_

    calls = _layer_calls(model, x)
    plan = _plan(graph, {c.layer for c in calls}, exclude=exclude, block=block, samples=samples)
    colour: dict[int, int] = {}
    for g, _w, axes in sorted(plan, key=lambda e: -len(e[2])):
        used = {colour[h.id] for h, _, ax in plan if h.id in colour and set(ax) & set(axes)}
        colour[g.id] = next(c for c in itertools.count() if c not in used)
    models: dict[tuple[int, int], nn.Module] = {(-1, -1): model}
    for c in sorted(set(colour.values())):
        for k in range(max((len(w) for _, w, _ in plan), default=1) - 1):
            keep = {mem.layer: _kept_layer_channels(mem.index, g.size, w[k])
                    for g, w, _ in plan if colour[g.id] == c and k < len(w) - 1 for mem in g.producers}
            if keep:
                models[(c, k)] = copy.deepcopy(model)
                prune_model_(models[(c, k)], x, criterion="l1", keep=keep, graph=graph)
    try:
        nodes = profile_nodes_interleaved({str(k): m for k, m in models.items()}, x, threads=threads,
                                          warmup=warmup, runs=runs)
        probe = profile_nodes_interleaved({"floor": nn.Conv2d(8, 8, 1)}, torch.randn(1, 8, 1, 1), threads=threads,
                                          warmup=warmup, runs=runs)["floor"]
    except Exception as e:  # noqa: BLE001 - any export or profiler failure: time the layers alone instead
        log.warning("profiling the model in ONNX Runtime failed (%s); timing its layers alone", e)
        return None
    floor = sum(nd.ms for nd in probe if _NODE_KINDS.get(nd.op) == "conv")
    timed: dict[tuple[int, int], dict[str, float]] = {}
    other = 0.0
    for k, m in models.items():
        mapped = _map_nodes(_layer_calls(m, x), nodes[str(k)])
        if mapped is None:
            log.warning("ONNX Runtime's nodes do not map one-to-one onto the model's conv/linear layers; "
                        "timing its layers alone")
            return None
        timed[k] = mapped[0]
        other = mapped[1] if k == (-1, -1) else other
    for _g, _w, axes in plan:  # the nodes run after a layer follow the groups of that layer
        axes.update({layer + AFTER: roles for layer, roles in list(axes.items())})
    cut: dict[tuple[int, int], set[str]] = {k: set() for k in models}
    for g, w, axes in plan:
        for k in range(len(w) - 1):
            cut[(colour[g.id], k)].update(axes)
    layer_ms = {layer: float(np.median([t[layer] for k, t in timed.items() if layer not in cut[k]]))
                for layer in timed[(-1, -1)]}
    layer_ms = {n: v for n, v in layer_ms.items() if v > 0.0 or not n.endswith(AFTER)}  # no node after it
    for _g, _w, axes in plan:
        for pseudo in [n for n in axes if n not in layer_ms]:
            del axes[pseudo]
    curves = tuple(_curve(g, w, axes, [[timed[(colour[g.id], k)][layer] for k in range(len(w) - 1)] + [layer_ms[layer]]
                                       for layer in axes]) for g, w, axes in plan)
    return {"layer_ms": layer_ms, "groups": curves, "timings": len(models), "other_ms": other, "floor_ms": floor,
            "source": "in-graph"}


def _time_alone(model: nn.Module, x: torch.Tensor, graph: ChannelGraph, *, exclude: Sequence[str], block: int,
                samples: int, runtime: str, threads: int, warmup: int, runs: int) -> dict[str, Any]:
    """Curves from every touched layer rebuilt at each sampled width and timed alone, less the per-call cost."""
    from slimcnn.measure import TIMED_LAYERS, layer_input_shapes, time_modules_interleaved

    shapes = layer_input_shapes(model, x)
    mods = dict(model.named_modules())
    variants: dict[str, tuple[nn.Module, tuple[int, ...]]] = {}

    def add(layer: str, n_in: int | None, n_out: int | None) -> str | None:
        var = _variant(mods[layer], n_in, n_out)
        if var is None:
            return None
        vshape = _variant_shape(var, shapes[layer])
        k = f"{var!r}|{vshape}"
        variants.setdefault(k, (var, vshape))
        return k

    full: dict[str, str] = {}
    for name, m in mods.items():
        if isinstance(m, TIMED_LAYERS) and shapes.get(name) and (k := add(name, None, None)) is not None:
            full[name] = k
    plan = _plan(graph, full, exclude=exclude, block=block, samples=samples)
    keys = [[[add(layer, _kept_layer_channels(roles["in"], g.size, w) if "in" in roles else None,
                  _kept_layer_channels(roles["out"], g.size, w) if "out" in roles else None) or full[layer]
              for w in widths] for layer, roles in axes.items()] for g, widths, axes in plan]
    variants[_CALL] = (nn.Conv2d(1, 1, 1), (1, 1, 1, 1))
    stats = time_modules_interleaved(variants, runtime=runtime, threads=threads, warmup=warmup,  # type: ignore[arg-type]
                                     runs=runs)
    call_ms = stats[_CALL].median_ms
    med = {k: max(0.0, s.median_ms - call_ms) for k, s in stats.items()}
    curves = tuple(_curve(g, widths, axes, [[med[k] for k in row] for row in rows])
                   for (g, widths, axes), rows in zip(plan, keys, strict=True))
    return {"layer_ms": {n: med[k] for n, k in full.items()}, "groups": curves, "timings": len(variants) - 1,
            "call_ms": call_ms, "source": "alone"}


@dataclass(frozen=True)
class _Call:
    layer: str
    kind: str
    """``conv``, ``convt`` or ``linear``."""
    weight: tuple[int, ...]
    output: tuple[int, ...]


def _layer_calls(model: nn.Module, x: torch.Tensor) -> list[_Call]:
    """Every conv/linear call of one forward pass in eval mode, in order (a module called twice appears twice)."""
    from slimcnn.measure import TIMED_LAYERS, eval_mode

    calls: list[_Call] = []
    hooks = []
    for name, m in model.named_modules():
        if isinstance(m, TIMED_LAYERS):
            kind = "linear" if isinstance(m, nn.Linear) else "convt" if "Transpose" in type(m).__name__ else "conv"

            def hook(mod: nn.Module, _inp: Any, out: Any, name: str = name, kind: str = kind) -> None:
                if isinstance(out, torch.Tensor):
                    calls.append(_Call(name, kind, tuple(mod.weight.shape), tuple(out.shape)))  # type: ignore[union-attr]
            hooks.append(m.register_forward_hook(hook))
    try:
        with eval_mode(model), torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return calls


_NODE_KINDS = {"Conv": "conv", "FusedConv": "conv", "ConvTranspose": "convt", "Gemm": "linear", "FusedGemm": "linear",
               "MatMul": "linear", "FusedMatMul": "linear"}


def _map_nodes(calls: Sequence[_Call], nodes: Sequence[Any]) -> tuple[dict[str, float], float] | None:
    """``({layer: ms}, ms before the first layer)``; None when a conv/linear node or call is left unmatched.

    Each conv/linear node, in execution order, takes the free call of the same kind, kernel and output size whose
    channels it pads least (NCHWc pads channel counts up to its block), the earliest of equals; a layer's nodes
    add up. Every other node (activations ONNX Runtime does not fuse, pooling, adds, concats, reorders) is
    charged to ``layer + AFTER`` of the conv/linear node run last before it: EfficientNet-B0's unfused SiLU and
    squeeze-excite products are 7 of its 17 ms and shrink with the channels of the layer they follow.
    """
    free = list(range(len(calls)))
    ms: dict[str, float] = {}
    for c in calls:
        ms[c.layer] = ms[c.layer + AFTER] = 0.0
    before, last = 0.0, None
    for nd in nodes:
        kind = _NODE_KINDS.get(nd.op)
        if kind is None:
            if last is None:
                before += nd.ms
            else:
                ms[last + AFTER] += nd.ms
            continue
        fits = [(pad, i) for i in free if (pad := _padding(calls[i], kind, nd)) is not None]
        if not fits:
            return None
        j = min(fits)[1]
        free.remove(j)
        last = calls[j].layer
        ms[last] += nd.ms
    return (ms, before) if not free else None


AFTER = "+"
"""Suffix of a pseudo-layer of the in-graph table: the other nodes run after a conv/linear layer."""


def _padding(call: _Call, kind: str, node: Any) -> int | None:
    """Channels ``node`` has beyond ``call``'s when it can be that call's node (same kind, kernel and output size,
    output channels padded by less than 16), else None."""
    if call.kind != kind or not node.output:
        return None
    if kind == "conv" or kind == "convt":
        if len(node.inputs) < 2 or node.inputs[1][2:] != call.weight[2:] or node.output[2:] != call.output[2:]:
            return None
        if kind == "convt":
            return 0
    want, got = (call.output[-1], node.output[-1]) if kind == "linear" else (call.output[1], node.output[1])
    return got - want if want <= got < want + 16 else None


def default_table_path() -> Path:
    """``latency_tables.json`` beside the per-layer latency cache."""
    from slimcnn.measure import default_cache_path

    return default_cache_path().with_name("latency_tables.json")


def table_key(model: nn.Module, input_shape: tuple[int, ...], *, runtime: str, threads: int, block: int,
              samples: int, runs: int, exclude: Sequence[str] = (), in_graph: bool = True) -> str:
    """Cache key of a latency table (see the module notes)."""
    import onnxruntime

    from slimcnn.measure import cpu_model

    shape = "x".join(str(d) for d in input_shape)
    return (f"{fingerprint(model)}|{runtime}|{threads}t|cpu:{cpu_model()}|torch{torch.__version__}/"
            f"ort{onnxruntime.__version__}|{shape}|block{block}|samples{samples}v7|runs{runs}|exclude{sorted(exclude)}"
            + ("" if in_graph else "|alone"))


def build_latency_table(
    model: nn.Module,
    example_input: torch.Tensor,
    *,
    runtime: str = "onnxruntime",
    threads: int | None = None,
    samples: int = 4,
    runs: int = 15,
    warmup: int = 3,
    block: int | None = None,
    exclude: Sequence[str] = (),
    graph: ChannelGraph | None = None,
    cache: bool = True,
    cache_path: str | Path | None = None,
    in_graph: bool = True,
) -> LatencyTable:
    """Measure (or load from the cache) the latency table of ``model`` at ``example_input``'s shape.

    Args:
        model: the unpruned model (not modified).
        example_input: a tensor ``(N, C, ...)``; its shape is part of the key.
        runtime: ``"onnxruntime"`` (default) or ``"torch"`` (CPU).
        threads: intra-op threads (``None`` = physical cores).
        samples: kept widths sampled per group (full width included).
        runs: interleaved timing rounds (the median over rounds is kept).
        warmup: untimed calls per variant.
        block: channel block to sample on (``None`` = :func:`slimcnn.measure.ort_channel_block`).
        exclude: fnmatch patterns of layers whose groups are left out.
        graph: a trace of ``model`` to reuse.
        cache: look up and store the table.
        cache_path: JSON file (``None`` = :func:`default_table_path`).
        in_graph: read ONNX Runtime's times inside the whole graph (default); False times every layer alone
            (the fallback; ``benchmarks/latency_table_accuracy.py`` compares the two).

    Returns:
        The :class:`LatencyTable`.

    Raises:
        ConfigError: ``samples < 2`` or ``runs < 1``.
    """
    from slimcnn.measure import (
        cpu_contended,
        ort_channel_block,
        physical_cores,
    )

    if samples < 2 or runs < 1:
        raise ConfigError(f"a latency table needs samples >= 2 and runs >= 1, got samples={samples}, runs={runs}")
    if threads is not None and threads < 1:
        raise ConfigError(f"threads must be >= 1, got {threads}")
    threads_n = int(threads) if threads is not None else physical_cores()
    block_n = int(block or ort_channel_block())
    shape = tuple(int(d) for d in example_input.shape)
    key = table_key(model, shape, runtime=runtime, threads=threads_n, block=block_n, samples=samples, runs=runs,
                    exclude=exclude, in_graph=in_graph)
    path = Path(cache_path) if cache_path is not None else default_table_path()
    if cache and path.is_file():
        try:
            hit = json.loads(path.read_text()).get("tables", {}).get(key)
        except (OSError, ValueError) as e:
            log.warning("ignoring unreadable latency table cache %s (%s)", path, e)
            hit = None
        if hit is not None:
            log.info("latency table cache hit (%s)", key[:60])
            return LatencyTable.from_dict(hit)
    graph = graph or trace(model, example_input)
    head = {"key": key, "fingerprint": fingerprint(model), "runtime": runtime, "threads": threads_n,
            "input_shape": shape, "block": block_n}
    made = None
    if runtime == "onnxruntime" and in_graph:
        made = _profile_in_graph(model, example_input, graph, exclude=exclude, block=block_n, samples=samples,
                                 threads=threads_n, warmup=warmup, runs=runs)
    if made is None:
        made = _time_alone(model, example_input, graph, exclude=exclude, block=block_n, samples=samples,
                           runtime=runtime, threads=threads_n, warmup=warmup, runs=runs)
    table = LatencyTable(**head, **made)
    if cache and cpu_contended():
        log.info("not caching the latency table: load average above the %s CPUs", "available")
    elif cache:
        try:
            raw = json.loads(path.read_text()) if path.is_file() else {}
        except (OSError, ValueError):
            raw = {}
        tables = raw.get("tables", {}) if isinstance(raw, dict) else {}
        tables[key] = table.to_dict()
        try:
            write_json(path, {"version": 1, "tables": tables})
        except OSError as e:
            log.warning("could not write the latency table cache %s (%s)", path, e)
    return table
