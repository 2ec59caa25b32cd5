"""Rank formulas and rank rounding (Hajimolahoseini et al., https://arxiv.org/abs/2309.03824)."""

from __future__ import annotations

import math

import torch

from slimcnn.errors import ConfigError


def svd_rank(c_in: int, c_out: int, ratio: float) -> int:
    """Rank that compresses a ``c_in -> c_out`` Linear/1×1 conv by ``ratio`` with a two-factor SVD.

    Notes:
        The pair of factors holds ``R·(C + S)`` weights instead of ``C·S``; asking for ``ratio = α``
        gives ``R = ⌊C·S / (α·(C + S))⌋`` (the paper's "2x ranks" for α = 2).

    Example:
        >>> svd_rank(2048, 512, 2.0)
        204
    """
    _check_ratio(ratio)
    return max(1, math.floor(c_in * c_out / (ratio * (c_in + c_out))))


def tucker2_rank(c_in: int, c_out: int, kernel: int, ratio: float, beta: float = 1.0) -> tuple[int, int]:
    """Tucker-2 ranks ``(R1, R2 = β·R1)`` that compress a ``k×k`` conv by ``ratio`` (the paper's Eq. 7).

    Notes:
        The factors hold ``C·R1 + k²·R1·R2 + R2·S`` weights. Setting that to ``C·S·k²/α`` with
        ``R2 = β·R1`` gives ``β·k²·R1² + (C + β·S)·R1 − C·S·k²/α = 0``, whose positive root is

        ``R1 = [−(C + βS) + √((C + βS)² + 4βk²·C·S·k²/α)] / (2βk²)``.

    Example:
        >>> tucker2_rank(512, 512, 3, 2.0)
        (309, 309)
    """
    _check_ratio(ratio)
    if beta <= 0:
        raise ConfigError(f"beta must be > 0, got {beta}")
    k2 = kernel * kernel
    b = c_in + beta * c_out
    target = c_in * c_out * k2 / ratio
    r1 = (-b + math.sqrt(b * b + 4 * beta * k2 * target)) / (2 * beta * k2)
    r1_int = max(1, math.floor(r1))
    return r1_int, max(1, math.floor(beta * r1_int))


def round_rank(rank: int, multiple: int, *, maximum: int | None = None) -> int:
    """Round ``rank`` down to a multiple of ``multiple`` (never below ``multiple``; never above ``maximum``).

    "Rank quantisation": widths that are multiples of 8/16/32 map onto vector units and GEMM tiles.
    """
    if multiple < 1:
        raise ConfigError(f"--rank-multiple must be >= 1, got {multiple}")
    r = max(multiple, (rank // multiple) * multiple)
    if maximum is not None:
        r = min(r, maximum)
    return max(1, r)


def energy_rank(singular_values: torch.Tensor, energy: float) -> int:
    """Smallest rank keeping ``energy`` of the squared singular values (``0 < energy <= 1``)."""
    if not 0.0 < energy <= 1.0:
        raise ConfigError(f"energy must be in (0, 1], got {energy}")
    sq = singular_values.double() ** 2
    cum = torch.cumsum(sq, 0) / sq.sum().clamp_min(1e-30)
    return int(torch.searchsorted(cum, torch.tensor(energy, dtype=cum.dtype) - 1e-12).item()) + 1


def _check_ratio(ratio: float) -> None:
    if not ratio > 0:
        raise ConfigError(f"--ratio must be > 0 (e.g. 2 for the paper's '2x ranks'), got {ratio}")
