"""Time every node of whole models inside ONNX Runtime's graph, interleaved round-robin in one process.

A layer timed alone is not the layer inside the optimised graph: alone, ONNX Runtime adds layout reorders
(NCHW <-> NCHWc) and a session call around it, and its input is not the previous layer's output. Measured on
this project's 2-core VM, MobileNetV2's convs timed alone summed to 18 ms against 8 ms inside the graph, and
not in proportion: the stem conv alone 0.65 ms (0.38 ms inside), a 96-channel depthwise 1.09 ms (0.21 ms
inside). ONNX Runtime's profiler reports each node's kernel time inside the running graph; this collects it for
several models timed round-robin (one call of each per round, the order rotating), the median per node, and
:func:`map_nodes` says which conv/linear layer of the model each node ran.

The profiler costs time inside every node it times (MobileNetV2's 60 nodes summed to 10.9 ms profiled, the
same graph ran in 6.4 ms unprofiled), a constant that would read as time no pruning removes. The first model
also runs unprofiled in the same rounds, and ``(sum of its nodes - its time) / its nodes`` is subtracted from
every node (at least 0).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from torch import nn

from slimcnn.measure._inputs import ExampleInput
from slimcnn.measure._latency import CALLS_PER_TURN, eval_mode, resolve_threads, round_robin, wall_timed
from slimcnn.measure._layers import TIMED_LAYERS

T = TypeVar("T")


@dataclass(frozen=True)
class NodeTime:
    """One executed ONNX Runtime node and its median kernel time."""

    name: str
    op: str
    """ONNX Runtime's kernel (after its fusions): ``Conv``, ``FusedConv``, ``Gemm``, ``Add``, ..."""
    inputs: tuple[tuple[int, ...], ...]
    """Input shapes as the kernel saw them (NCHWc convs report channels padded to the block)."""
    output: tuple[int, ...]
    ms: float
    """Median kernel time over the timed rounds."""


def profile_nodes_interleaved(models: Mapping[str, nn.Module], example_input: ExampleInput, *,
                              threads: int | None = None, warmup: int = 3,
                              runs: int = 15) -> tuple[dict[str, list[NodeTime]], float]:
    """Per-node kernel times of each model on ONNX Runtime (CPU), the models timed interleaved.

    Args:
        models: name -> module taking ``example_input``.
        example_input: as in :func:`slimcnn.measure.measure_latency`.
        threads: intra-op threads (``None`` = physical cores).
        warmup: untimed calls per model (their profile entries are dropped).
        runs: timed rounds.

    Returns:
        (name -> its nodes in execution order, less the profiler's per-node cost (see the module notes); the first
        model's median ms run unprofiled in the same rounds).

    Raises:
        ExportError: a model cannot be exported to ONNX.
    """
    from slimcnn.measure._onnx import onnx_bytes, ort_feed, ort_session

    threads_n = resolve_threads(threads)
    names = list(models)
    with tempfile.TemporaryDirectory(prefix="slimcnn-profile-") as tmp, eval_mode(*models.values()):
        data = {n: onnx_bytes(models[n], example_input) for n in names}
        sessions = {n: ort_session(data[n], threads=threads_n, spin="in-run", profile_prefix=os.path.join(tmp, f"m{i}"))
                    for i, n in enumerate(names)}
        plain = ort_session(data[names[0]], threads=threads_n, spin="in-run")  # the first model, unprofiled
        runners = {**{f"profiled {n}": wall_timed(functools.partial(s.run, None, ort_feed(s, example_input)))
                      for n, s in sessions.items()},
                   "unprofiled": wall_timed(functools.partial(plain.run, None, ort_feed(plain, example_input)))}
        wall = round_robin(runners, warmup=warmup, runs=runs)["unprofiled"]
        timed = {n: _node_times(Path(sessions[n].end_profiling()), warmup) for n in names}
    first, wall_ms = timed[names[0]], float(np.median(wall))
    cost = max(0.0, (sum(nd.ms for nd in first) - wall_ms) / max(len(first), 1))
    return {n: [dataclasses.replace(nd, ms=max(0.0, nd.ms - cost)) for nd in nodes] for n, nodes in timed.items()}, wall_ms


def _node_times(path: Path, warmup: int) -> list[NodeTime]:
    durations: dict[str, list[float]] = {}
    first: dict[str, dict] = {}
    for e in json.loads(path.read_text()):
        name = e.get("name", "")
        if e.get("cat") != "Node" or not name.endswith("_kernel_time"):
            continue
        node = name[: -len("_kernel_time")]
        durations.setdefault(node, []).append(float(e["dur"]) / 1e3)  # microseconds
        first.setdefault(node, e.get("args", {}))
    out = []
    for node, durs in durations.items():
        args = first[node]
        out.append(NodeTime(node, str(args.get("op_name", "")), tuple(_shape(s) for s in args.get("input_type_shape", [])),
                            _shape((args.get("output_type_shape") or [{}])[0]),
                            float(np.median(_timed_calls(durs, warmup) or durs))))
    return out


