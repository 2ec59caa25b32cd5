"""Per-layer latency: time a layer alone on the same runtime, cached by shape/runtime/threads.

The cache key is ``runtime | threads | device | module repr | input shape | versions``. A
module's ``repr`` holds its type and hyper-parameters (channels, kernel, stride, groups, ...) but
not its weights, so two layers of the same configuration share an entry; dense float latency
does not depend on the weight values. The cache lives in memory and, unless disabled, in a JSON
file (``$SLIMCNN_CACHE_DIR/latency.json``, default ``~/.cache/slimcnn/latency.json``).
"""

from __future__ import annotations

import copy
import json
import logging
import os
import threading
from pathlib import Path

import torch
from torch import nn

from slimcnn._io import write_json
from slimcnn.measure._inputs import ExampleInput
from slimcnn.measure._latency import Runtime, cpu_model, measure_latency, resolve_threads
from slimcnn.measure._profile import layer_input_shapes
from slimcnn.types import LatencyStats, from_dict

log = logging.getLogger(__name__)

TIMED_LAYERS: tuple[type[nn.Module], ...] = (nn.modules.conv._ConvNd, nn.Linear)
"""Leaf layer types :func:`layer_latencies` times (convolutions of any kind and linear layers)."""

_MEMORY: dict[str, dict[str, LatencyStats]] = {}
_LOCK = threading.Lock()


def default_cache_path() -> Path:
    """``$SLIMCNN_CACHE_DIR/latency.json``, else ``~/.cache/slimcnn/latency.json``."""
    root = os.environ.get("SLIMCNN_CACHE_DIR")
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "slimcnn"
    return base / "latency.json"


def cache_key(module: nn.Module, input_shape: tuple[int, ...], *, runtime: str, threads: int,
              device: str = "cpu", runs: int = 0) -> str:
    """The cache key of one layer timing (see the module notes)."""
    import onnxruntime

    versions = f"torch{torch.__version__}/ort{onnxruntime.__version__}"
    dev = f"cpu:{cpu_model()}" if device == "cpu" else device
    shape = "x".join(str(d) for d in input_shape)
    return f"{runtime}|{threads}t|{dev}|{versions}|runs{runs}|{shape}|{module!r}"


def _load(path: Path) -> dict[str, LatencyStats]:
    key = str(path)
    if key in _MEMORY:
        return _MEMORY[key]
    entries: dict[str, LatencyStats] = {}
    if path.is_file():
        try:
            raw = json.loads(path.read_text())
            entries = {k: from_dict(LatencyStats, v) for k, v in raw.get("entries", {}).items()}
        except (OSError, ValueError, TypeError, AttributeError) as e:
            log.warning("ignoring unreadable latency cache %s (%s)", path, e)
    _MEMORY[key] = entries
    return entries


def _save(path: Path, entries: dict[str, LatencyStats]) -> None:
    try:
        write_json(path, {"version": 1, "entries": entries})
    except OSError as e:  # a read-only home must not break measurement
        log.warning("could not write the latency cache %s (%s)", path, e)


def clear_memory_cache() -> None:
    """Forget the in-memory copies of every cache file (the files are kept)."""
    with _LOCK:
        _MEMORY.clear()


def time_module(module: nn.Module, input_shape: tuple[int, ...], *, runtime: Runtime = "onnxruntime",
                threads: int | None = None, runs: int = 30, warmup: int = 5, device: str = "cpu",
                cache: bool = True, cache_path: str | Path | None = None) -> LatencyStats:
    """Time ``module`` alone on a random input of ``input_shape``, with a cache.

    Used for per-layer latency and by :mod:`slimcnn.lowrank` to time candidate factorisations.

    Args:
        module: a layer or small block taking one tensor (a copy is timed; ``module`` is untouched).
        input_shape: shape of its input, e.g. ``(1, 64, 56, 56)``.
        runtime: ``"onnxruntime"`` or ``"torch"``.
        threads: intra-op threads (``None`` = physical cores).
        runs: timed calls.
        warmup: untimed calls first.
        device: ``"cpu"`` or ``"cuda[:i]"`` (torch runtime).
        cache: look up and store the result (memory + ``cache_path``).
        cache_path: JSON cache file (``None`` = :func:`default_cache_path`).

    Returns:
        :class:`~slimcnn.types.LatencyStats` of the module alone.
    """
    threads_n = resolve_threads(threads)
    shape = tuple(int(d) for d in input_shape)
    key = cache_key(module, shape, runtime=runtime, threads=threads_n, device=device, runs=runs)
    path = Path(cache_path) if cache_path is not None else default_cache_path()
    if cache:
        with _LOCK:
            hit = _load(path).get(key)
        if hit is not None:
            log.debug("latency cache hit: %s", key[:120])
            return hit
    layer = copy.deepcopy(module).to(device).eval()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=gen).to(device)
    stats = measure_latency(layer, x, runtime=runtime, threads=threads_n, warmup=warmup, runs=runs, device=device)
    if cache and device == "cpu" and _contended():
        log.info("not caching the latency of %s: load average above the %d CPUs", key[:80], os.cpu_count() or 1)
    elif cache:
        with _LOCK:
            entries = _load(path)
            entries[key] = stats
            _save(path, entries)
    return stats


def _contended() -> bool:
    """More runnable processes than CPUs: a CPU timing taken now would be slow for the load, not the layer,
    and must not be reused from the cache later."""
    try:
        return os.getloadavg()[0] > (os.cpu_count() or 1)
    except OSError:  # no load average on this platform
        return False


def layer_latencies(model: nn.Module, example_input: ExampleInput, *, runtime: Runtime = "onnxruntime",
                    threads: int | None = None, runs: int = 30, warmup: int = 5, device: str = "cpu",
                    cache: bool = True, cache_path: str | Path | None = None,
                    layer_types: tuple[type[nn.Module], ...] = TIMED_LAYERS) -> dict[str, float]:
    """Median latency (ms) of every conv/linear leaf layer, each timed alone at its recorded input shape.

    The input shapes come from one forward of ``model`` on ``example_input``; layers never
    called are skipped. The sum of the per-layer times is not the model's latency (the
    runtime fuses and overlaps layers); use it to rank layers, not to add up.

    Returns:
        layer FQN -> median milliseconds, in module order.
    """
    shapes = layer_input_shapes(model, example_input)
    out: dict[str, float] = {}
    for name, mod in model.named_modules():
        if not isinstance(mod, layer_types) or name not in shapes or not shapes[name]:
            continue
        stats = time_module(mod, shapes[name], runtime=runtime, threads=threads, runs=runs, warmup=warmup,
                            device=device, cache=cache, cache_path=cache_path)
        out[name] = stats.median_ms
    return out
