"""Functional core of k-means weight sharing: a tensor in, a codebook and indices out.

Zeros removed by pruning are *not* clustered: they stay exact zeros through the ``mask`` and the
indices only cover the kept weights, in flat (row-major) order.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from numpy.typing import NDArray

from slimcnn.errors import ConfigError, DataError
from slimcnn.quantize import _kmeans1d as k1

log = logging.getLogger(__name__)

Method = Literal["exact", "lloyd"]
METHODS: tuple[str, ...] = ("exact", "lloyd")
MAX_BITS = 16

DEFAULT_MAX_EXACT_WORK = 5_000_000
"""Largest exact problem solved exactly, in microseconds of estimated work; above it the binned fallback runs.

Measured on one idle core: kmeans1d ~0.25 us per DP cell (``values x k``), the own weighted
DP ~1 us per cell (``unique values x k``). So one exact solve is capped at ~5 s; this keeps
AlexNet's conv1 (34,848 x 512) exact and sends conv2-conv5 at 8 bits to the fallback."""
_KMEANS1D_US_PER_CELL = 0.25
_DP_US_PER_CELL = 1.0
DEFAULT_FALLBACK_BINS = 4096


@dataclass(frozen=True)
class KMeansFit:
    """A k-means codebook for one tensor and how it was found.

    Attributes are tensors on CPU: ``codebook`` is ``Tensor[K]`` (per layer) or ``Tensor[out, K]``
    (per output channel, rows padded by repeating their last centroid); ``indices`` is
    ``Tensor[n_kept]`` (int64) in flat order of the kept weights.
    """

    codebook: torch.Tensor
    indices: torch.Tensor
    solver: str
    """``copy`` (fewer distinct values than centroids: exact reproduction), ``two_means``,
    ``dp`` (own weighted DP on unique values), ``kmeans1d`` (exact DP on raw values),
    ``binned_dp+lloyd`` (large-layer fallback, not guaranteed optimal) or ``lloyd``."""
    objective: float
    """Sum of squared errors of the kept weights (float64)."""


def check_bits(bits: int) -> int:
    """Validate a bit width (1..16) and return it."""
    if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= MAX_BITS:
        raise ConfigError(f"bits must be an integer in [1, {MAX_BITS}], got {bits!r}")
    return bits


def solve_1d(
    values: NDArray[np.floating],
    k: int,
    *,
    method: Method = "exact",
    max_exact_work: int = DEFAULT_MAX_EXACT_WORK,
    fallback_bins: int = DEFAULT_FALLBACK_BINS,
) -> tuple[NDArray[np.float64], str]:
    """Cluster 1-D ``values`` into at most ``k`` centroids; returns (sorted centroids, solver name).

    ``method="exact"`` is globally optimal (the optimal 1-D DP) unless the problem exceeds
    ``max_exact_work`` DP cells, in which case the data is collapsed to at most ``2*fallback_bins``
    weighted runs, solved exactly there, and polished by Lloyd on the full data (within ~0.01 % of
    the optimum on weight-like data; logged and reported as ``binned_dp+lloyd``).
    ``method="lloyd"`` is Deep Compression: linear initialisation, Lloyd to convergence.
    """
    if method not in METHODS:
        raise ConfigError(f"method must be one of {list(METHODS)}, got {method!r}")
    raw = np.asarray(values).ravel()
    x32, cnt = np.unique(raw, return_counts=True)  # sort in the input dtype (float32: fast)
    x = x32.astype(np.float64)
    w = cnt.astype(np.float64)
    v = raw.astype(np.float64)
    if x.size <= k:
        return x, "copy"
    if method == "lloyd":
        return k1.lloyd_sorted(x, w, k1.linear_init(x, k)), "lloyd"
    if k == 2:
        return k1.two_means_exact(x, w), "two_means"
    raw_cost = _KMEANS1D_US_PER_CELL * v.size * k  # kmeans1d on the raw values
    dp_cost = _DP_US_PER_CELL * x.size * k  # own vectorised weighted DP on unique values
    if min(raw_cost, dp_cost) <= max_exact_work:
        if dp_cost <= raw_cost:
            return k1.dp_exact(x, w, k), "dp"
        import kmeans1d  # lazy: only needed for big exact problems

        _, cents = kmeans1d.cluster(v, k)
        return np.sort(np.asarray(cents, dtype=np.float64)), "kmeans1d"
    log.info("k-means on %d values (k=%d) exceeds max_exact_work; binned exact DP + Lloyd polish", v.size, k)
    bm, bw = k1.binned(x, w, fallback_bins)
    init = k1.dp_exact(bm, bw, k) if bm.size > k else bm
    return k1.lloyd_sorted(x, w, init, max_iter=100_000), "binned_dp+lloyd"