def _timed_calls(calls: Sequence[T], warmup: int) -> list[T]:
    """The calls :func:`round_robin` timed, out of every call a model made in it (warm-ups, then whole turns)."""
    return list(calls[warmup + CALLS_PER_TURN - 1::CALLS_PER_TURN])


def _shape(entry: Mapping[str, list[int]]) -> tuple[int, ...]:
    return tuple(int(d) for d in next(iter(entry.values()), []))


@dataclass(frozen=True)
class LayerCall:
    """One conv/linear call of a forward pass: the layer, its weight shape and its output shape."""

    layer: str
    kind: str
    """``conv``, ``convt`` or ``linear``."""
    weight: tuple[int, ...]
    output: tuple[int, ...]


def layer_calls(model: nn.Module, x: torch.Tensor) -> list[LayerCall]:
    """Every conv/linear call of one forward pass in eval mode, in order (a module called twice appears twice)."""
    calls: list[LayerCall] = []
    hooks = []
    for name, m in model.named_modules():
        if isinstance(m, TIMED_LAYERS):
            kind = "linear" if isinstance(m, nn.Linear) else "convt" if "Transpose" in type(m).__name__ else "conv"

            def hook(mod: nn.Module, _inp: Any, out: Any, name: str = name, kind: str = kind) -> None:
                if isinstance(out, torch.Tensor):
                    calls.append(LayerCall(name, kind, tuple(mod.weight.shape), tuple(out.shape)))  # type: ignore[union-attr]
            hooks.append(m.register_forward_hook(hook))
    try:
        with eval_mode(model), torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return calls


NODE_KINDS = {"Conv": "conv", "FusedConv": "conv", "ConvTranspose": "convt", "Gemm": "linear", "FusedGemm": "linear",
              "MatMul": "linear", "FusedMatMul": "linear"}
"""ONNX Runtime kernels that run a conv/linear layer, and the layer kind."""


def map_nodes(calls: Sequence[LayerCall], nodes: Sequence[NodeTime]) -> tuple[dict[str, float], float] | None:
    """``({layer: ms}, ms before the first layer)``; None when a call is left without a node.

    Each conv/linear node, in execution order, takes the free call of the same kind, kernel and output size whose
    input channels its weight has, then whose output channels it pads least (NCHWc pads channel counts up to its
    block), the earliest of equals; a layer's nodes add up. Every other node (activations ONNX Runtime does not fuse,
    pooling, adds, concats, reorders, a BatchNormalization it could not fold run as a per-channel conv, and a
    conv/linear node no free call fits: a functional conv on a buffer such as TResNet's blur pool, a MatMul of two
    activations in attention) is charged to ``layer + AFTER`` of the conv/linear node run last before it:
    EfficientNet-B0's unfused SiLU and squeeze-excite products are 7 of its 17 ms and shrink with the channels of
    the layer they follow.
    """
    free = list(range(len(calls)))
    ms: dict[str, float] = {}
    for c in calls:
        ms[c.layer] = ms[c.layer + AFTER] = 0.0
    before, last = 0.0, None
    for nd in nodes:
        kind = NODE_KINDS.get(nd.op)
        fits = [] if kind is None else [(*fit, i) for i in free if (fit := _padding(calls[i], kind, nd)) is not None]
        per_channel = kind is not None and _per_channel(nd)
        if per_channel:  # a per-channel conv is a layer's only when the layer is one too
            fits = [f for f in fits if f[0] == 0]
        if not fits:  # no layer's node
            if last is None:
                before += nd.ms
            else:
                ms[last + AFTER] += nd.ms
            continue
        j = min(fits)[-1]
        free.remove(j)
        last = calls[j].layer
        ms[last] += nd.ms
    return (ms, before) if not free else None


def _per_channel(node: NodeTime) -> bool:
    """Whether a conv node scales each channel by itself (a ``(C, 1, 1, 1)`` weight on ``C`` channels): ONNX Runtime
    runs a BatchNormalization it cannot fold into a conv that way (after a concat: MixNet's split convs, GhostNet's
    ghost modules), where the model has no conv of its own."""
    if len(node.inputs) < 2 or len(node.inputs[1]) != 4 or not node.output or len(node.output) < 2:
        return False
    c = node.inputs[1][0]
    return tuple(node.inputs[1][1:]) == (1, 1, 1) and node.output[1] == c and node.inputs[0][1:2] == (c,)


AFTER = "+"
"""``layer + AFTER``: where :func:`map_nodes` charges the other nodes run after a conv/linear layer."""


