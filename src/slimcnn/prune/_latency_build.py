"""Measure a :class:`~slimcnn.prune._latency_table.LatencyTable` (or load it from the cache).

Each prunable coupled group (``slimcnn.graph.trace(model, x).groups()``) is sampled at a few kept widths on the
runtime's channel block (:func:`slimcnn.measure.ort_channel_block`).

On ONNX Runtime (the default) the times are read **inside the optimised graph**: the groups are coloured so
that no two of one colour touch the same layer, and for each colour and sampled width a copy of the model with
every group of that colour cut is exported; all copies and the original run interleaved under ONNX Runtime's
profiler (:func:`slimcnn.measure._nodes.profile_nodes_interleaved`), and each conv/linear node is mapped back to
its layer by kernel and output size (:func:`slimcnn.measure._nodes.map_nodes`). A layer timed alone is a
different thing: ONNX Runtime wraps it in layout reorders and a session call, and the error is not proportional
(MobileNetV2's stem conv 0.65 ms alone, 0.38 ms inside; a depthwise 1.09 vs 0.21 ms), so a knapsack over such
times picks the cuts that only look cheap: its 0.50x selections measured 0.57x, against 0.49x from the in-graph
table (uniform and random widths were within 0.03 either way). On PyTorch eager (``runtime="torch"``) the same
copies run interleaved and each conv/linear layer's time is read by its forward hooks inside the whole forward
(:func:`slimcnn.measure._nodes.time_layers_interleaved`; the ops between two layers are the first one's
``layer + AFTER``), and the narrowest width is sampled too: layers timed alone missed the batch norms and
activations eager runs between the convs (mean error 0.07-0.10 against 0.01, ``benchmarks/latency_table_accuracy.py
--runtime torch``). When ONNX Runtime's nodes do not map onto the layers every touched layer is instead rebuilt at
each width and timed alone, less the per-call cost of a one-channel 1x1 conv.

The table is built once per (model fingerprint, runtime, threads, input shape, CPU, versions, sampling, in-graph
or alone) and cached in ``latency_tables.json`` beside :func:`slimcnn.measure.default_cache_path`; a table
measured while the CPUs are overloaded is not cached.
"""

from __future__ import annotations

import copy
import fnmatch
import itertools
import json
import logging
import math
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from slimcnn._io import write_json
from slimcnn.errors import ConfigError
from slimcnn.graph import ChannelGraph, ChannelGroup, trace
from slimcnn.measure._nodes import AFTER
from slimcnn.prune._latency_table import GroupLatency, LatencyTable, _kept_layer_channels, producer_keep
from slimcnn.prune._plan import fingerprint

log = logging.getLogger(__name__)


def sample_widths(size: int, min_keep: int, block: int, samples: int, *, narrowest: bool = False) -> tuple[int, ...]:
    """``samples`` kept widths spread over ``(0, size]``, rounded up to the channel block (``size`` included).

    The step is ``block`` when the group has at least two blocks, else 1. A sample less than half a step below
    ``size`` (24 of a 25-unit RegNet group) is dropped: its saving is one noisy difference of two nearly equal
    times, and the knapsack picks exactly such cheap-looking cuts (one timing 0.14 ms fast, shared by twelve
    same-shape groups, made a 0.50x prediction that measured 0.79x); the widths between interpolate instead.
    ``narrowest`` adds the narrowest width (one step, at least ``min_keep``), since a curve is flat below its
    smallest sample.
    """
    step = block if size >= 2 * block else 1
    lo = max(min_keep, 1)
    out = {min(size, max(lo, step))} if narrowest else set()
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


_CALL = "per-call cost"


def _side(roles: Mapping[str, Any]) -> str:
    return "both" if len(roles) == 2 else next(iter(roles))


def _excluded(g: ChannelGroup, exclude: Sequence[str]) -> bool:
    return any(fnmatch.fnmatch(layer, pat) for layer in g.layers() for pat in exclude)


_Plan = list[tuple[ChannelGroup, tuple[int, ...], dict[str, dict[str, Sequence[int]]]]]


def _plan(graph: ChannelGraph, layers: Collection[str], *, exclude: Sequence[str], block: int, samples: int,
          narrowest: bool = False) -> _Plan:
    """Per prunable group: its sampled widths and ``{layer: {side: group index}}`` of the ``layers`` it cuts."""
    plan: _Plan = []
    for g in graph.groups():
        if not g.prunable or not g.producers or _excluded(g, exclude):
            continue
        axes: dict[str, dict[str, Sequence[int]]] = {}
        for mem in g.members:
            if mem.layer in layers and mem.kind in ("conv", "linear") and mem.role in ("in", "out"):
                axes.setdefault(mem.layer, {})[mem.role] = mem.index
        plan.append((g, sample_widths(g.size, max(len(g.fixed), 1), block, samples, narrowest=narrowest), axes))
    return plan


