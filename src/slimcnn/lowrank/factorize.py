"""Factorise trained layers: truncated SVD (Linear, 1×1 conv), Tucker-2 and spatial SVD (k×k conv).

Every factorisation returns an ``nn.Sequential`` of ordinary layers, so the result exports to ONNX,
saves as a plain module and can itself be pruned. Ranks equal to the full rank reproduce the layer.
"""

from __future__ import annotations

import torch
from torch import nn

from slimcnn.errors import UnsupportedLayerError


def svd_factors(weight: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Best rank-``rank`` factors of ``weight (Tensor[S, C])``: ``W ≈ A @ B`` with ``A[S, R]``, ``B[R, C]``.

    The singular values are split evenly (``A = U√Σ``, ``B = √Σ Vᵀ``) so both factors are well scaled.
    """
    u, s, vh = torch.linalg.svd(weight.double(), full_matrices=False)
    r = min(rank, s.numel())
    root = s[:r].sqrt()
    return (u[:, :r] * root).to(weight.dtype), (root[:, None] * vh[:r]).to(weight.dtype)


def _mode_basis(weight: torch.Tensor, mode: int, rank: int) -> torch.Tensor:
    """Leading ``rank`` left singular vectors of the mode-``mode`` unfolding."""
    unfolded = weight.movedim(mode, 0).reshape(weight.shape[mode], -1)
    u, _, _ = torch.linalg.svd(unfolded, full_matrices=False)
    return u[:, :rank]


def tucker2_factors(
    weight: torch.Tensor, rank_in: int, rank_out: int, *, iters: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Tucker-2 of ``weight (Tensor[S, C, kh, kw])`` over the channel modes (HOSVD, then ``iters`` HOOI sweeps).

    Returns:
        ``(first[R1, C], core[R2, R1, kh, kw], last[S, R2])`` with
        ``W ≈ core ×₀ last ×₁ firstᵀ`` — i.e. the projection of ``W`` onto the two channel bases.
    """
    w = weight.double()
    u_out = _mode_basis(w, 0, rank_out)
    u_in = _mode_basis(w, 1, rank_in)
    for _ in range(iters):  # higher-order orthogonal iteration refines the HOSVD bases
        u_out = _mode_basis(torch.einsum("sckl,cr->srkl", w, u_in), 0, rank_out)
        u_in = _mode_basis(torch.einsum("sckl,sr->rckl", w, u_out), 1, rank_in)
    core = torch.einsum("sckl,sp,cq->pqkl", w, u_out, u_in)
    return u_in.T.contiguous().to(weight.dtype), core.to(weight.dtype), u_out.contiguous().to(weight.dtype)


def decompose_linear(layer: nn.Linear, rank: int) -> nn.Sequential:
    """``Linear(C→S)`` as ``Linear(C→R, no bias) → Linear(R→S)``."""
    a, b = svd_factors(layer.weight.detach(), rank)
    first, last = linear_shells(layer, b.shape[0])
    with torch.no_grad():
        first.weight.copy_(b)
        last.weight.copy_(a)
        if layer.bias is not None:
            last.bias.copy_(layer.bias)
    return nn.Sequential(first, last)


def decompose_pointwise(layer: nn.Conv2d, rank: int) -> nn.Sequential:
    """1×1 ``Conv2d(C→S)`` as ``1×1 C→R`` (stride/padding kept) ``→ 1×1 R→S``."""
    _check_conv(layer, pointwise=True)
    a, b = svd_factors(layer.weight.detach()[:, :, 0, 0], rank)
    first, last = pointwise_shells(layer, b.shape[0])
    with torch.no_grad():
        first.weight.copy_(b[:, :, None, None])
        last.weight.copy_(a[:, :, None, None])
        if layer.bias is not None:
            last.bias.copy_(layer.bias)
    return nn.Sequential(first, last)


def decompose_tucker2(layer: nn.Conv2d, rank_in: int, rank_out: int, *, iters: int = 0) -> nn.Sequential:
    """k×k ``Conv2d(C→S)`` as ``1×1 C→R1 → k×k R1→R2`` (original stride/padding/dilation) ``→ 1×1 R2→S``."""
    _check_conv(layer, pointwise=False)
    first_w, core_w, last_w = tucker2_factors(layer.weight.detach(), rank_in, rank_out, iters=iters)
    first, core, last = tucker2_shells(layer, first_w.shape[0], last_w.shape[1])
    with torch.no_grad():
        first.weight.copy_(first_w[:, :, None, None])
        core.weight.copy_(core_w)
        last.weight.copy_(last_w[:, :, None, None])
        if layer.bias is not None:
            last.bias.copy_(layer.bias)
    return nn.Sequential(first, core, last)


def decompose_spatial(layer: nn.Conv2d, rank: int) -> nn.Sequential:
    """k×k ``Conv2d(C→S)`` as ``kh×1 C→R → 1×kw R→S`` (spatial SVD over the (C·kh) × (S·kw) unfolding)."""
    _check_conv(layer, pointwise=False)
    w = layer.weight.detach()
    s_out, c_in, kh, kw = w.shape
    mat = w.permute(1, 2, 0, 3).reshape(c_in * kh, s_out * kw)  # rows (c, h), cols (s, w)
    a, b = svd_factors(mat, rank)  # a[(c,h), R], b[R, (s,w)]
    r = a.shape[1]
    vertical, horizontal = spatial_shells(layer, r)
    with torch.no_grad():
        vertical.weight.copy_(a.reshape(c_in, kh, r).permute(2, 0, 1)[..., None])
        horizontal.weight.copy_(b.reshape(r, s_out, kw).permute(1, 0, 2)[:, :, None, :])
        if layer.bias is not None:
            horizontal.bias.copy_(layer.bias)
    return nn.Sequential(vertical, horizontal)


# ------------------------------------------------------------------------------------------------
# Shells: the factor layers with the right shapes but untouched (default-initialised) weights.
# Dense float latency does not depend on weight values, so the rank search times shells and only
# the chosen rank pays for the decomposition itself.


def linear_shells(layer: nn.Linear, rank: int) -> tuple[nn.Linear, nn.Linear]:
    """``Linear(C→R, no bias)`` and ``Linear(R→S)`` for ``layer``, weights not set."""
    return (nn.Linear(layer.in_features, rank, bias=False),
            nn.Linear(rank, layer.out_features, bias=layer.bias is not None))


def pointwise_shells(layer: nn.Conv2d, rank: int) -> tuple[nn.Conv2d, nn.Conv2d]:
    """``1×1 C→R`` (the layer's stride/padding) and ``1×1 R→S`` for a 1×1 ``layer``, weights not set."""
    _check_conv(layer, pointwise=True)
    return (nn.Conv2d(layer.in_channels, rank, 1, stride=layer.stride, padding=layer.padding, bias=False),
            nn.Conv2d(rank, layer.out_channels, 1, bias=layer.bias is not None))


def tucker2_shells(layer: nn.Conv2d, rank_in: int, rank_out: int) -> tuple[nn.Conv2d, nn.Conv2d, nn.Conv2d]:
    """``1×1 C→R1``, ``k×k R1→R2`` (the layer's stride/padding/dilation) and ``1×1 R2→S``, weights not set."""
    _check_conv(layer, pointwise=False)
    first = nn.Conv2d(layer.in_channels, rank_in, 1, bias=False)
    core = nn.Conv2d(
        rank_in, rank_out, layer.kernel_size, stride=layer.stride, padding=layer.padding,
        dilation=layer.dilation, bias=False, padding_mode=layer.padding_mode,
    )
    last = nn.Conv2d(rank_out, layer.out_channels, 1, bias=layer.bias is not None)
    return first, core, last


def spatial_shells(layer: nn.Conv2d, rank: int) -> tuple[nn.Conv2d, nn.Conv2d]:
    """``kh×1 C→R`` and ``1×kw R→S`` for a k×k ``layer``, weights not set."""
    _check_conv(layer, pointwise=False)
    kh, kw = layer.kernel_size
    vertical = nn.Conv2d(
        layer.in_channels, rank, (kh, 1), stride=(layer.stride[0], 1), padding=(layer.padding[0], 0),
        dilation=(layer.dilation[0], 1), bias=False,
    )
    horizontal = nn.Conv2d(
        rank, layer.out_channels, (1, kw), stride=(1, layer.stride[1]), padding=(0, layer.padding[1]),
        dilation=(1, layer.dilation[1]), bias=layer.bias is not None,
    )
    return vertical, horizontal


def _check_conv(layer: nn.Conv2d, *, pointwise: bool) -> None:
    if layer.groups != 1:
        raise UnsupportedLayerError(
            f"grouped/depthwise conv (groups={layer.groups}) is not decomposed: its weights are already block-diagonal"
        )
    if isinstance(layer.padding, str):
        raise UnsupportedLayerError(f"conv with padding='{layer.padding}' is not supported; use explicit padding")
    if pointwise and layer.kernel_size != (1, 1):
        raise UnsupportedLayerError(f"expected a 1×1 conv, got kernel {layer.kernel_size}")