def _padding(call: LayerCall, kind: str, node: NodeTime) -> tuple[int, int, int] | None:
    """``(input-channel misfit, input channels node's weight has beyond call's, output channels node has beyond
    call's)`` when ``node`` can be that call's node (same kind, kernel and output size, no fewer input channels,
    output channels padded by less than 16), else None. The misfit (0 when the node's weight has the call's input
    channels, padded by less than 16 unless the call is depthwise, else 1) and then the input padding rank
    candidates before the output padding: ResNet-50 runs each stage's downsample conv before its conv3, both 1x1
    with the same output, and by output alone the two swapped; a squeeze-excite ``fc1`` (16 -> 8, its output padded
    to 16) took ``fc2``'s call (8 -> 16, its weight's inputs padded to 16) when only the output padding ranked."""
    if call.kind != kind or not node.output:
        return None
    misfit = pad_in = 0
    if kind == "conv" or kind == "convt":
        if len(node.inputs) < 2 or node.inputs[1][2:] != call.weight[2:] or node.output[2:] != call.output[2:]:
            return None
        if kind == "convt":
            return 0, 0, 0
        extra = node.inputs[1][1] - call.weight[1] if len(node.inputs[1]) > 1 and len(call.weight) > 1 else 0
        if extra < 0:  # fewer inputs than the layer's weight: not its node (TResNet's blur pool, a (C, 1, 3, 3)
            return None  # filter on a buffer, took a dense 3x3 layer's call, and every later layer shifted by one)
        # a depthwise weight (one input channel per group) is never padded: a dense node does not fit it (GhostNet's
        # 3-input stem conv took a pruned ghost module's 3x3 depthwise call, then the depthwise node had none left)
        misfit = 0 if extra == 0 or (call.weight[1] > 1 and 0 < extra < 16) else 1
        pad_in = extra if misfit == 0 else 0
    if kind == "linear" and node.inputs and node.inputs[0] and node.inputs[0][-1] != call.weight[-1]:
        return None  # other input features: a MatMul of two activations (attention), not this layer's
    want, got = (call.output[-1], node.output[-1]) if kind == "linear" else (call.output[1], node.output[1])
    return (misfit, pad_in, got - want) if want <= got < want + 16 else None


def time_layers_interleaved(models: Mapping[str, nn.Module], example_input: ExampleInput, *,
                            threads: int | None = None, warmup: int = 3,
                            runs: int = 15) -> dict[str, tuple[dict[str, float], float]]:
    """Per-layer times of each model in PyTorch eager (CPU) inside its whole forward, the models timed interleaved.

    The torch counterpart of :func:`profile_nodes_interleaved` + :func:`map_nodes`: eager ops run synchronously, so
    a clock read in a conv/linear layer's forward pre-hook and post-hook times that layer inside the running model,
    and the time from its post-hook to the next such layer's pre-hook (batch norms, activations, adds, pooling) is
    charged to ``layer + AFTER``, as ONNX Runtime's other nodes are. A layer called twice adds up.

    Returns:
        name -> ``({layer: median ms, layer + AFTER: median ms}, median ms before the first layer)``.
    """
    from slimcnn.measure._latency import torch_threads

    threads_n = resolve_threads(threads)
    clock = time.perf_counter
    marks: list[tuple[str, float]] = []  # (layer, time) at each pre-hook; ("", time) at each post-hook
    handles = []
    for m in models.values():
        for name, mod in m.named_modules():
            if isinstance(mod, TIMED_LAYERS):
                handles.append(mod.register_forward_pre_hook(lambda *_, n=name: marks.append((n, clock()))))
                handles.append(mod.register_forward_hook(lambda *_: marks.append(("", clock()))))
    samples: dict[str, list[tuple[dict[str, float], float]]] = {n: [] for n in models}

    def runner(name: str) -> Callable[[], float]:
        model = models[name]

        def call() -> float:  # the wall ms, as round_robin's runners return; the split goes to ``samples``
            marks.clear()
            t0 = clock()
            model(*example_input) if isinstance(example_input, tuple) else model(example_input)
            t1 = clock()
            samples[name].append(_charge(marks, t0, t1))
            return (t1 - t0) * 1e3
        return call

    try:
        with eval_mode(*models.values()), torch.no_grad(), torch_threads(threads_n):
            round_robin({n: runner(n) for n in models}, warmup=warmup, runs=runs)
    finally:
        for h in handles:
            h.remove()
    out = {}
    for name, per_run in samples.items():
        per_run = _timed_calls(per_run, warmup)
        keys = per_run[0][0].keys() if per_run else ()
        out[name] = ({k: float(np.median([r[0].get(k, 0.0) for r in per_run])) for k in keys},
                     float(np.median([r[1] for r in per_run])) if per_run else 0.0)
    return out


def _charge(marks: Sequence[tuple[str, float]], start: float, end: float) -> tuple[dict[str, float], float]:
    """``({layer: ms, layer + AFTER: ms}, ms before the first layer)`` of one forward from its hook marks."""
    ms: dict[str, float] = {}
    before, last, t_prev = 0.0, None, start
    for layer, t in marks:
        gap = (t - t_prev) * 1e3
        if layer:  # a pre-hook: the time since the last mark ran after the previous layer (or before any)
            if last is None:
                before += gap
            else:
                ms[last + AFTER] = ms.get(last + AFTER, 0.0) + gap
            last = layer
            ms.setdefault(layer + AFTER, 0.0)
        else:  # a post-hook: the layer itself
            assert last is not None
            ms[last] = ms.get(last, 0.0) + gap
        t_prev = t
    if last is None:
        before += (end - t_prev) * 1e3
    else:
        ms[last + AFTER] += (end - t_prev) * 1e3
    return ms, before
