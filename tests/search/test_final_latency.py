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
        return {"before": _stats(10.0), "after": _stats(8.5)}

    monkeypatch.setattr(slimcnn.measure, "compare_latency", fake_compare)
    spec = SearchSpec(amounts=(0.5,), limit=40, runtime="onnxruntime", threads=1)
    res = search(loaded.model, task, Budget.from_options(max_drop="100", latency="0.9x"), spec, progress=False)
    assert calls == [["before", "after"]]
    check = next(c for c in res.checks if c.name == "latency_ms")
    assert check.value == 8.5 and check.limit == pytest.approx(9.0) and check.met
    assert res.before["cost"].latency.median_ms == 10.0 and res.after["cost"].latency.median_ms == 8.5
