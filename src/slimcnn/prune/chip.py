"""CHIP channel independence, computed exactly and fast.

`CHIP: CHannel Independence-based Pruning for Compact Neural Networks
<https://arxiv.org/abs/2110.13981>`_ (Sui et al., NeurIPS 2021) scores channel ``i`` of a layer
by how much the nuclear norm of the layer's feature-map matrix drops when that channel is
zeroed, averaged over images:

.. math::

    A_n = \\mathrm{features}[n].\\mathrm{reshape}(C, HW), \\qquad
    CI(i) = \\frac{1}{N} \\sum_n \\left(\\|A_n\\|_* - \\|M_i \\odot A_n\\|_*\\right),

where ``M_i`` zeroes row ``i``. The official code evaluates this with one SVD per
(image, channel), i.e. ``C + 1`` SVDs of a ``C x HW`` matrix per image. This module computes the
same numbers from **one** symmetric ``C x C`` eigendecomposition per image.

Math (method ``"secular"``)
---------------------------
Let ``G = A A^T = Q diag(lam) Q^T`` (float64) and ``W[i, j] = Q[i, j]^2``. Then

* ``||A||_* = sum_j sqrt(lam_j)``, and zeroing row ``i`` of ``A`` zeroes row and column ``i``
  of ``G``, so ``||A_{-i}||_* = sum_k sqrt(mu_k)`` over the eigenvalues ``mu`` of the principal
  submatrix ``G_{-i}`` (row and column ``i`` deleted).
* By Cramer's rule, ``h_i(t) := [(G + tI)^{-1}]_{ii} = sum_j W[i, j] / (lam_j + t)
  = det(G_{-i} + tI) / det(G + tI)``. This is the secular function whose zeros (at
  ``t = -mu_k``) interlace its poles (at ``t = -lam_j``).
* With ``sqrt(x) = (2/pi) int_0^inf x / (x + s^2) ds`` and
  ``sum_j x_j/(x_j+t) = dim - t * d/dt log det(X + tI)``, the difference of the two nuclear norms
  becomes an integral of the log-derivative of ``h_i``; after simplification::

      CI_n(i) = (2/pi) int_0^inf  N_i(s^2) / D_i(s^2)  ds,
      N_i(t) = sum_j W[i, j] lam_j / (lam_j + t)^2,   D_i(t) = sum_j W[i, j] / (lam_j + t).

  ``N`` and ``D`` are sums of non-negative terms (no cancellation, unlike ``||A|| - ||A_{-i}||``),
  and for a grid of ``s`` they are one matrix product ``W @ [R1 | R2]`` for all channels at once.
  Deflation (``W[i, j] = 0``), repeated eigenvalues and zero eigenvalues (``HW < C``) need no
  special handling: no roots are located.
* The integrand is analytic in ``u = log s`` on the strip ``|Im u| < pi/2`` (the poles and zeros
  of ``h_i`` are on the negative real ``t`` axis), so the trapezoidal rule in ``u`` with step
  ``_STEP`` has error ``~exp(-pi^2 / _STEP)`` (~4e-11) **if it runs over the whole line**. The grid
  only needs to cover the spectrum, per image: from ``_TAIL_LO * sqrt(lam_min+)`` (smallest
  eigenvalue above round-off) to ``_TAIL_HI * sqrt(lam_max)``; beyond both ends the integrand
  ``g(u) = s * N/D`` follows a short series, and the infinite rest of the trapezoid sum is summed
  in closed form (geometric series) instead of being evaluated:

  - above: ``N/D = c1/s^2 + c2/s^4 + c3/s^6 + O(s^-8)`` with ``c1 = m1``, ``c2 = m1^2 - 2 m2``,
    ``c3 = m1^3 - 3 m1 m2 + 3 m3`` and ``m_k = (G^k)_ii`` (expand ``N`` and ``D`` in ``1/t``);
    truncation error ``~_TAIL_HI^-7``;
  - below: ``g = p e^u + q e^{3u} + O(e^{5u})`` (``N/D -> 1`` when every eigenvalue is positive,
    ``N/D ~ t`` when ``G`` is singular and channel ``i`` touches its null space); ``p`` and ``q`` are
    fitted on the first two nodes; error ``~_TAIL_LO^5``.

  This needs ~45-60 nodes on real 64-channel layers instead of a fixed 96 (the previous grid
  spanned ``[1e-9, 1e8] * sqrt(lam_max)`` because a truncated trapezoid is only as good as the
  decay at its ends); the measured error is unchanged (~1e-10 of ``||A||_*``, see
  ``tests/prune/test_chip.py`` and ``benchmarks/results/chip_speed.md``).

Cost per image: one ``C x C`` ``eigh`` plus ``O(C^2 * nodes)`` for the products, against
``C + 1`` SVDs of ``C x HW`` for the direct formula.

Method ``"gram"`` batches ``eigvalsh`` over all ``C`` principal submatrices ``G_{-i}``
(``O(C^4)`` per image; exact to rounding). Method ``"direct"`` is the reference: the definition,
with one batched ``svdvals`` over the ``C`` masked copies of ``A`` per image, in float64.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Literal

import torch
from torch import Tensor

from slimcnn.errors import ConfigError

__all__ = ["ChipMethod", "chip_scores", "CHIP_METHODS"]

ChipMethod = Literal["auto", "gram", "secular", "direct"]
CHIP_METHODS: tuple[str, ...] = ("auto", "gram", "secular", "direct")

_STEP = 0.41
"""Trapezoid step in ``u = log s``; the error is ``~exp(-pi^2 / _STEP)`` = 4e-11 (0.45 measured 3e-10)."""
_TAIL_LO = 5e-3
"""Grid start relative to ``sqrt`` of the smallest positive eigenvalue (lower-tail fit error ~1e-12)."""
_TAIL_HI = 50.0
"""Grid end relative to ``sqrt(lam_max)`` (upper-tail series error ~1e-12)."""
_NODES_ESTIMATE = 64
"""Typical grid length, used only to size chunks (the grid adapts to each chunk's spectra)."""
_SINGLE_THREAD_MAX_C = 128
"""Up to this many channels, CPU work runs single-threaded (see ``_small_problem_threads``)."""
_CHUNK_ELEMENTS = 1 << 19
"""Largest float64 work tensor (elements, 4 MiB) a chunk may create when ``batch_size`` is None.

Small chunks stay cache-resident and avoid page-faulting large fresh allocations; measured faster
than one big batch on the benchmark machine."""


def chip_scores(
    features: Tensor,
    *,
    round_decimals: int | None = None,
    method: ChipMethod = "auto",
    batch_size: int | None = None,
) -> Tensor:
    """Mean CHIP channel independence of a layer's feature maps (lowest = least important).

    Implements the criterion of `Sui et al., CHIP (NeurIPS 2021)
    <https://arxiv.org/abs/2110.13981>`_: for each image ``n``,
    ``A_n = features[n].reshape(C, H*W)`` and ``CI_n(i) = ||A_n||_* - ||A_n with row i zeroed||_*``;
    the result is the mean of ``CI_n`` over ``n``, accumulated in float64. All methods agree to
    ~1e-8 of the per-image nuclear norm (the derivation is in the module docstring).

    Args:
        features (Tensor[N, C, H, W]): Feature maps of one layer for ``N`` images, usually
            post-ReLU activations. Any floating dtype and device; computed in float64.
        round_decimals: If set, round the features to this many decimals first, as the official
            code does (``np.round(x, 4)``; pass ``4`` to reproduce it). Default ``None`` computes
            the paper's formula on the unrounded features: rounding is an artifact of the
            reference implementation, not part of the criterion.
        method: ``"secular"`` (one ``eigh`` per image plus an integral of the secular function;
            fastest on every shape we benchmarked), ``"gram"`` (batched ``eigvalsh`` of the
            ``C`` principal submatrices of ``A A^T``), ``"direct"`` (the definition: ``svdvals``
            of the ``C`` masked copies; slow, the reference) or ``"auto"`` (currently
            ``"secular"``; see ``benchmarks/results/chip_speed.md``).
        batch_size: Images processed per chunk. ``None`` picks the largest chunk whose biggest
            float64 work tensor stays under 4 MiB. Changes the result only within the method's
            accuracy (``"secular"`` adapts its grid to each chunk).

    Returns:
        Tensor[C]: float64 mean channel independence on ``features.device``.

    Raises:
        ConfigError: ``features`` is not a 4-D floating tensor with ``N, C, H*W >= 1``, contains
            NaN/Inf, or ``method``/``round_decimals``/``batch_size`` is invalid.

    Example:
        >>> feats = torch.relu(torch.randn(8, 16, 8, 8))
        >>> ci = chip_scores(feats)
        >>> keep = ci.argsort(descending=True)[:12]  # prune the 4 lowest-CI channels
    """
    x = _validate(features, round_decimals, method, batch_size)
    n, c, length = x.shape
    if method == "auto":
        method = "secular"
    per_image = (
        c * length
        + {
            "secular": c * c + c * (2 * _NODES_ESTIMATE + 2),
            "gram": c * c * c,
            "direct": c * c * length,
        }[method]
    )
    chunk = batch_size if batch_size is not None else max(1, _CHUNK_ELEMENTS // max(per_image, 1))
    ci_of = {"secular": _ci_secular, "gram": _ci_gram, "direct": _ci_direct}[method]

    def chunk_sum(start: int) -> Tensor:
        block = x[start : start + chunk].to(torch.float64)
        if method == "direct" and not bool(torch.isfinite(block).all()):
            raise ConfigError(_NOT_FINITE)
        if round_decimals is not None:
            block = torch.round(block, decimals=round_decimals)
        return ci_of(block).sum(0)

    starts = range(0, n, chunk)
    total = torch.zeros(c, dtype=torch.float64, device=x.device)
    with _small_problem_threads(x.device, c) as workers:
        if workers > 1 and len(starts) > 1:
            # Chunks are independent and torch releases the GIL inside each op: the cores work on
            # different chunks (one thread each) instead of sharing every small eigh.
            with ThreadPoolExecutor(min(workers, len(starts))) as pool:
                sums = list(pool.map(chunk_sum, starts))
        else:
            sums = [chunk_sum(start) for start in starts]
    for part in sums:  # in chunk order: the same rounding for any number of workers
        total += part
    return total / n


def _validate(features: Tensor, round_decimals: int | None, method: str, batch_size: int | None) -> Tensor:
    """Check the arguments and return ``features`` as ``Tensor[N, C, H*W]`` (dtype unchanged)."""
    if not isinstance(features, Tensor):
        raise ConfigError(f"chip_scores expects a torch.Tensor[N, C, H, W]; got {type(features).__name__}.")
    if features.ndim != 4:
        raise ConfigError(
            f"chip_scores expects features of shape [N, C, H, W]; got {features.ndim}-D shape "
            f"{tuple(features.shape)}. Reshape vectors to [N, C, 1, 1] or stack images on dim 0."
        )
    if not features.is_floating_point():
        raise ConfigError(
            f"chip_scores expects a floating-point tensor; got dtype {features.dtype}. Call .float()."
        )
    n, c, h, w = features.shape
    if n < 1 or c < 1 or h * w < 1:
        raise ConfigError(
            f"chip_scores needs N >= 1 images, C >= 1 channels and H*W >= 1; got shape {tuple(features.shape)}."
        )
    if method not in CHIP_METHODS:
        raise ConfigError(f"Unknown CHIP method {method!r}; expected one of {list(CHIP_METHODS)}.")
    if round_decimals is not None and (
        isinstance(round_decimals, bool) or not isinstance(round_decimals, int)
    ):
        raise ConfigError(
            f"round_decimals must be an int (4 reproduces the official code) or None; got {round_decimals!r}."
        )
    if batch_size is not None and (
        isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
    ):
        raise ConfigError(f"batch_size must be a positive int or None (automatic); got {batch_size!r}.")
    return features.reshape(n, c, h * w)


@contextmanager
def _small_problem_threads(device: torch.device, channels: int) -> Iterator[int]:
    """Run each chunk single-threaded on CPU when the per-image matrices are small; yield how many
    chunks may run at once.

    Torch loops over a batch of small matrices and lets MKL/OpenMP thread *inside* each one (and
    inside each small elementwise op), so a ``64x64`` ``eigh`` spends its time in barriers: on the
    shared 2-CPU benchmark machine it ran ~10-50x slower with 2 threads than with 1 (see
    ``benchmarks/results/chip_speed.md``). For ``C <= _SINGLE_THREAD_MAX_C`` the thread count is
    set to 1 for the duration of one :func:`chip_scores` call and restored in ``finally`` (the
    switch is process-global: other threads of the process run single-threaded meanwhile), and the
    caller spreads chunks over the ``torch.get_num_threads()`` cores it had instead.
    """
    previous = torch.get_num_threads()
    if device.type != "cpu" or previous == 1 or channels > _SINGLE_THREAD_MAX_C:
        yield 1
        return
    torch.set_num_threads(1)
    try:
        yield previous
    finally:
        torch.set_num_threads(previous)


_NOT_FINITE = "chip_scores got features with NaN or Inf; check the hooked layer's outputs."


def _gram(x: Tensor) -> Tensor:
    """``x @ x^T``; raises on non-finite features, seen on its diagonal (sums of squares) for a fraction
    of the cost of scanning ``x``."""
    gram = x @ x.mT
    if not bool(torch.isfinite(torch.diagonal(gram, dim1=-2, dim2=-1)).all()):
        raise ConfigError(_NOT_FINITE)
    return gram


def _ci_secular(x: Tensor) -> Tensor:
    """Per-image CI by integrating the secular function's log-derivative.

    Args:
        x (Tensor[B, C, L]): float64 feature matrices.

    Returns:
        Tensor[B, C]: ``CI_n(i)`` for every image and channel.
    """
    gram = _gram(x)  # [B, C, C]
    lam, q = torch.linalg.eigh(gram)
    lam = _zero_noise(lam, lam[:, -1:])  # rank-deficient G: round-off eigenvalues are 0
    weight = q * q  # W[b, i, j] = Q[b, i, j]^2; rows sum to 1
    s = _log_grid(lam)  # [B, M]
    m = s.shape[1]
    # columns: 1/(lam_j + t) and lam_j/(lam_j + t)^2 on the grid, then lam_j^2, lam_j^3 for the moments
    terms = torch.empty(*lam.shape, 2 * m + 2, dtype=x.dtype, device=x.device)  # [B, C(j), 2M + 2]
    r1, r2 = terms[..., :m], terms[..., m : 2 * m]
    torch.add(lam[:, :, None], (s * s)[:, None, :], out=r1).reciprocal_()
    torch.mul(r1, r1, out=r2).mul_(lam[:, :, None])
    torch.mul(lam, lam, out=terms[..., -2])
    torch.mul(terms[..., -2], lam, out=terms[..., -1])
    sums = weight @ terms  # one product for D, N, m2 and m3 of every channel: [B, C(i), 2M + 2]
    ratio = sums[..., m : 2 * m] / sums[..., :m]  # N/D in [0, 1]
    integral = (ratio @ (_STEP * s)[:, :, None])[..., 0]  # trapezoid in u = log s (ds = s du)
    integral += _lower_tail(ratio[..., 0] * s[:, :1], ratio[..., 1] * s[:, 1:2])
    m1 = torch.diagonal(gram, dim1=-2, dim2=-1)
    integral += _upper_tail(m1, sums[..., -2], sums[..., -1], s[:, -1:])
    return (2.0 / math.pi) * integral


def _log_grid(lam: Tensor) -> Tensor:
    """Nodes ``s`` of the trapezoid in ``log s``, one row per image, each covering its own spectrum.

    Args:
        lam (Tensor[B, C]): eigenvalues of the Gram matrices, ascending, round-off already zeroed.

    Returns:
        Tensor[B, M]: ``s_k = _TAIL_LO * sqrt(lam_min+) * exp(k * _STEP)``, ``M`` the fewest nodes that
        reach ``_TAIL_HI * sqrt(lam_max)`` for every image (all-zero images get a unit grid).
    """
    lam_max = lam[:, -1]
    lam_max = torch.where(lam_max > 0, lam_max, torch.ones_like(lam_max))
    lam_min = torch.where(lam > 0, lam, lam_max[:, None]).amin(-1)
    u_lo = 0.5 * lam_min.log() + math.log(_TAIL_LO)
    span = 0.5 * (lam_max / lam_min).log() + math.log(_TAIL_HI / _TAIL_LO)
    nodes = math.ceil(float(span.max()) / _STEP) + 1
    k = torch.arange(nodes, dtype=lam.dtype, device=lam.device)
    return torch.exp(u_lo[:, None] + _STEP * k)


def _lower_tail(g0: Tensor, g1: Tensor) -> Tensor:
    """Trapezoid sum over the nodes below the grid, ``h * sum_{k>=1} g(u_0 - k h)``.

    Below the grid ``g = p e^u + q e^{3u}`` (``N/D = 1 - O(t)``, or ``O(t)`` on a null space);
    ``p`` and ``q`` are fitted on the first two nodes ``g0 = g(u_0)``, ``g1 = g(u_0 + h)``.
    """
    e = math.exp(_STEP)
    q = (g1 - g0 * e) / (e**3 - e)
    p = g0 - q
    return _STEP * (p / (e - 1.0) + q / (e**3 - 1.0))


def _upper_tail(m1: Tensor, m2: Tensor, m3: Tensor, s_end: Tensor) -> Tensor:
    """Trapezoid sum over the nodes above the grid, ``h * sum_{k>=1} g(u_end + k h)``.

    There ``N/D = c1/s^2 + c2/s^4 + c3/s^6`` with the moments ``m_k = (G^k)_ii = sum_j W_ij lam_j^k``
    (module docstring), so ``g = s N/D`` is a sum of three geometric series in ``k``.
    """
    coefficients = (m1, m1 * m1 - 2.0 * m2, m1**3 - 3.0 * m1 * m2 + 3.0 * m3)
    inv = 1.0 / s_end  # [B, 1]
    return _STEP * sum(
        c * inv**power / (math.exp(power * _STEP) - 1.0) for c, power in zip(coefficients, (1, 3, 5), strict=True)
    )


def _ci_gram(x: Tensor) -> Tensor:
    """Per-image CI from the eigenvalues of all principal submatrices of ``A A^T``.

    Args:
        x (Tensor[B, C, L]): float64 feature matrices.

    Returns:
        Tensor[B, C]: ``CI_n(i)`` for every image and channel.
    """
    b, c, _ = x.shape
    gram = _gram(x)
    lam = torch.linalg.eigvalsh(gram)
    lam_max = lam[:, -1:]
    full = _zero_noise(lam, lam_max).sqrt().sum(-1)  # [B]
    if c == 1:
        return full[:, None]
    ar = torch.arange(c, device=x.device)
    keep = ar[None, :].expand(c, c)[ar[:, None] != ar[None, :]].reshape(c, c - 1)  # keep[i] = all but i
    sub = gram[:, keep[:, :, None], keep[:, None, :]]  # [B, C, C-1, C-1]
    sub_lam = torch.linalg.eigvalsh(sub)
    part = _zero_noise(sub_lam, lam_max[:, :, None]).sqrt().sum(-1)  # [B, C]
    return full[:, None] - part


def _zero_noise(lam: Tensor, lam_max: Tensor) -> Tensor:
    """Set eigenvalues of a PSD Gram matrix below its round-off level ``C * eps * lam_max`` to 0.

    Eigenvalues of ``A A^T`` carry an absolute error of about ``eps * lam_max``, so exact zeros
    (``H*W < C``, duplicate or zero rows) come out as ``+-1e-16 * lam_max``; their square roots
    would add ``~1e-8 * ||A||`` each. Clamping them is within the method's accuracy anyway.

    Args:
        lam (Tensor[..., K]): eigenvalues.
        lam_max (Tensor[..., 1]): the largest eigenvalue of the full Gram matrix, broadcastable.

    Returns:
        Tensor[..., K]: ``lam`` with round-off-level (and negative) values replaced by 0.
    """
    tol = lam.shape[-1] * torch.finfo(lam.dtype).eps * lam_max.clamp_min(0.0)
    return torch.where(lam > tol, lam, torch.zeros_like(lam))


def _ci_direct(x: Tensor) -> Tensor:
    """Per-image CI by the definition: nuclear norms of the ``C`` masked copies (reference).

    Args:
        x (Tensor[B, C, L]): float64 feature matrices.

    Returns:
        Tensor[B, C]: ``CI_n(i)`` for every image and channel.
    """
    b, c, _ = x.shape
    mask = 1.0 - torch.eye(c, dtype=x.dtype, device=x.device)  # mask[i] zeroes row i
    out = torch.empty(b, c, dtype=x.dtype, device=x.device)
    full = torch.linalg.svdvals(x).sum(-1)  # [B]
    for k in range(b):
        masked = mask[:, :, None] * x[k][None]  # [C, C, L]
        out[k] = full[k] - torch.linalg.svdvals(masked).sum(-1)
    return out
