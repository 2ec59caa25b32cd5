"""The iterative strategy (Pavlitska et al.) end to end on a small trained LeNet-5 and built-in digits."""

from __future__ import annotations

import pytest
import torch

from slimcnn.errors import ConfigError
from slimcnn.measure import profile
from slimcnn.models import load_model
from slimcnn.search import Budget, SearchSpec, search
from slimcnn.tasks import make_task

ROW_FIELDS = {"iteration", "selected", "params", "macs", "latency_ms", "latency_ratio", "metric_before_ft",
              "metric_after_ft"}


@pytest.fixture(scope="module")
def result():  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    loaded = load_model("slimcnn:lenet5")
    task = make_task("classification", "digits", info=loaded.info)
    task.finetune(loaded.model, 60, lr=0.05, batch_size=64, progress=False)
    spec = SearchSpec(strategy="iterative", iterations=2, finetune_steps=10, finetune={"lr": 0.01}, limit=120,
                      runtime="torch", params_layers=2, flops_layers=2)
    res = search(loaded.model, task, Budget.from_options(max_drop="50"), spec, progress=False)
    return loaded, task, res


def test_table_has_one_row_per_iteration_with_every_field(result) -> None:  # type: ignore[no-untyped-def]
    _, _, res = result
    rows = res.strategy_log["iterations"]
    assert [r["iteration"] for r in rows] == [1, 2]
    for row in rows:
        assert ROW_FIELDS <= row.keys()
        assert row["selected"] and all(0 < s["rate"] < 1 and s["reason"] in ("params", "flops", "both")
                                       for s in row["selected"])
        assert 0.0 <= row["metric_before_ft"] <= 100.0 and 0.0 <= row["metric_after_ft"] <= 100.0
        assert row["latency_ms"] is not None and row["latency_ms"] > 0 and row["latency_ratio"] > 0
    assert len(res.strategy_log["plans"]) == 2 and len(res.tried) == 2


def test_params_and_macs_fall_every_iteration(result) -> None:  # type: ignore[no-untyped-def]
    loaded, task, res = result
    rows = res.strategy_log["iterations"]
    base = res.before["cost"]
    assert base.params > rows[0]["params"] > rows[1]["params"]
    assert base.macs > rows[0]["macs"] > rows[1]["macs"]
    # The final model is the last iteration's model, recounted independently.
    final = profile(res.model, task.example_input())
    assert (final.params, final.macs) == (rows[-1]["params"], rows[-1]["macs"])
    assert res.after["cost"].params == rows[-1]["params"]
    # The input model is untouched.
    assert profile(loaded.model, task.example_input()).params == base.params


def test_metric_option_is_detection_only() -> None:
    with pytest.raises(ConfigError, match="detection"):
        make_task("classification", "digits", metric="map50")
