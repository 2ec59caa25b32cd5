"""The sensitivity sweep sharded over torch.distributed ranks gives the points of one process."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from slimcnn.search.sensitivity import Knob, SensitivityTable

SCRIPT = Path(__file__).with_name("sweep_toy.py")
_spec = importlib.util.spec_from_file_location("sweep_toy", SCRIPT)
assert _spec is not None and _spec.loader is not None
toy = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(toy)


def _points(table: SensitivityTable) -> list[tuple[str, float, float, int]]:
    return [(p.knob, p.amount, p.metric, p.macs) for p in table.points]


def test_two_local_ranks_give_the_points_of_one_in_the_same_order(tmp_path: Path) -> None:
    one = toy.sweep(1)
    two = toy.sweep(2, resume=str(tmp_path / "sweep.json"))
    assert _points(two) == _points(one)
    assert len(one.points) == 15 and len({p.metric for p in one.points}) > 5
    assert two.conditions["workers"] == 2 and one.conditions["workers"] == 1
    assert _points(SensitivityTable.load(tmp_path / "sweep.json")) == _points(one)  # rank 0 saved it


def test_torchrun_two_ranks_give_the_points_of_one(tmp_path: Path) -> None:
    out = tmp_path / "sweep.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", str(SCRIPT), str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert _points(SensitivityTable.load(out)) == _points(toy.sweep(1))


def test_an_error_on_one_rank_is_raised_not_a_hang() -> None:
    knobs = [Knob("0", (0.5,)), Knob("2", (2.0,)), Knob("4", (0.5,))]  # rank 1 gets the bad amount
    with pytest.raises(ValueError, match="amount 2.0 of knob 2"):
        toy.sweep(2, knobs=knobs)