def _curve(g: ChannelGroup, widths: tuple[int, ...], axes: Mapping[str, Mapping[str, Any]],
           parts: Sequence[Sequence[float]]) -> GroupLatency:
    return GroupLatency(layer=g.producers[0].layer, group_id=g.id, size=g.size, min_keep=max(len(g.fixed), 1),
                        widths=widths, layers=tuple(axes), sides=tuple(_side(r) for r in axes.values()),
                        parts=tuple(tuple(p) for p in parts))


def _profile_in_graph(model: nn.Module, x: torch.Tensor, graph: ChannelGraph, *, exclude: Sequence[str], block: int,
                      samples: int, runtime: str, threads: int, warmup: int, runs: int) -> dict[str, Any] | None:
    """Curves from per-layer times inside whole pruned models (:func:`_in_graph_times`; None: they do not map).

    The groups are coloured so that no two of one colour cut the same layer; one model per colour and sampled
    width cuts every group of that colour, so each layer's time is read with one group cut at a time.
    """
    from slimcnn.measure._nodes import layer_calls
    from slimcnn.prune._api import prune_model_

    calls = layer_calls(model, x)
    # PyTorch eager pays a per-op cost that no cut removes, so a latency target there takes cuts below a quarter
    # of a group (mobilenet_v2 at 0.5x: every group at one block ran 0.36x, a quarter of each 0.51x or more)
    plan = _plan(graph, {c.layer for c in calls}, exclude=exclude, block=block, samples=samples,
                 narrowest=runtime == "torch")
    colour: dict[int, int] = {}
    for g, _w, axes in sorted(plan, key=lambda e: -len(e[2])):
        used = {colour[h.id] for h, _, ax in plan if h.id in colour and set(ax) & set(axes)}
        colour[g.id] = next(c for c in itertools.count() if c not in used)
    models: dict[tuple[int, int], nn.Module] = {(-1, -1): model}
    for c in sorted(set(colour.values())):
        for k in range(max((len(w) for _, w, _ in plan), default=1) - 1):
            keep = {layer: n for g, w, _ in plan if colour[g.id] == c and k < len(w) - 1
                    for layer, n in producer_keep(g.producers, g.size, w[k], g.fixed_set).items()}
            if keep:
                models[(c, k)] = copy.deepcopy(model)
                prune_model_(models[(c, k)], x, criterion="l1", keep=keep, round_to=block, graph=graph)
    times = _in_graph_times(models, x, runtime=runtime, threads=threads, warmup=warmup, runs=runs)
    if times is None:
        return None
    timed, other, floor, whole = times
    for _g, _w, axes in plan:  # the nodes run after a layer follow the groups of that layer
        axes.update({layer + AFTER: roles for layer, roles in list(axes.items())})
    cut: dict[tuple[int, int], set[str]] = {k: set() for k in models}
    for g, w, axes in plan:
        for k in range(len(w) - 1):
            cut[(colour[g.id], k)].update(axes)
    layer_ms = {layer: float(np.median([t[layer] for k, t in timed.items() if layer not in cut[k]]))
                for layer in timed[(-1, -1)]}
    # a pseudo-layer with no node in any model is dropped; one with nodes only in cut copies (a reorder out of the
    # blocked layout after a producer cut inside a channel block) stays at 0 ms: its curve is time the cut adds
    ran = {n for t in timed.values() for n, v in t.items() if v > 0.0}
    layer_ms = {n: v for n, v in layer_ms.items() if n in ran or not n.endswith(AFTER)}
    # a layer's full-width time is a median over the copies that leave it whole: with an even count and a profile
    # that read 0 in one (the profiler's per-node cost estimate), it lands below every single reading of it
    floor = min([floor, *(v for n, v in layer_ms.items() if v > 0.0 and not n.endswith(AFTER))])
    for _g, _w, axes in plan:
        for pseudo in [n for n in axes if n not in layer_ms]:
            del axes[pseudo]
    curves = tuple(_curve(g, w, axes, [[timed[(colour[g.id], k)][layer] for k in range(len(w) - 1)] + [layer_ms[layer]]
                                       for layer in axes]) for g, w, axes in plan)
    return {"layer_ms": layer_ms, "groups": curves, "timings": len(models), "other_ms": other, "floor_ms": floor,
            "whole_ms": whole, "source": "in-graph"}


