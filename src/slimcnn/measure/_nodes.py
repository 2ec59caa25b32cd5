"""Time every node of whole models inside ONNX Runtime's graph, interleaved round-robin in one process.

A layer timed alone is not the layer inside the optimised graph: alone, ONNX Runtime adds layout reorders
(NCHW <-> NCHWc) and a session call around it, and its input is not the previous layer's output. Measured on
this project's 2-core VM, MobileNetV2's convs timed alone summed to 18 ms against 8 ms inside the graph, and
not in proportion: the stem conv alone 0.65 ms (0.38 ms inside), a 96-channel depthwise 1.09 ms (0.21 ms
inside). ONNX Runtime's profiler reports each node's kernel time inside the running graph; this collects it for
several models timed round-robin (one call of each per round, the order rotating), the median per node.

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
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch import nn

from slimcnn.measure._inputs import ExampleInput
from slimcnn.measure._latency import eval_mode, resolve_threads, round_robin, wall_timed


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
                              threads: int | None = None, warmup: int = 3, runs: int = 15) -> dict[str, list[NodeTime]]:
    """Per-node kernel times of each model on ONNX Runtime (CPU), the models timed interleaved.

    Args:
        models: name -> module taking ``example_input``.
        example_input: as in :func:`slimcnn.measure.measure_latency`.
        threads: intra-op threads (``None`` = physical cores).
        warmup: untimed calls per model (their profile entries are dropped).
        runs: timed rounds.

    Returns:
        name -> its nodes in execution order, less the profiler's per-node cost (see the module notes).

    Raises:
        ExportError: a model cannot be exported to ONNX.
    """
    from slimcnn.measure._onnx import onnx_bytes, ort_feed, ort_session

    threads_n = resolve_threads(threads)
    names = list(models)
    with tempfile.TemporaryDirectory(prefix="slimcnn-profile-") as tmp, eval_mode(*models.values()):
        data = {n: onnx_bytes(models[n], example_input) for n in names}
        sessions = {n: ort_session(data[n], threads=threads_n, spin=False, profile_prefix=os.path.join(tmp, f"m{i}"))
                    for i, n in enumerate(names)}
        plain = ort_session(data[names[0]], threads=threads_n, spin=False)  # the first model, unprofiled
        runners = {**{f"profiled {n}": wall_timed(functools.partial(s.run, None, ort_feed(s, example_input)))
                      for n, s in sessions.items()},
                   "unprofiled": wall_timed(functools.partial(plain.run, None, ort_feed(plain, example_input)))}
        wall = round_robin(runners, warmup=warmup, runs=runs)["unprofiled"]
        timed = {n: _node_times(Path(sessions[n].end_profiling()), warmup) for n in names}
    first = timed[names[0]]
    cost = max(0.0, (sum(nd.ms for nd in first) - float(np.median(wall))) / max(len(first), 1))
    return {n: [dataclasses.replace(nd, ms=max(0.0, nd.ms - cost)) for nd in nodes] for n, nodes in timed.items()}


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
                            float(np.median(durs[warmup:] if len(durs) > warmup else durs))))
    return out


def _shape(entry: Mapping[str, list[int]]) -> tuple[int, ...]:
    return tuple(int(d) for d in next(iter(entry.values()), []))
