"""The final latency check times the original and the chosen model interleaved, in one run."""

from __future__ import annotations

from typing import Any

import pytest
import torch

import slimcnn.measure
from slimcnn.models import load_model
from slimcnn.search import Budget, SearchSpec, search
from slimcnn.tasks import make_task
from slimcnn.types import LatencyStats


def _stats(ms: float) -> LatencyStats:
    return LatencyStats(ms, ms, ms, 50, "onnxruntime", 1, "cpu", 1, (1, 1, 8, 8))


def test_latency_check_uses_one_interleaved_run(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    loaded = load_model("slimcnn:lenet5")
    task = make_task("classification", "digits", info=loaded.info, batch_size=32)
    calls: list[list[str]] = []

    def fake_compare(models: dict[str, Any], *args: Any, **kwargs: Any) -> dict[str, LatencyStats]:
        calls.append(list(models))
        if "point" in models:  # each measured point: timed with the original (test below)
            return {"original": _stats(10.0), "point": _stats(9.0)}
        return {"before": _stats(10.0), "after": _stats(8.5)}

    monkeypatch.setattr(slimcnn.measure, "compare_latency", fake_compare)
    spec = SearchSpec(amounts=(0.5,), limit=40, runtime="onnxruntime", threads=1)
    res = search(loaded.model, task, Budget.from_options(max_drop="100", latency="0.9x"), spec, progress=False)
    assert calls[-1] == ["before", "after"] and all(c == ["original", "point"] for c in calls[:-1])
    check = next(c for c in res.checks if c.name == "latency_ms")
    assert check.value == 8.5 and check.limit == pytest.approx(9.0) and check.met
    assert res.before["cost"].latency.median_ms == 10.0 and res.after["cost"].latency.median_ms == 8.5


def test_each_point_is_timed_with_the_original_and_scaled_to_the_baseline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under load the machine is 2x slower when the points are timed than when the baseline was: the point's
    ratio to the original (0.5x) is what its check sees, not its raw time (which alone would equal the baseline)."""
    torch.manual_seed(0)
    loaded = load_model("slimcnn:lenet5")
    task = make_task("classification", "digits", info=loaded.info, batch_size=32)
    monkeypatch.setattr(slimcnn.measure, "measure_latency", lambda *a, **k: _stats(4.0))  # the baseline, idle
    monkeypatch.setattr(slimcnn.measure, "compare_latency",
                        lambda models, *a, **k: {"original": _stats(8.0), "point": _stats(4.0)} if "point" in models
                        else {"before": _stats(4.0), "after": _stats(2.0)})
    spec = SearchSpec(amounts=(0.5,), limit=40, runtime="onnxruntime", threads=1, max_evaluations=2)
    res = search(loaded.model, task, Budget.from_options(max_drop="100", latency="0.6x"), spec, progress=False)
    assert res.tried and all(p["costs"]["latency_ms"] == pytest.approx(2.0) for p in res.tried)
