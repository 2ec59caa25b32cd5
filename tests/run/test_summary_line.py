"""The one-line before/after summary every command prints."""

from __future__ import annotations

from slimcnn.run import Measured
from slimcnn.run._measure import summary_line
from slimcnn.types import Score


def test_scores_keep_trailing_zeros_as_the_report_does() -> None:
    """``.4g`` printed a PSNR of 31.40 as 31.4 beside 31.38 (the report, since session 29, kept the zero)."""
    line = summary_line(Measured(Score("psnr", 31.40)), Measured(Score("psnr", 31.38)))
    assert line == "psnr 31.40 -> 31.38 (drop 0.02)"
    assert summary_line(Measured(Score("top1", 90.0)), Measured(Score("top1", 8.5))).startswith("top1 90.00 -> 8.500")


def test_a_drop_of_float_rounding_reads_zero() -> None:
    """An fp32 ONNX export of FSRCNN printed "psnr 32.61 -> 32.61 (drop -3.21e-08)"."""
    line = summary_line(Measured(Score("psnr", 32.61)), Measured(Score("psnr", 32.61 + 3.21e-8)))
    assert line == "psnr 32.61 -> 32.61 (drop 0)"
