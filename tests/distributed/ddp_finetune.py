"""Fine-tune tiny_cnn (BatchNorm, residual, concat) on digits; rank 0 saves the weights to ``argv[1]``.

Run alone (one process) or under ``python -m torch.distributed.run --nproc-per-node N`` (gloo on CPU):
the global batch is the same, so the weights must agree. The learning rate is small enough that the
run is not chaotic: at lr 0.05 this untrained net amplifies float rounding so much that even one
process on 1 vs 2 threads ends 5e-4 apart after 20 steps (measured), which would hide a real error.
"""

from __future__ import annotations

import copy
import sys
from typing import Any

import torch

from slimcnn.models import load_model
from slimcnn.tasks import make_task
from slimcnn.train import is_main

STEPS, BATCH, LR = 20, 32, 0.002


def finetune() -> dict[str, Any]:
    """Start and end weights, final loss and samples seen of the fine-tune."""
    loaded = load_model("slimcnn:tiny_cnn", seed=0)
    start = copy.deepcopy(loaded.model.state_dict())
    task = make_task("classification", "digits", info=loaded.info, batch_size=BATCH, seed=0)
    stats = task.finetune(loaded.model, STEPS, lr=LR, weight_decay=5e-4, progress=False)
    return {"start": start, "state": loaded.model.state_dict(), "loss": stats.final_loss,
            "samples": stats.samples_per_s * stats.seconds}


if __name__ == "__main__":
    torch.set_num_threads(1)
    out = finetune()
    if is_main():
        torch.save(out, sys.argv[1])
