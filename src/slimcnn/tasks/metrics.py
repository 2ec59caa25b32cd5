"""Image-quality metrics as the super-resolution literature computes them (PSNR, SSIM on Y).

Both take images in [0, 1], scale them to 0-255 and shave ``shave`` pixels off every border (the
SR convention: ``shave = scale``), so numbers line up with SRCNN/FSRCNN/VDSR tables.
"""

from __future__ import annotations

import math

import numpy as np

from slimcnn.errors import ConfigError

__all__ = ["psnr", "ssim", "shave_border"]


def shave_border(img: np.ndarray, shave: int) -> np.ndarray:
    """Drop ``shave`` pixels from each side of ``img[H, W]`` (no-op for ``shave == 0``)."""
    if shave < 0:
        raise ConfigError(f"shave must be >= 0, got {shave}")
    if shave == 0:
        return img
    if img.shape[0] <= 2 * shave or img.shape[1] <= 2 * shave:
        raise ConfigError(f"image {img.shape[:2]} is too small to shave {shave} pixels per side")
    return img[shave:-shave, shave:-shave]


def _check(pred: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(pred, dtype=np.float64)
    t = np.asarray(target, dtype=np.float64)
    if p.shape != t.shape or p.ndim != 2:
        raise ConfigError(f"expected two [H, W] images of the same shape, got {p.shape} and {t.shape}")
    return p, t


def psnr(pred: np.ndarray, target: np.ndarray, *, shave: int = 0) -> float:
    """Peak signal-to-noise ratio in dB of ``pred[H, W]`` against ``target[H, W]``, both in [0, 1].

    ``10 * log10(255^2 / MSE)`` on the 0-255 scale after shaving the border; identical images give
    ``inf``. Callers clamp model outputs to [0, 1] first.

    Args:
        pred: Reconstructed image (Y channel) in [0, 1].
        target: Ground truth in [0, 1].
        shave: Pixels removed from every side before comparing (``scale`` in SR papers).

    Returns:
        PSNR in dB.
    """
    p, t = _check(pred, target)
    d = shave_border(p, shave) * 255.0 - shave_border(t, shave) * 255.0
    mse = float(np.mean(d * d))
    return math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


def ssim(pred: np.ndarray, target: np.ndarray, *, shave: int = 0) -> float:
    """Structural similarity ([Wang et al. 2004](https://doi.org/10.1109/TIP.2003.819861)) on 0-255.

    The standard settings of the SR literature (MATLAB ``ssim_index``): 11x11 Gaussian window with
    sigma 1.5, K1 = 0.01, K2 = 0.03, population covariance, data range 255.

    Args:
        pred: Reconstructed image (Y channel) in [0, 1].
        target: Ground truth in [0, 1].
        shave: Pixels removed from every side before comparing.

    Returns:
        Mean SSIM in [-1, 1].
    """
    from skimage.metrics import structural_similarity

    p, t = _check(pred, target)
    return float(
        structural_similarity(
            shave_border(p, shave) * 255.0,
            shave_border(t, shave) * 255.0,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            data_range=255.0,
        )
    )
