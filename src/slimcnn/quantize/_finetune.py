"""Optional centroid fine-tuning (Deep Compression §3.2); off by default (Tomè et al. do none).

The gradient of a centroid is the sum of the gradients of all weights that share it; pruned
weights stay exactly zero and indices never change, so the result still packs bit-identically.
It is the same mechanism every fine-tune of a k-means layer uses (:class:`slimcnn.train.SharedWeight`
registered by :func:`slimcnn.train.hold_weights`), trained by the shared loop :func:`slimcnn.train.fit_`.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from slimcnn.quantize._model import QuantizeResult

log = logging.getLogger(__name__)


def finetune_centroids_(result: QuantizeResult, task: object, steps: int, *, lr: float = 1e-4) -> list[float]:
    """Train the codebooks of ``result`` in place for ``steps`` SGD steps on ``task``'s training data.

    Only the centroids train (plain SGD, constant ``lr``, no momentum); every other parameter is
    frozen. With ``codebook_dtype="fp16"`` the forward uses the centroids rounded to fp16 and the
    stored codebooks are the rounded values.

    Args:
        result: from :func:`~slimcnn.quantize.quantize_model`; its model and codebooks are updated.
        task: a :class:`~slimcnn.tasks.Task` (uses ``training_batches`` and ``loss``).
        steps: optimiser steps (0 does nothing).
        lr: SGD learning rate on the centroids.

    Returns:
        The training loss of each step.
    """
    from slimcnn.train import SharedWeight, fit_, hold_weights

    if steps <= 0 or not result.layers:
        return []
    model = result.model
    fp16 = result.spec.codebook_dtype == "fp16"
    device = next(model.parameters()).device
    shared: dict[str, SharedWeight] = {
        name: SharedWeight(q.codebook, q.indices, q.mask, q.shape, fp16=fp16).to(device)
        for name, q in result.layers.items()
    }
    losses: list[float] = []

    def loss_fn(m: nn.Module, batch: Any) -> torch.Tensor:
        loss: torch.Tensor = task.loss(m, batch)  # type: ignore[attr-defined]
        losses.append(float(loss.detach()))
        return loss

    was_training = model.training
    with hold_weights(model, dict(shared)):
        fit_(model, task.training_batches(steps), loss_fn, steps=steps, optimizer="sgd", lr=lr,  # type: ignore[attr-defined]
             momentum=0.0, schedule="constant", progress=False, device=str(device),
             params=[s.codebook for s in shared.values()])
        with torch.no_grad():
            for name, s in shared.items():
                result.layers[name].codebook = s.book().detach().cpu().clone()
    model.train(was_training)
    log.info("centroid fine-tuning: %d steps, loss %.4f -> %.4f", len(losses), losses[0], losses[-1])
    return losses