def _in_graph_times(models: Mapping[tuple[int, int], nn.Module], x: torch.Tensor, *, runtime: str, threads: int,
                    warmup: int, runs: int) -> tuple[dict[tuple[int, int], dict[str, float]], float, float, float] | None:
    """``({model key: {layer: ms, layer + AFTER: ms}}, the original's ms before its first layer, a node's floor, the
    original's whole ms unprofiled (0 on PyTorch eager, whose hooks time the whole forward))``,
    every model timed inside its whole forward, interleaved: ONNX Runtime's per-node profile mapped onto the layers
    (None when it cannot be), or PyTorch eager's layer hooks (:func:`slimcnn.measure._nodes.time_layers_interleaved`).
    The floor is the dispatch no cut removes: the time of a one-pixel 8-channel 1x1 conv timed the same way, or of the
    fastest layer seen in the models if that ran faster. Timed in a graph of its own, the probe took 0.038 ms where
    mobilenetv3_large_100's squeeze-excite convs took 0.004 ms in-graph (128x128), and since no layer was predicted
    below the floor, every layer under 0.038 ms looked unprunable: the table called 0.45x the fastest it could go
    (0.64x with the search's widths) and that pruning measured 0.22x (0.24x)."""
    from slimcnn.measure._nodes import (
        NODE_KINDS,
        layer_calls,
        map_nodes,
        profile_nodes_interleaved,
        time_layers_interleaved,
    )

    named = {str(k): m for k, m in models.items()}
    probe_model, probe_x = nn.Sequential(nn.Conv2d(8, 8, 1)), torch.randn(1, 8, 1, 1)
    if runtime == "torch":
        hooked = time_layers_interleaved(named, x, threads=threads, warmup=warmup, runs=runs)
        floor = time_layers_interleaved({"floor": probe_model}, probe_x, threads=threads, warmup=warmup,
                                        runs=runs)["floor"][0]["0"]
        times = {k: hooked[str(k)][0] for k in models}
        return times, hooked[str((-1, -1))][1], min(floor, _fastest_layer(times)), 0.0
    try:
        nodes, whole = profile_nodes_interleaved(named, x, threads=threads, warmup=warmup, runs=runs)
        probe = profile_nodes_interleaved({"floor": probe_model}, probe_x, threads=threads, warmup=warmup,
                                          runs=runs)[0]["floor"]
    except Exception as e:  # noqa: BLE001 - any export or profiler failure: time the layers alone instead
        log.warning("profiling the model in ONNX Runtime failed (%s); timing its layers alone", e)
        return None
    timed: dict[tuple[int, int], dict[str, float]] = {}
    other = 0.0
    for k, m in models.items():
        mapped = map_nodes(layer_calls(m, x), nodes[str(k)])
        if mapped is None:
            log.warning("ONNX Runtime's nodes do not map one-to-one onto the model's conv/linear layers; "
                        "timing its layers alone")
            return None
        timed[k] = mapped[0]
        other = mapped[1] if k == (-1, -1) else other
    if sum(timed[(-1, -1)].values()) + other <= 0:  # the profiler's cost estimate ate every node (a cold single run)
        log.warning("ONNX Runtime's profile of the model came out at 0 ms (too few runs?); timing its layers alone")
        return None
    return timed, other, min(sum(nd.ms for nd in probe if NODE_KINDS.get(nd.op) == "conv"), _fastest_layer(timed)), whole


def _fastest_layer(timed: Mapping[tuple[int, int], Mapping[str, float]]) -> float:
    """The least time any conv/linear layer (not the nodes after it) took in any of the models."""
    return min((v for t in timed.values() for n, v in t.items() if v > 0.0 and not n.endswith(AFTER)),
               default=float("inf"))


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
    keys = [[[add(layer, _kept_layer_channels(roles["in"], g.size, w, g.fixed_set) if "in" in roles else None,
                  _kept_layer_channels(roles["out"], g.size, w, g.fixed_set) if "out" in roles else None) or full[layer]
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
            f"ort{onnxruntime.__version__}|{shape}|block{block}|samples{samples}v16|runs{runs}|exclude{sorted(exclude)}"
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
        in_graph: read the times inside the whole model (default: ONNX Runtime's per-node profile, PyTorch eager's
            layer hooks); False times every layer alone (the fallback; ``benchmarks/latency_table_accuracy.py``
            compares the two).

    Returns:
        The :class:`LatencyTable`.

    Raises:
        ConfigError: ``samples < 2``, ``runs < 1``, ``threads < 1`` or a runtime not in ``RUNTIMES``.
    """
    from slimcnn.measure import (
        cpu_contended,
        ort_channel_block,
        physical_cores,
    )
    from slimcnn.measure._latency import RUNTIMES

    if samples < 2 or runs < 1:
        raise ConfigError(f"a latency table needs samples >= 2 and runs >= 1, got samples={samples}, runs={runs}")
    if threads is not None and threads < 1:
        raise ConfigError(f"threads must be >= 1, got {threads}")
    if runtime not in RUNTIMES:  # else it would be profiled as ONNX Runtime
        raise ConfigError(f"runtime must be one of {list(RUNTIMES)}, got '{runtime}'")
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
    if in_graph:
        made = _profile_in_graph(model, example_input, graph, exclude=exclude, block=block_n, samples=samples,
                                 runtime=runtime, threads=threads_n, warmup=warmup, runs=runs)
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
