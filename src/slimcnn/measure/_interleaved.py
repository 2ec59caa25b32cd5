"""Time many small modules, each on its own input shape, interleaved round-robin in one process.

:func:`compare_latency` needs one example input for every model; a latency table times layers of
many shapes (one conv at several widths), so this times ``{name: (module, input_shape)}`` instead.
Each round calls every module once, in an order that rotates from round to round, so drift and
other load hit every entry alike; the reported number is the median over rounds.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping

import torch
from torch import nn

from slimcnn.measure._latency import (
    Clock,
    Runtime,
    _make_stats,
    eval_mode,
    make_runner,
    resolve_threads,
    round_robin,
    torch_threads,
    wall_timed,
)
from slimcnn.types import LatencyStats


def cpu_contended() -> bool:
    """True when more processes are runnable than there are CPUs (1-minute load average).

    A CPU timing taken then is slow for the load, not for the module, and must not be cached.
    """
    try:
        return os.getloadavg()[0] > (os.cpu_count() or 1)
    except OSError:  # no load average on this platform
        return False


def time_modules_interleaved(
    modules: Mapping[str, tuple[nn.Module, tuple[int, ...]]],
    *,
    runtime: Runtime = "onnxruntime",
    threads: int | None = None,
    warmup: int = 3,
    runs: int = 15,
    clock: Clock = time.perf_counter,
) -> dict[str, LatencyStats]:
    """Median latency of each module on a seeded random input of its own shape, timed interleaved.

    Args:
        modules: name -> (module taking one tensor, its input shape ``(N, C, ...)``).
        runtime: ``"onnxruntime"`` (CPU) or ``"torch"`` (CPU).
        threads: intra-op threads (``None`` = physical cores).
        warmup: untimed calls per module before the rounds.
        runs: timed rounds (every module called twice per round, the second call timed).
        clock: the timer (injectable for tests).

    Returns:
        name -> :class:`~slimcnn.types.LatencyStats`, in the order of ``modules``.
    """
    threads_n = resolve_threads(threads)
    names = list(modules)
    gen = torch.Generator().manual_seed(0)
    inputs = {n: torch.randn(tuple(modules[n][1]), generator=gen) for n in names}
    mods = [m for m, _ in modules.values()]
    with eval_mode(*mods), torch_threads(threads_n if runtime == "torch" else None):
        samples = round_robin({n: wall_timed(make_runner(modules[n][0], inputs[n], runtime=runtime, threads=threads_n,
                                                         spin="in-run"), clock) for n in names}, warmup=warmup, runs=runs)
    return {n: _make_stats(samples[n], runtime=runtime, threads=threads_n, device="cpu",
                           shape=tuple(modules[n][1]), warmup=warmup) for n in names}
