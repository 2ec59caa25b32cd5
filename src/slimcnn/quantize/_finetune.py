"""Optional centroid fine-tuning (Deep Compression §3.2); off by default (Tomè et al. do none).

The gradient of a centroid is the sum of the gradients of all weights that share it; pruned
weights stay exactly zero and indices never change, so the result still packs bit-identically.
"""

from __future__ import annotations

import logging

import torch

from slimcnn.quantize._model import QuantizeResult

log = logging.getLogger(__name__)


def _positions(q_mask: torch.Tensor | None, numel: int) -> torch.Tensor:
    if q_mask is None:
        return torch.arange(numel)
    return torch.nonzero(q_mask.reshape(-1), as_tuple=False).reshape(-1)


def finetune_centroids_(result: QuantizeResult, task: object, steps: int, *, lr: float = 1e-4) -> list[float]:
    """Train the codebooks of ``result`` in place for ``steps`` SGD steps on ``task``'s training data.

    Args:
        result: from :func:`~slimcnn.quantize.quantize_model`; its model and codebooks are updated.
        task: a :class:`~slimcnn.tasks.Task` (uses ``training_batches`` and ``loss``).
        steps: optimiser steps (0 does nothing).
        lr: SGD learning rate on the centroids.

    Returns:
        The training loss of each step.
    """
    if steps <= 0 or not result.layers:
        return []
    model = result.model
    modules = dict(model.named_modules())
    fp16 = result.spec.codebook_dtype == "fp16"
    losses: list[float] = []
    batches = task.training_batches(steps)  # type: ignore[attr-defined]
    was_training = model.training
    model.train()
    for batch in batches:
        model.zero_grad(set_to_none=True)
        loss = task.loss(model, batch)  # type: ignore[attr-defined]
        loss.backward()
        losses.append(float(loss.detach()))
        with torch.no_grad():
            for name, q in result.layers.items():
                grad = modules[name].weight.grad
                if grad is None:
                    continue
                g = grad.detach().reshape(-1).float().cpu()
                pos = _positions(q.mask, g.numel())
                book = q.codebook.clone()
                if book.dim() == 2:
                    per = g.numel() // book.shape[0]
                    flat = (pos // per) * book.shape[1] + q.indices
                    gb = torch.zeros(book.numel()).index_add_(0, flat, g[pos]).reshape(book.shape)
                else:
                    gb = torch.zeros(book.numel()).index_add_(0, q.indices, g[pos])
                book -= lr * gb
                q.codebook = book.half().float() if fp16 else book
                modules[name].weight.copy_(q.decode().to(modules[name].weight.device))
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    log.info("centroid fine-tuning: %d steps, loss %.4f -> %.4f", len(losses), losses[0], losses[-1])
    return losses
