"""Pretrained SR models reproduce the measured PSNR table of ../shared/data/README.md (Set5)."""

from __future__ import annotations

from pathlib import Path

import pytest

from slimcnn.paths import shared_path
from slimcnn.tasks import make_task


def _need(*parts: str) -> Path:
    p = shared_path(*parts)
    if p is None:
        pytest.skip(
            f"needs the benchmark data {'/'.join(parts)} under $SLIMCNN_DATA or ../shared/data (absent here)"
        )
    return p


def _score(source: str, scale: int) -> dict[str, float]:
    from slimcnn.models import load_model

    set5 = _need("sr", "Set5")
    loaded = load_model(source, scale=scale)
    assert loaded.info.pretrained, f"{source} x{scale} loaded without its shared weights"
    score = make_task("sr", set5, info=loaded.info).evaluate(loaded.model)
    assert score.n == 5 and score.dataset == f"Set5 x{scale}"
    return score.metrics


def test_fsrcnn_x3_set5() -> None:
    _need("weights", "fsrcnn", "fsrcnn_x3.pth")
    m = _score("slimcnn:fsrcnn", 3)
    assert m["psnr"] == pytest.approx(32.61, abs=0.02)
    assert m["psnr_bicubic"] == pytest.approx(30.41, abs=0.01)
    assert m["ssim"] > 0.90


@pytest.mark.slow
@pytest.mark.parametrize(("scale", "expected"), [(2, 37.17), (4, 30.52)])
def test_fsrcnn_other_scales_set5(scale: int, expected: float) -> None:
    _need("weights", "fsrcnn", f"fsrcnn_x{scale}.pth")
    assert _score("slimcnn:fsrcnn", scale)["psnr"] == pytest.approx(expected, abs=0.02)


@pytest.mark.slow
def test_vdsr_x2_set5() -> None:
    _need("weights", "vdsr", "vdsr_x234_state_dict.pth")
    m = _score("slimcnn:vdsr", 2)
    assert m["psnr"] == pytest.approx(37.65, abs=0.02)
    assert m["psnr_bicubic"] == pytest.approx(33.69, abs=0.01)
    assert m["ssim"] > 0.95
