"""CPO's probes and the iterative rounds' sweeps sharded over local gloo ranks (``--workers 2``) give the search
of one process: the same steps, points and final model; the trial log rank 0 writes resumes either."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import torch

from slimcnn.models import load_model
from slimcnn.search import Budget, SearchSpec, search
from slimcnn.search.prune_oracle import PruneOracle
from slimcnn.tasks import make_task

SPECS = {
    "cpo": SearchSpec(strategy="cpo", criterion="l1", finetune_steps=2, limit=60, finetune={"batch_size": 32}),
    "cpo-accumulate": SearchSpec(strategy="cpo", criterion="l1", finetune_steps=2, limit=60, accumulate=True,
                                 finetune={"batch_size": 32}),
    "iterative": SearchSpec(strategy="iterative", iterations=2, finetune_steps=2, limit=60, params_layers=1,
                            flops_layers=1, amounts=(0.25, 0.5), finetune={"batch_size": 32}),
}


@pytest.fixture(scope="module")
def lenet() -> Any:
    torch.manual_seed(0)
    return load_model("slimcnn:lenet5")


def _search(lenet: Any, name: str, workers: int, trials: Path | None = None) -> Any:
    task = make_task("classification", "digits", info=lenet.info)
    spec = dataclasses.replace(SPECS[name], workers=workers)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as every local rank computes: the same float sums
    try:
        return search(lenet.model, task, Budget.from_options(max_drop="100"), spec, progress=False,
                      trials=str(trials) if trials is not None else None)
    finally:
        torch.set_num_threads(threads)


def _same(a: Any, b: Any) -> None:
    assert a.assignment == b.assignment
    assert a.strategy_log == b.strategy_log
    assert [(p["prefix"], p["assignment"], p["metric"]) for p in a.tried] == \
        [(p["prefix"], p["assignment"], p["metric"]) for p in b.tried]
    wa, wb = a.model.state_dict(), b.model.state_dict()
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.mark.parametrize("name", list(SPECS))
def test_two_local_ranks_search_like_one_process(lenet: Any, name: str, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    one = _search(lenet, name, 1)
    sharded: list[int] = []
    real = PruneOracle._measure_sharded

    def spy(self: PruneOracle, trials: Any, todo: list[int], ranks: int) -> Any:
        sharded.append(ranks)
        return real(self, trials, todo, ranks)

    monkeypatch.setattr(PruneOracle, "_measure_sharded", spy)
    log = tmp_path / "search-trials.pt"
    two = _search(lenet, name, 2, log)
    _same(two, one)
    if name.startswith("cpo"):
        probes = [s for s in one.strategy_log["steps"] if s["action"] == "probe"]
        assert len(probes) >= 2 and sharded == [2]  # LeNet-5's two convolutions: one probe per rank
    again = _search(lenet, name, 1, log)  # rank 0's log answers every trial, on any number of ranks
    _same(again, one)