def fit_kmeans(
    weight: torch.Tensor,
    bits: int,
    *,
    per_channel: bool = False,
    method: Method = "exact",
    mask: torch.Tensor | None = None,
    seed: int = 0,
    max_exact_work: int = DEFAULT_MAX_EXACT_WORK,
    fallback_bins: int = DEFAULT_FALLBACK_BINS,
) -> KMeansFit:
    """Like :func:`kmeans_codebook` but also reports the solver used and the objective."""
    check_bits(bits)
    del seed  # every built-in solver is deterministic; kept for a stable signature
    w = weight.detach().to("cpu", torch.float32)
    if mask is not None and tuple(mask.shape) != tuple(w.shape):
        raise ConfigError(f"mask shape {tuple(mask.shape)} does not match weight shape {tuple(w.shape)}")
    flat = w.reshape(-1).numpy()
    if not np.all(np.isfinite(flat)):
        raise DataError("weight contains NaN or Inf; k-means needs finite values")
    keep = np.ones(flat.size, dtype=bool) if mask is None else mask.detach().cpu().reshape(-1).numpy().astype(bool)
    k = 2**bits
    groups = w.shape[0] if (per_channel and w.dim() > 1) else 1
    per = flat.size // groups
    books: list[NDArray[np.float64]] = []
    idx_parts: list[NDArray[np.int64]] = []
    solvers: set[str] = set()
    sse = 0.0
    for g in range(groups):
        vals = flat[g * per : (g + 1) * per][keep[g * per : (g + 1) * per]]
        if vals.size == 0:
            books.append(np.zeros(1))
            continue
        cents, solver = solve_1d(
            vals, k, method=method, max_exact_work=max_exact_work, fallback_bins=fallback_bins
        )
        cents32 = np.unique(cents.astype(np.float32)).astype(np.float64)  # codebook is stored as float32
        idx = k1.nearest(vals.astype(np.float64), cents32)
        d = vals.astype(np.float64) - cents32[idx]
        sse += float(np.dot(d, d))
        books.append(cents32)
        idx_parts.append(idx)
        solvers.add(solver)
    width = max(b.size for b in books)
    book = np.stack([np.concatenate([b, np.full(width - b.size, b[-1])]) for b in books])
    codebook = torch.from_numpy(book.astype(np.float32))
    if groups == 1:
        codebook = codebook[0]
    indices = torch.from_numpy(np.concatenate(idx_parts) if idx_parts else np.zeros(0, dtype=np.int64))
    return KMeansFit(codebook, indices, "+".join(sorted(solvers)) or "empty", sse)


def kmeans_codebook(
    weight: torch.Tensor,
    bits: int,
    *,
    per_channel: bool = False,
    method: Method = "exact",
    mask: torch.Tensor | None = None,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Share weights through ``2**bits`` centroids found by 1-D k-means.

    Per layer (one codebook) as in `Tomè et al. 2016 <https://arxiv.org/abs/1609.02500>`_ or per
    output channel. ``method="exact"`` solves 1-D k-means optimally (dynamic programming on the
    sorted unique values with multiplicities); ``"lloyd"`` is `Deep Compression
    <https://arxiv.org/abs/1510.00149>`_'s linearly initialised Lloyd. With ``2**bits`` at least
    the number of distinct kept values the layer is reproduced exactly.

    Args:
        weight (Tensor[out, ...]): the weights to share.
        bits: index width, 1..16 (``2**bits`` centroids).
        per_channel: one codebook per output channel (dim 0).
        method: ``"exact"`` or ``"lloyd"``.
        mask (Tensor[bool, same shape] | None): kept weights; ``False`` entries are pruned zeros,
            not clustered and not indexed.
        seed: reserved for randomised solvers (the built-in ones are deterministic).

    Returns:
        ``(codebook, indices)``: ``Tensor[K]`` or ``Tensor[out, K]`` float32 centroids
        (``K <= 2**bits``) and ``Tensor[n_kept]`` int64 indices in flat order of kept weights.

    Raises:
        ConfigError: bad ``bits``/``method`` or a mask of the wrong shape.
        DataError: non-finite weights.

    Example:
        >>> book, idx = kmeans_codebook(torch.randn(8, 4), bits=2)
        >>> dequantize(book, idx, None, (8, 4)).unique().numel() <= 4
        True
    """
    fit = fit_kmeans(weight, bits, per_channel=per_channel, method=method, mask=mask, seed=seed)
    return fit.codebook, fit.indices


def dequantize(
    codebook: torch.Tensor, indices: torch.Tensor, mask: torch.Tensor | None, shape: tuple[int, ...] | torch.Size
) -> torch.Tensor:
    """Rebuild a dense float32 weight from a codebook, indices and an optional keep mask.

    Args:
        codebook (Tensor[K] | Tensor[out, K]): centroids (per layer or per output channel).
        indices (Tensor[n_kept]): centroid index of each kept weight, flat order.
        mask (Tensor[bool, shape] | None): kept positions; ``None`` means all.
        shape: the weight's shape.

    Returns:
        Tensor[shape] float32 with pruned positions exactly zero.
    """
    shape = tuple(int(s) for s in shape)
    numel = int(np.prod(shape)) if shape else 1
    out = torch.zeros(numel, dtype=torch.float32)
    book = codebook.to(torch.float32)
    idx = indices.to(torch.int64)
    pos = torch.arange(numel) if mask is None else torch.nonzero(mask.reshape(-1), as_tuple=False).reshape(-1)
    if pos.numel() != idx.numel():
        raise DataError(f"{idx.numel()} indices for {pos.numel()} kept weights; codebook data is inconsistent")
    if book.dim() == 2:
        per = numel // book.shape[0]
        out[pos] = book[pos // per, idx]
    else:
        out[pos] = book[idx]
    return out.reshape(shape)
