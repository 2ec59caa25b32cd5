"""MATLAB-compatible imresize / rgb2ycbcr: kernel maths, exactness properties and MATLAB fixtures."""

from __future__ import annotations

import numpy as np
import pytest

from slimcnn.data.imresize import cubic, imresize, modcrop, rgb2y, rgb2ycbcr
from slimcnn.errors import ConfigError
from slimcnn.paths import shared_path


def test_cubic_kernel_is_keys_a_minus_half() -> None:
    x = np.array([0.0, 0.5, 1.0, 1.5, 2.0, 2.5, -1.5])
    # (1.5|x|^3 - 2.5|x|^2 + 1) on [0, 1]; (-0.5|x|^3 + 2.5|x|^2 - 4|x| + 2) on (1, 2]; 0 beyond
    np.testing.assert_allclose(cubic(x), [1.0, 0.5625, 0.0, -0.0625, 0.0, 0.0, -0.0625])
    shifts = 0.3 + np.arange(-3, 4)
    assert cubic(shifts).sum() == pytest.approx(1.0)  # partition of unity


@pytest.mark.parametrize("scale", [1 / 2, 1 / 3, 1 / 4, 2, 3, 4])
def test_constant_stays_constant_and_sizes_are_ceil(scale: float) -> None:
    img = np.full((37, 52), 0.3)
    out = imresize(img, scale)
    assert out.shape == (int(np.ceil(37 * scale)), int(np.ceil(52 * scale)))
    np.testing.assert_allclose(out, 0.3, atol=1e-12)


def test_scale_one_is_identity_and_upscale_keeps_linear_ramps() -> None:
    rng = np.random.default_rng(0)
    img = rng.random((20, 30))
    np.testing.assert_allclose(imresize(img, 1.0), img, atol=1e-12)
    # Keys' kernel reproduces linear functions: away from the borders an upscaled ramp is a ramp
    # sampled at u = x/s + (1 - 1/s)/2 (1-based pixel centres).
    ramp = np.tile(np.arange(1, 21, dtype=np.float64)[:, None], (1, 8))
    up = imresize(ramp, 3)
    u = np.arange(1, 61) / 3 + 0.5 * (1 - 1 / 3)
    np.testing.assert_allclose(up[6:-6, 3], u[6:-6], atol=1e-12)


def test_channels_are_resized_independently() -> None:
    rng = np.random.default_rng(1)
    img = rng.random((24, 18, 3))
    out = imresize(img, 1 / 3)
    for c in range(3):
        np.testing.assert_allclose(out[..., c], imresize(img[..., c], 1 / 3), atol=1e-14)
    assert imresize(img, output_shape=(10, 7)).shape == (10, 7, 3)


def test_bad_arguments_raise_config_errors() -> None:
    img = np.zeros((8, 8))
    with pytest.raises(ConfigError, match="exactly one"):
        imresize(img)
    with pytest.raises(ConfigError, match="exactly one"):
        imresize(img, 2, output_shape=(4, 4))
    with pytest.raises(ConfigError, match="> 0"):
        imresize(img, -1.0)
    with pytest.raises(ConfigError, match=r"\[H, W, 3\]"):
        rgb2ycbcr(np.zeros((4, 4)))


def test_rgb2ycbcr_studio_swing() -> None:
    px = np.array([[[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]]])
    ycc = rgb2ycbcr(px) * 255
    np.testing.assert_allclose(ycc[0, 0], [16, 128, 128], atol=1e-9)
    np.testing.assert_allclose(ycc[0, 1], [235, 128, 128], atol=1e-9)
    np.testing.assert_allclose(rgb2y(np.array([[[255, 255, 255]]], dtype=np.uint8)), [[235 / 255]])


def test_modcrop_crops_bottom_right() -> None:
    img = np.arange(7 * 10).reshape(7, 10)
    out = modcrop(img, 3)
    assert out.shape == (6, 9)
    np.testing.assert_array_equal(out, img[:6, :9])


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_matches_matlab_fixtures(scale: int) -> None:
    base = shared_path("sr", "matlab-bicubic-fixtures")
    if base is None:
        pytest.skip("needs ../shared/data/sr/matlab-bicubic-fixtures (MATLAB-made VDSR inputs); absent here")
    from scipy.io import loadmat

    m = loadmat(str(base / f"butterfly_GT_x{scale}.mat"))
    # The fixtures' script modcropped cumulatively: 256 (x2) -> 255 (x3) -> 252 (x4), top-left kept.
    gt_full = loadmat(str(base / "butterfly_GT_x2.mat"))["im_gt"]
    side = {2: 256, 3: 255, 4: 252}[scale]
    gt = gt_full[:side, :side]
    np.testing.assert_array_equal(gt, m["im_gt"])
    hr_y = rgb2y(gt)
    lr_y = imresize(hr_y, 1 / scale)
    bic_y = imresize(lr_y, scale)
    assert np.abs(hr_y * 255 - m["im_gt_y"]).max() < 1e-9
    assert np.abs(lr_y * 255 - m["im_l_y"]).max() < 1e-9
    assert np.abs(bic_y * 255 - m["im_b_y"]).max() < 1e-9
    assert np.abs(imresize(rgb2ycbcr(gt), 1 / scale) - m["im_l_ycbcr"]).max() < 1e-12
    assert np.abs(imresize(gt.astype(np.float64), 1 / scale) - m["im_l"]).max() < 1e-9
