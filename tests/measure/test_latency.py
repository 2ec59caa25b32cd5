"""Latency statistics and timing loops, tested with a fake clock (no timed assertions)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from slimcnn.errors import ConfigError
from slimcnn.measure import (
    compare_latency,
    cpu_model,
    device_name,
    measure_latency,
    physical_cores,
    torch_threads,
)
from slimcnn.measure._latency import _stats, _time_runs


class FakeClock:
    """A clock that only moves when a fake workload says so."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Sleeper(nn.Module):
    """Advances the fake clock by the next duration each forward; records threads and mode."""

    def __init__(self, clock: FakeClock, durations: list[float], log: list[str] | None = None, name: str = "") -> None:
        super().__init__()
        self.clock, self.durations, self.i = clock, durations, 0
        self.log, self.name = log, name
        self.threads_seen: list[int] = []
        self.training_seen: list[bool] = []
        self.lin = nn.Linear(2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.clock.advance(self.durations[self.i % len(self.durations)])
        self.i += 1
        self.threads_seen.append(torch.get_num_threads())
        self.training_seen.append(self.training)
        if self.log is not None:
            self.log.append(self.name)
        return self.lin(x)


def test_stats_fixed_numbers() -> None:
    med, p10, p90 = _stats([float(v) for v in range(1, 11)])
    assert med == pytest.approx(5.5)
    assert p10 == pytest.approx(1.9)  # rank 0.9 between 1 and 2
    assert p90 == pytest.approx(9.1)
    assert _stats([7.0]) == (7.0, 7.0, 7.0)
    assert _stats([3.0, 1.0, 2.0])[0] == 2.0  # order does not matter
    with pytest.raises(ConfigError, match="at least one"):
        _stats([])


def test_time_runs_warmup_excluded_and_per_call_ms() -> None:
    clock = FakeClock()
    durations = iter([9.0, 9.0, 0.001, 0.002, 0.003])  # two warm-up calls, then three timed
    samples = _time_runs(lambda: clock.advance(next(durations)), warmup=2, runs=3, clock=clock)
    assert samples == pytest.approx([1.0, 2.0, 3.0])


def test_time_runs_min_seconds_extends() -> None:
    clock = FakeClock()
    samples = _time_runs(lambda: clock.advance(0.003), warmup=0, runs=2, min_seconds=0.010, clock=clock)
    assert len(samples) == 4  # 3 x 3 ms < 10 ms, 4 x 3 ms >= 10 ms


def test_time_runs_validates() -> None:
    with pytest.raises(ConfigError, match="runs >= 1"):
        _time_runs(lambda: None, warmup=0, runs=0)


def test_measure_latency_torch_fake_clock_threads_and_mode_restored() -> None:
    clock = FakeClock()
    model = Sleeper(clock, [0.001, 0.005, 0.002, 0.004, 0.003])
    model.train()
    torch.set_num_threads(2)
    stats = measure_latency(model, torch.randn(4, 2), runtime="torch", threads=1, warmup=3, runs=5, clock=clock)
    assert stats.median_ms == pytest.approx(3.0)  # timed calls 4..8 take 4,3,1,5,2 ms
    assert stats.n == 5 and stats.warmup == 3
    assert stats.runtime == "torch" and stats.threads == 1
    assert stats.batch == 4 and stats.input_shape == (4, 2)
    assert cpu_model() in stats.device
    assert set(model.threads_seen) == {1} and not any(model.training_seen)
    assert torch.get_num_threads() == 2 and model.training


def test_measure_latency_onnxruntime_records_conditions() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    stats = measure_latency(model, torch.randn(1, 3, 8, 8), threads=1, warmup=1, runs=3)
    assert stats.runtime == "onnxruntime" and stats.threads == 1 and stats.n == 3
    assert stats.p10_ms <= stats.median_ms <= stats.p90_ms and stats.median_ms > 0


def test_default_threads_are_physical_cores() -> None:
    stats = measure_latency(nn.Linear(2, 2), torch.randn(1, 2), runtime="torch", warmup=0, runs=1)
    assert stats.threads == physical_cores() >= 1


def test_bad_runtime_and_cuda_with_ort() -> None:
    with pytest.raises(ConfigError, match="runtime must be one of"):
        measure_latency(nn.Linear(2, 2), torch.randn(1, 2), runtime="tvm", runs=1)  # type: ignore[arg-type]
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():  # the CPU-only onnxruntime of CI
        with pytest.raises(ConfigError, match=r"needs ONNX Runtime's CUDAExecutionProvider.*slimcnn\[gpu\]"):
            measure_latency(nn.Linear(2, 2), torch.randn(1, 2), device="cuda", runs=1)
    with pytest.raises(ConfigError, match="threads"):
        measure_latency(nn.Linear(2, 2), torch.randn(1, 2), threads=0, runs=1)


def test_compare_latency_round_robin_fake_clock() -> None:
    clock, log = FakeClock(), []
    # after the warm-up call every turn is two calls, the first slow (cold caches) and untimed
    a = Sleeper(clock, [0.001, 0.009], log, "a")
    b = Sleeper(clock, [0.003, 0.009], log, "b")
    out = compare_latency({"a": a, "b": b}, torch.randn(1, 2), runtime="torch", threads=1, warmup=1, runs=4,
                          clock=clock)
    assert list(out) == ["a", "b"]
    assert out["a"].median_ms == pytest.approx(1.0) and out["b"].median_ms == pytest.approx(3.0)
    assert out["b"].median_ms / out["a"].median_ms == pytest.approx(3.0)
    # warm-up a, b; then rounds alternate the starting model, each model called twice a turn (the second timed)
    assert log == ["a", "b"] + ["a", "a", "b", "b", "b", "b", "a", "a"] * 2
    with pytest.raises(ConfigError):
        compare_latency({}, torch.randn(1, 2))


def test_round_robin_goes_on_until_every_model_has_its_seconds() -> None:
    from slimcnn.measure._latency import round_robin

    calls = {"slow": 0, "fast": 0}

    def timed(name: str, ms: float):
        def call() -> float:
            calls[name] += 1
            return ms
        return call

    # 2 rounds asked, 10 ms timed per model: the 4 ms model needs 3 rounds, the 1 ms one 10; rounds stop together
    out = round_robin({"slow": timed("slow", 4.0), "fast": timed("fast", 1.0)}, warmup=0, runs=2, min_seconds=0.01)
    assert len(out["slow"]) == len(out["fast"]) == 10 and calls == {"slow": 20, "fast": 20}
    assert len(round_robin({"m": timed("slow", 4.0)}, warmup=0, runs=5, min_seconds=0.001)["m"]) == 5  # runs first
    assert len(round_robin({"m": timed("slow", 0.0)}, warmup=0, runs=1, min_seconds=1.0, max_runs=7)["m"]) == 7
    assert round_robin({}, warmup=0, runs=0, min_seconds=1.0) == {}


def test_torch_threads_context_restores_on_error() -> None:
    torch.set_num_threads(2)
    with pytest.raises(RuntimeError), torch_threads(1):
        assert torch.get_num_threads() == 1
        raise RuntimeError("boom")
    assert torch.get_num_threads() == 2


def test_device_name_mentions_cpu_model() -> None:
    assert device_name("cpu") == f"cpu ({cpu_model()})"
    assert cpu_model()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_latency_uses_events() -> None:
    model = nn.Conv2d(3, 8, 3).cuda()
    stats = measure_latency(model, torch.randn(1, 3, 32, 32, device="cuda"), runtime="torch", device="cuda",
                            warmup=2, runs=5)
    assert stats.n == 5 and stats.device.startswith("cuda") and stats.median_ms > 0


def test_compare_latency_per_model_runtime() -> None:
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU())
    out = compare_latency({"ort": model, "eager": model}, torch.randn(1, 1, 8, 8), threads=1, warmup=0, runs=2,
                          runtimes={"eager": "torch"})
    assert out["ort"].runtime == "onnxruntime" and out["eager"].runtime == "torch"
    assert out["ort"].n == out["eager"].n == 2


