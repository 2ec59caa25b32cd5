"""Latency on ONNX Runtime (default) or torch eager, with fixed threads, warm-up and percentiles.

Method: build the runner once (an ORT ``InferenceSession`` with ``threads`` intra-op threads,
1 inter-op thread, sequential execution and all graph optimisations; or the torch model in eval
mode under ``inference_mode`` with ``torch.set_num_threads(threads)`` restored afterwards), run
``warmup`` untimed calls, then time each of ``runs`` calls with ``time.perf_counter`` (on CUDA:
events recorded after a synchronize) and report the median, p10, p90 and n.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import platform
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from torch import nn

from slimcnn.errors import ConfigError, require
from slimcnn.measure._inputs import ExampleInput, input_shape, run_model, to_device
from slimcnn.types import LatencyStats

if TYPE_CHECKING:
    from slimcnn.measure._onnx import Spin

log = logging.getLogger(__name__)

Runtime = Literal["onnxruntime", "torch"]
RUNTIMES: tuple[str, ...] = ("onnxruntime", "torch")
Clock = Callable[[], float]


@functools.cache
def cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (``platform.processor()`` elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown cpu"


def ort_channel_block() -> int:
    """Channel block of ONNX Runtime's NCHWc convolutions on this CPU: 16 with AVX-512, 8 with AVX2, else 1.

    ONNX Runtime runs a conv in its fast blocked layout only in whole blocks, so a pruned width of 24
    costs as much as 32 on an AVX-512 machine (measured: ESPCN's 64->24 3x3 conv ran as fast as 64->32).
    Kept widths rounded to this block (``--round-to auto``) turn removed MACs into removed time.
    """
    flags: set[str] = set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        return 1
    if "avx512f" in flags:
        return 16
    return 8 if "avx2" in flags else 1


def package_versions(names: Sequence[str]) -> dict[str, str | None]:
    """Installed version of each distribution (``None`` when absent), for benchmark headers."""
    import importlib.metadata as md

    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    return out


@functools.cache
def physical_cores() -> int:
    """Physical cores this process may use (hyper-threads counted once); at least 1."""
    try:
        allowed = os.sched_getaffinity(0)
    except AttributeError:  # not Linux
        allowed = set(range(os.cpu_count() or 1))
    cores: set[tuple[str, str]] = set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            proc, phys = -1, "0"
            for line in f:
                key, _, val = line.partition(":")
                key, val = key.strip(), val.strip()
                if key == "processor":
                    proc = int(val)
                elif key == "physical id":
                    phys = val
                elif key == "core id" and proc in allowed:
                    cores.add((phys, val))
    except (OSError, ValueError):
        cores = set()
    return max(1, len(cores) if cores else len(allowed))


def device_name(device: str = "cpu") -> str:
    """A device description carrying the hardware, e.g. ``"cpu (AMD EPYC)"``."""
    if device.startswith("cuda"):
        return f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    return f"cpu ({cpu_model()})"


def _stats(samples_ms: Sequence[float]) -> tuple[float, float, float]:
    """``(median, p10, p90)`` of ``samples_ms`` (linear interpolation between order statistics).

    Raises:
        ConfigError: no samples.
    """
    if len(samples_ms) == 0:
        raise ConfigError("latency statistics need at least one timed run (runs >= 1)")
    a = np.asarray(samples_ms, dtype=np.float64)
    p10, med, p90 = np.percentile(a, [10.0, 50.0, 90.0])
    return float(med), float(p10), float(p90)


def _time_runs(fn: Callable[[], Any], *, warmup: int, runs: int, min_seconds: float | None = None,
               clock: Clock = time.perf_counter, max_runs: int = 100_000) -> list[float]:
    """Call ``fn`` ``warmup`` times untimed, then time it; returns per-call milliseconds.

    Timing continues past ``runs`` calls until ``min_seconds`` of timed calls have accumulated
    (capped at ``max_runs``).
    """
    if runs < 1 or warmup < 0:
        raise ConfigError(f"need runs >= 1 and warmup >= 0, got runs={runs}, warmup={warmup}")
    for _ in range(warmup):
        fn()
    samples: list[float] = []
    total = 0.0
    while len(samples) < runs or (min_seconds is not None and total < min_seconds and len(samples) < max_runs):
        t0 = clock()
        fn()
        dt = clock() - t0
        samples.append(dt * 1e3)
        total += dt
    return samples


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Set ``torch.set_num_threads(threads)`` inside the block and restore the old value after."""
    old = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        torch.set_num_threads(old)


@contextlib.contextmanager
def eval_mode(*models: nn.Module) -> Iterator[None]:
    """Put ``models`` in eval mode inside the block and restore each module's own flag after."""
    saved = [(m, m.training) for model in models for m in model.modules()]
    for model in models:
        model.eval()
    try:
        yield
    finally:
        for m, flag in saved:
            m.training = flag


def resolve_threads(threads: int | None) -> int:
    """``threads`` or, when ``None``, the number of physical cores."""
    if threads is None:
        return physical_cores()
    if int(threads) < 1:
        raise ConfigError(f"threads must be >= 1, got {threads}")
    return int(threads)


def make_runner(model: nn.Module, example_input: ExampleInput, *, runtime: str, threads: int,
                device: str = "cpu", spin: Spin = "always") -> Callable[[], Any]:
    """A no-argument callable running one inference of ``model`` on ``runtime``.

    The caller puts the model in eval mode (:func:`eval_mode`) and, for the torch runner, sets
    the thread count (:func:`torch_threads`); on CUDA the model must already be on ``device``.

    Raises:
        ConfigError: unknown runtime, or ONNX Runtime asked for a CUDA device it has no provider for
            (:func:`slimcnn.measure._onnx.ort_providers`).
        ExportError: the model cannot be exported to ONNX.
    """
    if runtime not in RUNTIMES:
        raise ConfigError(f"runtime must be one of {list(RUNTIMES)}, got '{runtime}'")
    if runtime == "onnxruntime":
        from slimcnn.measure._onnx import ExportError, onnx_bytes, ort_feed, ort_providers, ort_session

        require("onnxruntime", "onnx")
        import onnxruntime as ort

        ort_providers(device, ort.get_available_providers())  # a missing GPU provider fails before the export

        try:
            data = onnx_bytes(model, example_input)
        except ExportError as e:
            raise ExportError(f"{e}; measure with runtime='torch' (--runtime torch) instead") from e
        session = ort_session(data, threads=threads, spin=spin, device=device)
        feed = ort_feed(session, example_input)
        return functools.partial(session.run, None, feed)
    x = to_device(example_input, device)

    def run() -> Any:
        with torch.inference_mode():
            return run_model(model, x)

    return run


def wall_timed(fn: Callable[[], Any], clock: Clock = time.perf_counter) -> Callable[[], float]:
    """Wrap ``fn`` so each call returns its wall time in ms on ``clock``."""

    def timed() -> float:
        t0 = clock()
        fn()
        return (clock() - t0) * 1e3

    return timed


CHECK_SECONDS = 0.25
"""Timed seconds per model a check of a pruned model against the original accumulates at least. 20 rounds of a
0.6 ms model are 12 ms: lcnet_050's ratio spread 0.80-0.94 over ten such checks and 0.85-0.88 with this floor
(576 rounds); on models of 1-6 ms the spread on the project's VM comes from its speed states and did not narrow
(``benchmarks/results/check_rounds.md``)."""

CALLS_PER_TURN = 2
"""Calls of one model per turn of :func:`round_robin`; only the last is timed."""


def round_robin(fns: Mapping[str, Callable[[], float]], *, warmup: int, runs: int,
                calls_per_turn: int = CALLS_PER_TURN, min_seconds: float | None = None,
                max_runs: int = 100_000) -> dict[str, list[float]]:
    """ms of every ``fns`` entry per round: each warmed up ``warmup`` times, then ``runs`` rounds in which every
    entry is called ``calls_per_turn`` times in a row and the last call is kept, the order rotating from round to
    round so drift (thermal, other load) hits all of them alike. With ``min_seconds``, rounds go on past ``runs``
    until every entry's timed calls add up to that many seconds (at most ``max_runs`` rounds).

    The untimed first call of a turn brings back into the caches what the other entries' calls evicted: a model
    timed on the call right after another model's reads slower than it runs on its own, the more so the smaller it
    is (ResNet-20 at 8x3x32x32, every group -50 %: 0.51x the original's latency timed that way, 0.44x primed, 0.43x
    each alone; ResNet-50 0.27x in all three; ``benchmarks/results/latency_protocol.md``)."""
    names = list(fns)
    for n in names:
        for _ in range(warmup):
            fns[n]()
    samples: dict[str, list[float]] = {n: [] for n in names}
    totals = dict.fromkeys(names, 0.0)
    floor_ms = (min_seconds or 0.0) * 1e3
    r = 0
    while r < runs or (names and r < max_runs and min(totals.values()) < floor_ms):
        k = r % max(len(names), 1)
        for n in names[k:] + names[:k]:
            for _ in range(calls_per_turn - 1):
                fns[n]()
            samples[n].append(ms := fns[n]())
            totals[n] += ms
        r += 1
    return samples


def _cuda_timed(fn: Callable[[], Any]) -> Callable[[], float]:
    """Wrap ``fn`` so each call returns its CUDA time in ms (events after a synchronize)."""

    def timed() -> float:
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return float(start.elapsed_time(end))

    return timed


def _events(runtime: str, device: str) -> bool:
    """Time with CUDA events: torch on a GPU (ONNX Runtime's ``run`` returns with the outputs on the host, so
    the wall clock times it whole)."""
    return runtime == "torch" and device.startswith("cuda")


def _samples(fn: Callable[[], Any], *, device: str, warmup: int, runs: int, min_seconds: float | None,
             clock: Clock, runtime: str = "torch") -> list[float]:
    if _events(runtime, device):
        timed = _cuda_timed(fn)
        for _ in range(warmup):
            timed()
        out: list[float] = []
        while len(out) < runs or (min_seconds is not None and sum(out) < min_seconds * 1e3):
            out.append(timed())
        return out
    return _time_runs(fn, warmup=warmup, runs=runs, min_seconds=min_seconds, clock=clock)


def _make_stats(samples: Sequence[float], *, runtime: str, threads: int, device: str, shape: tuple[int, ...],
                warmup: int) -> LatencyStats:
    med, p10, p90 = _stats(samples)
    return LatencyStats(median_ms=med, p10_ms=p10, p90_ms=p90, n=len(samples), runtime=runtime, threads=threads,
                        device=device_name(device), batch=shape[0] if shape else 1, input_shape=shape,
                        warmup=warmup)


def measure_latency(model: nn.Module, example_input: ExampleInput, *, runtime: Runtime = "onnxruntime",
                    threads: int | None = None, warmup: int = 10, runs: int = 50,
                    min_seconds: float | None = None, device: str = "cpu",
                    clock: Clock = time.perf_counter) -> LatencyStats:
    """Time one inference of ``model`` on ``example_input``.

    Args:
        model: the module (not modified; put in eval mode).
        example_input: ``Tensor[N, C, H, W]`` or a tuple of tensors (ONNX Runtime); the torch
            runtime also takes lists/dicts (see :mod:`slimcnn.measure`).
        runtime: ``"onnxruntime"`` (exported with :func:`export_onnx`'s exporter, CPU) or ``"torch"``.
        threads: intra-op threads; ``None`` = physical cores of this machine.
        warmup: untimed calls before timing.
        runs: timed calls (at least).
        min_seconds: keep timing until this many seconds of timed calls have accumulated.
        device: ``"cpu"`` or ``"cuda[:i]"`` (torch: CUDA events; onnxruntime: its TensorRT/CUDA provider).
        clock: the timer (injectable for tests); ignored on CUDA, where events are used.

    Returns:
        :class:`~slimcnn.types.LatencyStats` with the median, p10, p90 and the conditions.
    """
    threads_n = resolve_threads(threads)
    with eval_mode(model), torch_threads(threads_n if runtime == "torch" else None):
        fn = make_runner(model, example_input, runtime=runtime, threads=threads_n, device=device)
        samples = _samples(fn, device=device, warmup=warmup, runs=runs, min_seconds=min_seconds, clock=clock,
                           runtime=runtime)
    stats = _make_stats(samples, runtime=runtime, threads=threads_n, device=device,
                        shape=input_shape(example_input), warmup=warmup)
    log.info("latency %s/%d threads: median %.3f ms (p10 %.3f, p90 %.3f, n=%d)", runtime, threads_n,
             stats.median_ms, stats.p10_ms, stats.p90_ms, stats.n)
    return stats


def compare_latency(models: dict[str, nn.Module], example_input: ExampleInput, *,
                    runtime: Runtime = "onnxruntime", threads: int | None = None, warmup: int = 10,
                    runs: int = 50, min_seconds: float | None = None, device: str = "cpu",
                    runtimes: dict[str, Runtime] | None = None,
                    clock: Clock = time.perf_counter) -> dict[str, LatencyStats]:
    """Time several models in one process, interleaved round-robin, so their ratios are fair.

    Every model is warmed up, then in each round every model runs twice in a row and the second call is timed
    (the first brings back what the other models' calls evicted from the caches, :func:`round_robin`); the order
    of the models rotates from round to round, so drift (thermal, other load) hits all of them alike.
    ONNX Runtime sessions spin only inside a run (``spin="in-run"``, :data:`~slimcnn.measure._onnx.Spin`): as
    deployed between the nodes of a run, parked when it returns so that one model's idle worker threads do not
    busy-wait on the cores the next model needs.

    Args:
        models: name -> module; all take ``example_input``.
        example_input: as in :func:`measure_latency`.
        runtime: ``"onnxruntime"`` or ``"torch"``.
        threads: intra-op threads (``None`` = physical cores).
        warmup: untimed calls per model.
        runs: timed calls per model (at least).
        min_seconds: go on past ``runs`` rounds until every model's timed calls add up to this many seconds
            (:data:`CHECK_SECONDS` gives sub-millisecond models as many rounds as the search's checks need).
        device: ``"cpu"`` or ``"cuda[:i]"`` (torch: CUDA events; onnxruntime: its TensorRT/CUDA provider).
        runtimes: per-model runtime overriding ``runtime`` (e.g. the same module twice, once on
            ``"onnxruntime"`` and once on ``"torch"``, to compare runtimes fairly).
        clock: the timer (injectable for tests).

    Returns:
        name -> :class:`~slimcnn.types.LatencyStats`, in the order of ``models``.
    """
    if not models:
        raise ConfigError("compare_latency needs at least one model")
    threads_n = resolve_threads(threads)
    names = list(models)
    rt = {n: (runtimes or {}).get(n, runtime) for n in names}
    with eval_mode(*models.values()), torch_threads(threads_n if "torch" in rt.values() else None):
        fns = {n: make_runner(m, example_input, runtime=rt[n], threads=threads_n, device=device, spin="in-run")
               for n, m in models.items()}
        samples = round_robin({n: _cuda_timed(f) if _events(rt[n], device) else wall_timed(f, clock)
                               for n, f in fns.items()}, warmup=warmup, runs=runs, min_seconds=min_seconds)
    shape = input_shape(example_input)
    return {n: _make_stats(samples[n], runtime=rt[n], threads=threads_n, device=device, shape=shape,
                           warmup=warmup) for n in names}
