"""Hardware-aware layer targeting: decompose a layer only where the factors are *measured* faster.

Follows Algorithm 1 of Hajimolahoseini et al. (https://arxiv.org/abs/2309.12412 and the 2024
follow-up): time the original layer; time the decomposition at ranks from the target rank downward;
pick the rank just below the largest throughput cliff; keep the original when nothing is faster.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Literal

import torch
from torch import nn

from slimcnn.errors import ConfigError, UnsupportedLayerError
from slimcnn.lowrank.factorize import (
    decompose_linear,
    decompose_pointwise,
    decompose_spatial,
    decompose_tucker2,
    linear_shells,
    pointwise_shells,
    spatial_shells,
    tucker2_shells,
)
from slimcnn.lowrank.rank import energy_rank, round_rank, svd_rank, tucker2_rank

log = logging.getLogger(__name__)

Method = Literal["svd", "tucker2", "spatial"]
Timer = Callable[[nn.Module, tuple[int, ...]], float]
"""``timer(module, input_shape) -> median milliseconds`` on the target runtime (the quick rank scan)."""
Comparer = Callable[[nn.Module, nn.Module, tuple[int, ...]], tuple[float, float]]
"""``compare(original, replacement, input_shape) -> (ms_original, ms_replacement)``, timed side by side.

