"""Magnitude pruning masks: per layer at a percentile, or one global threshold."""

from __future__ import annotations

import numpy as np
import torch

from slimcnn.errors import ConfigError


def check_factor(factor: float) -> float:
    """Validate a pruning factor ``f >= 1`` (keep ``1/f`` of the weights)."""
    if not isinstance(factor, (int, float)) or isinstance(factor, bool) or not factor >= 1.0:
        raise ConfigError(f"a pruning factor must be a number >= 1 (keep 1/f of the weights), got {factor!r}")
    return float(factor)


def n_keep(numel: int, factor: float) -> int:
    """Weights kept by factor ``f``: ``numel - round(numel * (1 - 1/f))`` (the p-th percentile cut)."""
    return numel - int(round(numel * (1.0 - 1.0 / check_factor(factor))))


def magnitude_mask(weight: torch.Tensor, factor: float) -> torch.Tensor | None:
    """Keep the ``1/f`` largest-magnitude weights (zero those below percentile ``100(1 - 1/f)``).

    `Tomè et al. 2016 <https://arxiv.org/abs/1609.02500>`_: per layer, every weight with ``|w|``
    below the p-th percentile of the layer, ``p = 100 (1 - 1/f)``. Exactly :func:`n_keep` weights
    are kept; ties at the threshold are broken deterministically by position.

    Args:
        weight (Tensor[...]): the layer's weights.
        factor: pruning factor ``f >= 1``; ``1`` keeps everything.

    Returns:
        Tensor[bool, weight.shape] keep mask, or None when nothing is pruned.
    """
    keep = n_keep(weight.numel(), factor)
    if keep >= weight.numel():
        return None
    a = weight.detach().to("cpu", torch.float32).reshape(-1).abs().numpy()
    mask = np.zeros(a.size, dtype=bool)
    if keep > 0:
        mask[np.argpartition(-a, keep - 1, kind="introselect")[:keep]] = True
    return torch.from_numpy(mask).reshape(weight.shape)


def global_magnitude_masks(weights: dict[str, torch.Tensor], factor: float) -> dict[str, torch.Tensor | None]:
    """One magnitude threshold over all ``weights`` keeping ``1/f`` of them in total.

    Layers with larger weights keep more; ties at the threshold are all kept.
    """
    total = sum(w.numel() for w in weights.values())
    keep = n_keep(total, factor)
    if keep >= total or not weights:
        return {k: None for k in weights}
    allabs = np.concatenate([w.detach().to("cpu", torch.float32).reshape(-1).abs().numpy() for w in weights.values()])
    thr = float(np.partition(allabs, total - keep)[total - keep]) if keep > 0 else np.inf
    return {k: (w.detach().to("cpu", torch.float32).abs() >= thr) for k, w in weights.items()}
