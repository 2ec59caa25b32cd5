"""Latency lookup table: per prunable channel group, the measured time of the layers it touches vs kept width.

After HALP (Shen et al., NeurIPS 2022, https://arxiv.org/abs/2110.10811): prune to a latency budget from a
lookup table. For each prunable coupled group (``slimcnn.graph.trace(model, x).groups()``) every conv/linear
layer the group touches (producers lose output channels, consumers input channels) is rebuilt at a few kept
widths, sampled on the runtime's channel block (:func:`slimcnn.measure.ort_channel_block`), and timed alone on
its recorded input shape; all variants of the model are timed **interleaved** in one process (median over
rounds). A group's curve is the sum of its layers' medians, linearly interpolated between the samples (and
held flat below the smallest one, which over-estimates the time of very narrow widths).

The model prediction is additive: ``ratio = (base + sum_g [T_g(w_g) - T_g(full)]) / base`` where ``base`` is
the sum of every timed conv/linear layer once at full width. A layer between two pruned groups gets both
deltas (an approximation: the product term of its two widths is dropped).

The table is built once per (model fingerprint, runtime, threads, input shape, CPU, versions, sampling) and
cached in ``latency_tables.json`` beside :func:`slimcnn.measure.default_cache_path`; a table measured while
the CPUs are overloaded is not cached.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import math
from collections.abc import Mapping, Sequence
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
    ms: tuple[float, ...]
    """Sum of the touched layers' median ms at each sampled width."""
    layers: tuple[str, ...]
    """Timed conv/linear layers of the group."""

    def at(self, width: float) -> float:
        """Interpolated ms at kept ``width`` (flat below the smallest sample)."""
        return float(np.interp(float(width), self.widths, self.ms))

    def saving(self, width: float) -> float:
        """ms saved by keeping ``width`` instead of all ``size`` channels (>= 0 up to timing noise)."""
        return self.at(self.size) - self.at(width)


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
    base_ms: float
    """Sum of every timed conv/linear layer's median ms at full width (each layer once)."""
    groups: tuple[GroupLatency, ...]
    timings: int
    """Distinct layer variants timed to build the table."""

    def group(self, layer: str) -> GroupLatency:
        """The curve of the group named ``layer`` (its first producer)."""
        for g in self.groups:
            if g.layer == layer:
                return g
        raise KeyError(f"no group named '{layer}' in the latency table; groups: {[g.layer for g in self.groups]}")

    def predict_ratio(self, widths: Mapping[str, int]) -> float:
        """Predicted latency ratio (pruned / original) when each named group keeps ``widths[name]`` channels.

        A width the table timed slower than the full one (noise) saves nothing, as in the knapsack that
        chose it: a selection the knapsack calls feasible is never predicted above its budget.
        """
        saved = sum(max(0.0, self.group(name).saving(w)) for name, w in widths.items())
        return (self.base_ms - saved) / max(self.base_ms, 1e-12)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (round-trips with :meth:`from_dict`)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LatencyTable:
        """Inverse of :meth:`to_dict`."""
        groups = tuple(GroupLatency(**{**g, "widths": tuple(g["widths"]), "ms": tuple(g["ms"]),
                                       "layers": tuple(g["layers"])}) for g in d["groups"])
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


def _excluded(g: ChannelGroup, exclude: Sequence[str]) -> bool:
    return any(fnmatch.fnmatch(layer, pat) for layer in g.layers() for pat in exclude)


def default_table_path() -> Path:
    """``latency_tables.json`` beside the per-layer latency cache."""
    from slimcnn.measure import default_cache_path

    return default_cache_path().with_name("latency_tables.json")


def table_key(model: nn.Module, input_shape: tuple[int, ...], *, runtime: str, threads: int, block: int,
              samples: int, runs: int, exclude: Sequence[str] = ()) -> str:
    """Cache key of a latency table (see the module notes)."""
    import onnxruntime

    from slimcnn.measure import cpu_model

    shape = "x".join(str(d) for d in input_shape)
    return (f"{fingerprint(model)}|{runtime}|{threads}t|cpu:{cpu_model()}|torch{torch.__version__}/"
            f"ort{onnxruntime.__version__}|{shape}|block{block}|samples{samples}v2|runs{runs}|exclude{sorted(exclude)}")


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

    Returns:
        The :class:`LatencyTable`.

    Raises:
        ConfigError: ``samples < 2`` or ``runs < 1``.
    """
    from slimcnn.measure import (
        TIMED_LAYERS,
        cpu_contended,
        layer_input_shapes,
        ort_channel_block,
        physical_cores,
        time_modules_interleaved,
    )

    if samples < 2 or runs < 1:
        raise ConfigError(f"a latency table needs samples >= 2 and runs >= 1, got samples={samples}, runs={runs}")
    if threads is not None and threads < 1:
        raise ConfigError(f"threads must be >= 1, got {threads}")
    threads_n = int(threads) if threads is not None else physical_cores()
    block_n = int(block or ort_channel_block())
    shape = tuple(int(d) for d in example_input.shape)
    key = table_key(model, shape, runtime=runtime, threads=threads_n, block=block_n, samples=samples, runs=runs,
                    exclude=exclude)
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
    shapes = layer_input_shapes(model, example_input)
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
        if isinstance(m, TIMED_LAYERS) and shapes.get(name):
            k = add(name, None, None)
            if k is not None:
                full[name] = k
    plan: list[tuple[ChannelGroup, tuple[int, ...], list[list[str]], tuple[str, ...]]] = []
    for g in graph.groups():
        producers = [mem.layer for mem in g.producers]
        if not g.prunable or not producers or _excluded(g, exclude):
            continue
        axes: dict[str, dict[str, Sequence[int]]] = {}
        for mem in g.members:
            if mem.layer in full and mem.kind in ("conv", "linear") and mem.role in ("in", "out"):
                axes.setdefault(mem.layer, {})[mem.role] = mem.index
        widths = sample_widths(g.size, max(len(g.fixed), 1), block_n, samples)
        keys: list[list[str]] = []
        for w in widths:
            row = []
            for layer, roles in axes.items():
                n_in = _kept_layer_channels(roles["in"], g.size, w) if "in" in roles else None
                n_out = _kept_layer_channels(roles["out"], g.size, w) if "out" in roles else None
                k = add(layer, n_in, n_out)
                row.append(k if k is not None else full[layer])
            keys.append(row)
        plan.append((g, widths, keys, tuple(axes)))
    stats = time_modules_interleaved(variants, runtime=runtime, threads=threads_n, warmup=warmup,  # type: ignore[arg-type]
                                     runs=runs)
    med = {k: s.median_ms for k, s in stats.items()}
    curves = tuple(
        GroupLatency(layer=g.producers[0].layer, group_id=g.id, size=g.size, min_keep=max(len(g.fixed), 1),
                     widths=widths, ms=tuple(sum(med[k] for k in row) for row in keys), layers=layers)
        for g, widths, keys, layers in plan
    )
    table = LatencyTable(key=key, fingerprint=fingerprint(model), runtime=runtime, threads=threads_n,
                         input_shape=shape, block=block_n, base_ms=sum(med[k] for k in full.values()),
                         groups=curves, timings=len(variants))
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
