"""MATLAB-compatible bicubic ``imresize`` and BT.601 ``rgb2ycbcr``, written from the math.

The super-resolution literature (SRCNN, FSRCNN, VDSR, ESPCN) makes low-resolution images with
MATLAB's ``imresize(img, 1/scale, 'bicubic')``: Keys' cubic kernel with ``a = -0.5``, widened by
``1/scale`` when shrinking (antialiasing), with symmetric ("mirror, edge repeated") padding,
applied one dimension at a time. PIL, OpenCV and ``torch.nn.functional.interpolate`` all differ from
it by more than the gaps between published methods, so PSNR numbers are only comparable when the
degradation is exactly this one. :func:`imresize` reproduces MATLAB's output to about 1e-13 on the
VDSR test fixtures (see ``tests/data/test_imresize.py``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from slimcnn.errors import ConfigError

__all__ = ["imresize", "modcrop", "rgb2ycbcr", "rgb2y", "cubic"]

_KERNEL_WIDTH = 4.0
"""Support of the cubic kernel (it is non-zero on (-2, 2))."""


def cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with ``a = -0.5`` (MATLAB's ``'bicubic'``).

    Args:
        x: Distances in input-pixel units.

    Returns:
        Kernel values, same shape as ``x``.
    """
    ax = np.abs(x)
    ax2 = ax * ax
    ax3 = ax2 * ax
    near = (1.5 * ax3 - 2.5 * ax2 + 1.0) * (ax <= 1)
    far = (-0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0) * ((ax > 1) & (ax <= 2))
    return near + far


def _contributions(in_len: int, out_len: int, scale: float, antialias: bool) -> tuple[np.ndarray, np.ndarray]:
    """Weights ``[out_len, P]`` and 0-based source indices ``[out_len, P]`` for one dimension.

    Output pixel ``x`` (1-based) sits at input coordinate ``u = x/scale + (1 - 1/scale)/2``, which
    aligns pixel centres. When shrinking with antialiasing the kernel is stretched by ``1/scale``
    (and its height scaled by ``scale``) so it low-pass filters before sampling. Indices outside
    ``[1, in_len]`` are mirrored with the edge pixel repeated; weight columns that are zero for
    every output are dropped.
    """
    widen = antialias and scale < 1
    width = _KERNEL_WIDTH / scale if widen else _KERNEL_WIDTH
    x = np.arange(1, out_len + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1.0 - 1.0 / scale)
    left = np.floor(u - width / 2.0)
    taps = int(math.ceil(width)) + 2
    idx = left[:, None] + np.arange(taps, dtype=np.float64)[None, :]
    dist = u[:, None] - idx
    weights = scale * cubic(scale * dist) if widen else cubic(dist)
    weights = weights / weights.sum(axis=1, keepdims=True)
    mirror = np.concatenate([np.arange(in_len), np.arange(in_len - 1, -1, -1)])
    idx0 = mirror[np.mod(idx.astype(np.int64) - 1, 2 * in_len)]
    keep = np.any(weights != 0, axis=0)
    return weights[:, keep], idx0[:, keep]


def _resize_dim(img: np.ndarray, dim: int, out_len: int, scale: float, antialias: bool) -> np.ndarray:
    weights, idx = _contributions(img.shape[dim], out_len, scale, antialias)
    moved = np.moveaxis(img, dim, 0)  # [in_len, ...]
    gathered = moved[idx]  # [out_len, P, ...]
    w = weights.reshape(weights.shape + (1,) * (moved.ndim - 1))
    out = np.sum(w * gathered, axis=1)
    return np.moveaxis(out, 0, dim)