The confirmatory timing: both modules are timed interleaved in one process, so load drift hits both
alike. A conservative implementation returns a statistic that must agree over the runs (e.g. the
worse of the median and p10 speed-ups, expressed as times).
"""


@dataclass(frozen=True)
class LowRankSpec:
    """How to decompose a model."""

    ratio: float = 2.0
    """Per-layer compression target α (the paper's "2x ranks" is 2); ignored when ``rank``/``energy`` set."""
    rank: int | None = None
    """Explicit rank for every decomposed layer (R1 = R2 for Tucker-2)."""
    energy: float | None = None
    """Keep this fraction of the squared singular values instead of using ``ratio``."""
    beta: float = 1.0
    """Tucker-2 ``R2 = β·R1``."""
    rank_multiple: int = 8
    """Round ranks down to a multiple of this ("rank quantisation")."""
    only_faster: bool = True
    """Replace a layer only when its decomposition is measured faster (``False`` = ``--all``)."""
    spatial: bool = False
    """Use spatial SVD (k×1 then 1×k) for k×k convs instead of Tucker-2."""
    search_window: float = 0.25
    """Rank search goes down to ``(1 - search_window)·R`` in steps of ``rank_multiple``."""
    scan_step: int | None = None
    """Spacing of the candidate ranks below the target (``None``: 1, 2 or 4 × ``rank_multiple`` by size)."""
    min_speedup: float = 1.05
    """A decomposition must be at least this much faster (``t_orig / t_dec``) in the confirmatory
    side-by-side timing to replace the layer: a margin beyond timing noise and beyond the small
    cost of an extra node that a layer timed alone does not show."""
    include: tuple[str, ...] = ()
    """fnmatch patterns of layers to consider (empty = all Conv2d/Linear)."""
    exclude: tuple[str, ...] = ()
    tucker_iters: int = 0
    """HOOI refinement sweeps after the HOSVD initialisation."""

    def __post_init__(self) -> None:
        if self.rank is not None and self.rank < 1:
            raise ConfigError(f"--rank must be >= 1, got {self.rank}")
        if not 0.0 <= self.search_window < 1.0:
            raise ConfigError(f"search_window must be in [0, 1), got {self.search_window}")
        if self.scan_step is not None and self.scan_step < 1:
            raise ConfigError(f"scan_step must be >= 1, got {self.scan_step}")
        if self.min_speedup <= 0:
            raise ConfigError(f"--min-speedup must be > 0 (e.g. 1.05 = 5 % faster), got {self.min_speedup}")


@dataclass(frozen=True)
class LayerDecision:
    """One row of the per-layer report."""

    layer: str
    method: str
    shape: tuple[int, ...]
    input_shape: tuple[int, ...]
    target_rank: int
    rank: int
    ms_before: float | None
    ms_after: float | None
    replaced: bool
    reason: str
    ranks_tried: tuple[tuple[int, float], ...] = ()
    """The quick rank scan: ``(rank, ms)`` per candidate, descending rank (``ms_before`` and
    ``ms_after`` come from the confirmatory side-by-side timing when there was one)."""

    @property
    def speedup(self) -> float | None:
        """``ms_before / ms_after`` of the layer alone (``None`` when not timed)."""
        if self.ms_before is None or self.ms_after is None:
            return None
        return self.ms_before / max(self.ms_after, 1e-9)

    @property
    def slower(self) -> bool:
        """Replaced although the decomposition timed no faster than the original (``--all``)."""
        return self.replaced and self.ms_before is not None and self.ms_after is not None and self.ms_after >= self.ms_before


def layer_method(layer: nn.Module, spec: LowRankSpec) -> Method:
    """Which factorisation applies to ``layer`` (raises :class:`UnsupportedLayerError` otherwise)."""
    if isinstance(layer, nn.Linear):
        return "svd"
    if isinstance(layer, nn.Conv2d) and type(layer) is nn.Conv2d:
        if layer.groups != 1:
            raise UnsupportedLayerError(f"groups={layer.groups}: grouped/depthwise convs are left alone")
        if layer.kernel_size == (1, 1):
            return "svd"
        return "spatial" if spec.spatial else "tucker2"
    raise UnsupportedLayerError(f"{type(layer).__name__} is not decomposed (only Conv2d and Linear)")


def _dims(layer: nn.Module) -> tuple[int, int, int]:
    if isinstance(layer, nn.Linear):
        return layer.in_features, layer.out_features, 1
    assert isinstance(layer, nn.Conv2d)
    return layer.in_channels, layer.out_channels, layer.kernel_size[0]


def target_rank(layer: nn.Module, method: Method, spec: LowRankSpec) -> tuple[int, int]:
    """Full-rank bound and the (rounded) target rank for ``layer`` under ``spec``."""
    c, s, k = _dims(layer)
    w = layer.weight.detach()
    if method == "svd":
        full = min(c, s)
        if spec.rank is not None:
            r = spec.rank
        elif spec.energy is not None:
            r = energy_rank(torch.linalg.svdvals(w.reshape(s, c).double()), spec.energy)
        else:
            r = svd_rank(c, s, spec.ratio)
    elif method == "tucker2":
        full = min(c, s)
        if spec.rank is not None:
            r = spec.rank
        elif spec.energy is not None:
            r = energy_rank(torch.linalg.svdvals(w.movedim(1, 0).reshape(c, -1).double()), spec.energy)
        else:
            r = tucker2_rank(c, s, k, spec.ratio, spec.beta)[0]
    else:  # spatial
        kh, kw = layer.kernel_size  # type: ignore[union-attr]
        full = min(c * kh, s * kw)
        if spec.rank is not None:
            r = spec.rank
        elif spec.energy is not None:
            r = energy_rank(torch.linalg.svdvals(w.permute(1, 2, 0, 3).reshape(c * kh, s * kw).double()), spec.energy)
        else:  # R·(C·kh + S·kw) = C·S·kh·kw/α
            r = math.floor(c * s * kh * kw / (spec.ratio * (c * kh + s * kw)))
    return full, round_rank(max(1, r), spec.rank_multiple, maximum=full)


def _r2(layer: nn.Module, rank: int, spec: LowRankSpec) -> int:
    return max(1, min(round_rank(math.floor(spec.beta * rank), 1), _dims(layer)[1]))


def build_factors(layer: nn.Module, method: Method, rank: int, spec: LowRankSpec) -> nn.Sequential:
    """The decomposed replacement for ``layer`` at ``rank``."""
    if method == "svd":
        return decompose_linear(layer, rank) if isinstance(layer, nn.Linear) else decompose_pointwise(layer, rank)  # type: ignore[arg-type]
    if method == "tucker2":
        return decompose_tucker2(layer, rank, _r2(layer, rank, spec), iters=spec.tucker_iters)  # type: ignore[arg-type]
    return decompose_spatial(layer, rank)  # type: ignore[arg-type]


def timing_factors(layer: nn.Module, method: Method, rank: int, spec: LowRankSpec) -> nn.Sequential:
    """A stand-in for :func:`build_factors` with the same layer shapes but no decomposition (for timing)."""
    if method == "svd":
        if isinstance(layer, nn.Linear):
            return nn.Sequential(*linear_shells(layer, rank))
        return nn.Sequential(*pointwise_shells(layer, rank))  # type: ignore[arg-type]
    if method == "tucker2":
        return nn.Sequential(*tucker2_shells(layer, rank, _r2(layer, rank, spec)))  # type: ignore[arg-type]
    return nn.Sequential(*spatial_shells(layer, rank))  # type: ignore[arg-type]


def choose_rank(times: list[tuple[int, float]], noise: float = 0.03) -> int:
    """Algorithm 1's rank choice from ``[(rank, ms), ...]`` sorted by descending rank.

    Let ``Δt`` be the time saved between consecutive candidate ranks. If the largest saving exceeds
    ``noise`` of the target-rank time, a throughput cliff lies there: take the rank just below it.
    Otherwise there is no cliff and the target rank (the first entry) is kept.
    """
    if not times:
        raise ConfigError("no rank candidates were timed")
    best_rank, best_gain = times[0][0], 0.0
    for (_, t_hi), (r_lo, t_lo) in zip(times, times[1:], strict=False):
        if t_hi - t_lo > best_gain:
            best_gain, best_rank = t_hi - t_lo, r_lo
    return best_rank if best_gain > noise * times[0][1] else times[0][0]


def rank_candidates(target: int, spec: LowRankSpec) -> list[int]:
    """Ranks to time, from the target rank down to ``(1 - search_window)·target``.

    After the target itself, the candidates lie on a grid of ``spec.scan_step`` or, when that is
    ``None``, a grid that coarsens with the rank: ``rank_multiple`` below 128, twice that below
    256, four times that above (for multiples of 8: 8 / 16 / 32). Throughput cliffs of GEMM-based
    convolutions sit at such multiples, and the coarse grid keeps the scan to a few timings per layer.

    Example:
        >>> rank_candidates(304, LowRankSpec())
        [304, 288, 256]
    """
    step = spec.scan_step or spec.rank_multiple * (1 if target < 128 else 2 if target < 256 else 4)
    low = max(spec.rank_multiple, math.ceil(target * (1.0 - spec.search_window)))
    grid = [r for r in range((target // step) * step, low - 1, -step) if r < target]
    return [target, *grid]


def decide_layer(
    name: str,
    layer: nn.Module,
    input_shape: tuple[int, ...],
    spec: LowRankSpec,
    timer: Timer | None,
    compare: Comparer | None = None,
) -> tuple[LayerDecision, nn.Sequential | None]:
    """Decide one layer: the replacement (or ``None``) and the report row explaining why.

    With ``spec.only_faster`` and a ``timer``: (1) quick scan — time the original and a shape-only
    stand-in of each candidate rank (:func:`rank_candidates`) with ``timer``; (2) pick the rank with
    :func:`choose_rank`; (3) if the scan shows any gain, confirm with ``compare`` (original and the
    chosen factors side by side) and replace only if that speed-up is at least ``spec.min_speedup``.
    Without ``compare`` the scan times are used for the decision.

    With ``--all`` (``spec.only_faster=False``) every layer whose factors hold fewer weights is
    replaced; when timing is available the row still records both times (so slower layers show).
    """
    shape = tuple(layer.weight.shape)
    try:
        method = layer_method(layer, spec)
    except UnsupportedLayerError as e:
        log.info("%s: %s", name, e)
        row = LayerDecision(name, "-", shape, input_shape, 0, 0, None, None, False, str(e))
        return row, None
    full, target = target_rank(layer, method, spec)
    c, s, _ = _dims(layer)
    base = LayerDecision(name, method, shape, input_shape, target, target, None, None, False, "")
    if _factor_params(layer, method, target, spec) >= layer.weight.numel():
        return replace(base, reason=f"rank {target} would not reduce weights ({c}→{s})"), None
    if timer is None or not spec.only_faster:
        factors = build_factors(layer, method, target, spec)
        if timer is None and compare is None:
            return replace(base, replaced=True, reason="--all: replaced without timing"), factors
        t0, t1 = compare(layer, factors, input_shape) if compare else (timer(layer, input_shape), timer(factors, input_shape))  # type: ignore[misc]
        why = "replaced (--all), SLOWER" if t1 >= t0 else "replaced (--all), faster"
        return replace(base, ms_before=t0, ms_after=t1, replaced=True, reason=why), factors
    t_orig = timer(layer, input_shape)
    tried = [(r, timer(timing_factors(layer, method, r, spec), input_shape)) for r in rank_candidates(target, spec)]
    rank = choose_rank(tried)
    t_dec = dict(tried)[rank]
    row = replace(base, rank=rank, ms_before=t_orig, ms_after=t_dec, ranks_tried=tuple(tried))
    if compare is None:
        if t_orig / max(t_dec, 1e-9) >= spec.min_speedup:
            return replace(row, replaced=True, reason=f"faster: {t_orig:.3f} → {t_dec:.3f} ms"), build_factors(layer, method, rank, spec)
        return replace(row, reason=f"kept: decomposed {t_dec:.3f} ms vs original {t_orig:.3f} ms"), None
    if t_dec >= t_orig:  # the scan shows no gain at any rank: not worth a confirmation
        return replace(row, reason=f"kept: scan {t_dec:.3f} ms vs original {t_orig:.3f} ms"), None
    c0, c1 = compare(layer, timing_factors(layer, method, rank, spec), input_shape)
    row = replace(row, ms_before=c0, ms_after=c1)
    if c0 / max(c1, 1e-9) >= spec.min_speedup:
        return (replace(row, replaced=True, reason=f"faster: {c0:.3f} → {c1:.3f} ms ({c0 / max(c1, 1e-9):.2f}x, confirmed)"),
                build_factors(layer, method, rank, spec))
    return replace(row, reason=f"kept: confirm {c1:.3f} ms vs original {c0:.3f} ms (< {spec.min_speedup:.2f}x)"), None


def _factor_params(layer: nn.Module, method: Method, rank: int, spec: LowRankSpec) -> int:
    c, s, k = _dims(layer)
    if method == "svd":
        return rank * (c + s)
    if method == "tucker2":
        r2 = max(1, math.floor(spec.beta * rank))
        return c * rank + rank * r2 * k * k + r2 * s
    kh, kw = layer.kernel_size  # type: ignore[union-attr]
    return rank * (c * kh + s * kw)
