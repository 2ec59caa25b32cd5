"""Per-layer latency: cache keys, memory + disk cache, layer selection; analyze() assembly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

import slimcnn.measure._layers as layers_mod
from slimcnn.measure import analyze, clear_memory_cache, default_cache_path, layer_latencies, time_module
from slimcnn.types import LatencyStats

_REAL_CONTENDED = layers_mod._contended


def _fake_stats(median: float) -> LatencyStats:
    return LatencyStats(median_ms=median, p10_ms=median, p90_ms=median, n=1, runtime="torch", threads=1,
                        device="cpu (fake)", batch=1, input_shape=(1,))


@pytest.fixture(autouse=True)
def _fresh_cache() -> None:
    clear_memory_cache()


def test_time_module_caches_in_memory_and_on_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[int, ...]] = []

    def fake(module: nn.Module, x: torch.Tensor, **kw: object) -> LatencyStats:
        calls.append(tuple(x.shape))
        return _fake_stats(float(len(calls)))

    monkeypatch.setattr(layers_mod, "measure_latency", fake)
    cache = tmp_path / "lat.json"
    conv = nn.Conv2d(3, 8, 3)
    first = time_module(conv, (1, 3, 16, 16), runtime="torch", threads=1, cache_path=cache)
    again = time_module(nn.Conv2d(3, 8, 3), (1, 3, 16, 16), runtime="torch", threads=1, cache_path=cache)
    assert first == again and len(calls) == 1  # same config, other weights -> cache hit
    time_module(conv, (1, 3, 32, 32), runtime="torch", threads=1, cache_path=cache)
    time_module(conv, (1, 3, 16, 16), runtime="torch", threads=2, cache_path=cache)
    time_module(nn.Conv2d(3, 8, 3, stride=2), (1, 3, 16, 16), runtime="torch", threads=1, cache_path=cache)
    assert len(calls) == 4  # new shape, new threads, new layer config each miss
    assert len(json.loads(cache.read_text())["entries"]) == 4
    clear_memory_cache()  # read back from disk, no new measurement
    assert time_module(conv, (1, 3, 16, 16), runtime="torch", threads=1, cache_path=cache) == first
    assert len(calls) == 4
    time_module(conv, (1, 3, 16, 16), runtime="torch", threads=1, cache_path=cache, cache=False)
    assert len(calls) == 5


def test_timings_under_load_are_not_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(layers_mod, "measure_latency", lambda module, x, **kw: _fake_stats(1.0))
    monkeypatch.setattr(layers_mod.os, "getloadavg", lambda: (99.0, 99.0, 99.0))
    monkeypatch.setattr(layers_mod, "_contended", _REAL_CONTENDED)  # conftest stubs it for every other test
    cache = tmp_path / "lat.json"
    time_module(nn.Conv2d(3, 8, 3), (1, 3, 16, 16), runtime="torch", threads=1, cache_path=cache)
    assert not cache.exists()
    monkeypatch.setattr(layers_mod.os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    clear_memory_cache()
    time_module(nn.Conv2d(3, 8, 3), (1, 3, 16, 16), runtime="torch", threads=1, cache_path=cache)
    assert len(json.loads(cache.read_text())["entries"]) == 1


def test_default_cache_path_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SLIMCNN_CACHE_DIR", str(tmp_path))
    assert default_cache_path() == tmp_path / "latency.json"


def test_corrupt_cache_is_ignored(tmp_path: Path) -> None:
    cache = tmp_path / "lat.json"
    cache.write_text("{not json")
    stats = time_module(nn.Linear(4, 4), (1, 4), runtime="torch", threads=1, runs=2, warmup=0, cache_path=cache)
    assert stats.n == 2
    assert len(json.loads(cache.read_text())["entries"]) == 1


def test_layer_latencies_times_conv_and_linear_only(tmp_path: Path) -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 3))
    per = layer_latencies(model, torch.randn(1, 3, 8, 8), runtime="torch", threads=1, runs=2, warmup=0,
                          cache_path=tmp_path / "c.json")
    assert list(per) == ["0", "4"]
    assert all(v > 0 for v in per.values())


def test_analyze_fills_latency_and_layer_rows(tmp_path: Path) -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU())
    cost = analyze(model, torch.randn(1, 3, 8, 8), runtime="onnxruntime", threads=1, runs=3, warmup=1,
                   layer_runs=2, cache_path=tmp_path / "c.json")
    assert cost.latency is not None and cost.latency.runtime == "onnxruntime" and cost.latency.n == 3
    rows = {r.name: r for r in cost.layers}
    assert rows["0"].latency_ms is not None and rows["0"].latency_ms > 0
    assert rows["1"].latency_ms is None  # batch norm is not timed alone
    only = analyze(model, torch.randn(1, 3, 8, 8), latency=False)
    assert only.latency is None and only.macs == cost.macs