def imresize(
    img: np.ndarray,
    scale: float | None = None,
    output_shape: Sequence[int] | None = None,
    *,
    antialias: bool = True,
) -> np.ndarray:
    """Resize like MATLAB's ``imresize(img, scale, 'bicubic')`` (float64 in, float64 out).

    Args:
        img: Image ``[H, W]`` or ``[H, W, C]``; integer inputs are converted to float64 but not
            rescaled (MATLAB would round the result back to the integer type; this never rounds).
        scale: Factor for both spatial dimensions, e.g. ``1/3`` or ``3``. The output size is
            ``ceil(scale * size)``, as in MATLAB.
        output_shape: ``(H_out, W_out)`` instead of ``scale``; then each dimension's factor is
            ``out / in``.
        antialias: Widen the kernel when shrinking (MATLAB's default ``'Antialiasing', true``).

    Returns:
        The resized image, float64, ``[H_out, W_out(, C)]``.

    Raises:
        ConfigError: Neither or both of ``scale`` and ``output_shape`` given, or a non-positive size.

    Example:
        >>> lr = imresize(hr_y, 1 / 3)
        >>> bicubic = imresize(lr, 3)
    """
    if (scale is None) == (output_shape is None):
        raise ConfigError(
            f"imresize needs exactly one of scale or output_shape (got scale={scale}, "
            f"output_shape={output_shape})"
        )
    a = np.asarray(img, dtype=np.float64)
    if a.ndim not in (2, 3):
        raise ConfigError(f"imresize expects an [H, W] or [H, W, C] image, got shape {a.shape}")
    in_shape = a.shape[:2]
    if scale is not None:
        if not scale > 0:
            raise ConfigError(f"imresize scale must be > 0, got {scale}")
        scales = (float(scale), float(scale))
        out_shape = tuple(int(math.ceil(scales[i] * in_shape[i])) for i in range(2))
    else:
        assert output_shape is not None
        if len(output_shape) != 2 or min(output_shape) <= 0:
            raise ConfigError(f"output_shape must be two positive ints (H, W), got {output_shape}")
        out_shape = (int(output_shape[0]), int(output_shape[1]))
        scales = (out_shape[0] / in_shape[0], out_shape[1] / in_shape[1])
    # MATLAB resizes along the dimension with the smallest factor first (stable: rows on a tie).
    order = sorted(range(2), key=lambda d: scales[d])
    out = a
    for d in order:
        out = _resize_dim(out, d, out_shape[d], scales[d], antialias)
    return out


# ITU-R BT.601 for "studio swing" Y in [16, 235], Cb/Cr in [16, 240] (MATLAB rgb2ycbcr).
_YCBCR_T = np.array(
    [[65.481, 128.553, 24.966], [-37.797, -74.203, 112.0], [112.0, -93.786, -18.214]], dtype=np.float64
)
_YCBCR_OFFSET = np.array([16.0, 128.0, 128.0], dtype=np.float64)


def rgb2ycbcr(rgb: np.ndarray) -> np.ndarray:
    """MATLAB ``rgb2ycbcr`` for double images: RGB in [0, 1] -> YCbCr in [0, 1] (Y in [16, 235]/255).

    Args:
        rgb: ``[H, W, 3]`` float image in [0, 1] (``uint8`` is divided by 255 first, like
            ``im2double``).

    Returns:
        ``[H, W, 3]`` float64 YCbCr, each channel divided by 255 as MATLAB does for doubles.

    Raises:
        ConfigError: The image has no trailing 3-channel axis.
    """
    a = np.asarray(rgb)
    if a.ndim != 3 or a.shape[2] != 3:
        raise ConfigError(f"rgb2ycbcr expects an [H, W, 3] image, got shape {a.shape}")
    x = a.astype(np.float64) / 255.0 if a.dtype == np.uint8 else a.astype(np.float64)
    return (x @ _YCBCR_T.T + _YCBCR_OFFSET) / 255.0


def rgb2y(rgb: np.ndarray) -> np.ndarray:
    """The Y channel of :func:`rgb2ycbcr` (``[H, W]`` float64 in [16/255, 235/255])."""
    a = np.asarray(rgb)
    if a.ndim != 3 or a.shape[2] != 3:
        raise ConfigError(f"rgb2y expects an [H, W, 3] image, got shape {a.shape}")
    x = a.astype(np.float64) / 255.0 if a.dtype == np.uint8 else a.astype(np.float64)
    return (x @ _YCBCR_T[0] + _YCBCR_OFFSET[0]) / 255.0


def modcrop(img: np.ndarray, scale: int) -> np.ndarray:
    """Crop the bottom/right so both spatial sizes are multiples of ``scale`` (MATLAB ``modcrop``)."""
    if scale < 1:
        raise ConfigError(f"modcrop scale must be >= 1, got {scale}")
    h, w = img.shape[:2]
    return img[: h - h % scale, : w - w % scale]