def test_package_versions() -> None:
    from slimcnn.measure import package_versions

    got = package_versions(["torch", "surely-not-installed-pkg"])
    assert got["torch"] == torch.__version__.split("+")[0] and got["surely-not-installed-pkg"] is None


def test_ort_gpu_provider_selection_and_one_line_errors(monkeypatch) -> None:
    import onnxruntime as ort

    from slimcnn.measure._onnx import ort_providers, ort_session

    cpu, cuda, trt = "CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"
    assert ort_providers("cpu", [cpu]) == [cpu]
    assert ort_providers("cuda", [cuda, cpu]) == [(cuda, {"device_id": 0}), cpu]
    assert ort_providers("cuda:1", [trt, cuda, cpu]) == [(trt, {"device_id": 1}), (cuda, {"device_id": 1}), cpu]
    for bad, needle in (("gpu", "must be cpu, cuda or cuda:N"), ("cuda:x", "must be cpu, cuda or cuda:N")):
        with pytest.raises(ConfigError, match=needle):
            ort_providers(bad, [cuda, cpu])
    with pytest.raises(ConfigError, match="CUDAExecutionProvider, missing here") as e:
        ort_providers("cuda", [trt, cpu])  # TensorRT's provider alone is not enough: it hands ops to CUDA's
    assert len(str(e.value).splitlines()) == 1 and "--runtime torch" in str(e.value)

    # an onnxruntime-gpu that lists CUDA but cannot start it falls back to the CPU: refused, not timed on the CPU
    class FallbackSession:
        def __init__(self, *a, **k) -> None:
            self.asked = k["providers"]

        def get_providers(self) -> list[str]:
            return [cpu]

    monkeypatch.setattr(ort, "get_available_providers", lambda: [cuda, cpu])
    monkeypatch.setattr(ort, "InferenceSession", FallbackSession)
    with pytest.raises(ConfigError, match="could not start its CUDA execution provider"):
        ort_session(b"onnx", threads=1, device="cuda")
    assert ort_session(b"onnx", threads=1).asked == [cpu]


def _config_entry(options, key: str) -> str | None:
    try:
        return options.get_session_config_entry(key)
    except RuntimeError:  # ONNX Runtime raises for a key that was never set
        return None


def test_ort_session_spin_policy(monkeypatch) -> None:
    """Interleaved timing parks a session's workers after each run; 'never' keeps the old no-spin protocol."""
    import onnxruntime as ort

    from slimcnn.measure._onnx import ort_session

    seen: list[dict[str, str]] = []

    class Session:
        def __init__(self, src, sess_options, providers) -> None:
            seen.append({k: _config_entry(sess_options, k)
                         for k in ("session.force_spinning_stop", "session.intra_op.allow_spinning")
                         if _config_entry(sess_options, k) is not None})

    monkeypatch.setattr(ort, "InferenceSession", Session)
    for spin in ("always", "in-run", "never"):
        ort_session(b"onnx", threads=2, spin=spin)
    assert seen == [{}, {"session.force_spinning_stop": "1"}, {"session.intra_op.allow_spinning": "0"}]
    with pytest.raises(ConfigError, match="spin must be"):
        ort_session(b"onnx", threads=2, spin=False)  # type: ignore[arg-type]  # the old boolean is refused
