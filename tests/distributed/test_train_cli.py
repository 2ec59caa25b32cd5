"""``slimcnn train`` under torchrun: two gloo ranks fine-tune, rank 0 alone writes the run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from slimcnn.errors import ConfigError


@pytest.mark.slow
def test_train_under_torchrun_writes_one_run(tmp_path: Path) -> None:
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m", "slimcnn",
           "train", "slimcnn:lenet5", "--task", "classification", "--data", "digits", "--steps", "6",
           "--batch-size", "32", "--lr", "0.05", "--limit", "64", "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((out / "result.json").read_text())
    assert result["details"]["train"]["steps"] == 6
    assert (out / "model.pt").is_file()
    assert done.stdout.count("trained 6 steps") == 1  # rank 1 prints nothing


def test_bad_amp_is_one_line() -> None:
    from slimcnn.cli.train import train_cmd

    with pytest.raises(ConfigError, match="--amp must be bf16 or fp16"):
        train_cmd("slimcnn:lenet5", task="classification", data="digits", steps=1, out="x", train_data=None, weights=None,
                  arch=None, scale=None, lr=None, optimizer=None, batch_size=None, warmup_steps=None, schedule=None,
                  checkpoint_every=0, limit=None, device="cpu", amp="fp8", channels_last=False, seed=0, force=False,
                  resume=False, as_json=False)
