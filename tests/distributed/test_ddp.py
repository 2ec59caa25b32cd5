"""torchrun with 2 gloo ranks on CPU fine-tunes exactly like one process with the same global batch."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).with_name("ddp_finetune.py")


def _torchrun(out: Path, ranks: int) -> dict:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={ranks}", str(SCRIPT), str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return torch.load(out, weights_only=True)


def test_two_gloo_ranks_equal_one_process_after_20_steps(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("ddp_finetune", SCRIPT)
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    one = script.finetune()  # this process: no process group
    two = _torchrun(tmp_path / "two.pt", 2)
    assert one["state"].keys() == two["state"].keys()
    worst = max(float((one["state"][k].double() - two["state"][k].double()).abs().max()) for k in one["state"])
    assert worst < 1e-5, f"largest weight/buffer difference {worst:g}"
    assert abs(one["loss"] - two["loss"]) < 1e-5
    assert round(one["samples"]) == round(two["samples"]) == 20 * 32  # both saw the global batch
    moved = max(float((one["state"][k].double() - one["start"][k].double()).abs().max()) for k in one["state"])
    assert moved > 100 * worst and moved > 1e-3, "the runs trained (equality is not two untouched models)"
    assert int(two["state"]["stem_bn.num_batches_tracked"]) == 20


def test_batch_that_does_not_split_evenly_is_one_line() -> None:
    from slimcnn.errors import ConfigError
    from slimcnn.train import local_part

    with pytest.raises(ConfigError, match="multiple of 4"):
        local_part((torch.zeros(30, 3), torch.zeros(30)), 0, 4)
    x, y = local_part((torch.arange(32), [str(i) for i in range(32)]), 1, 2)
    assert x.tolist() == list(range(16, 32)) and y[0] == "16"
