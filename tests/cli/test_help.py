"""``--help`` reads as prose: docstrings wrapped at the source's width are reflowed to the terminal's."""

from __future__ import annotations

import pytest

from slimcnn.cli import main


def test_help_paragraphs_are_reflowed_not_broken_where_the_source_wraps(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Rich markup mode kept every line break of a docstring: `compress --help` printed "each stage gets the /
    budget that is left. With / int8, model.onnx ..." on three short lines, however wide the terminal."""
    monkeypatch.setenv("COLUMNS", "300")
    assert main(["compress", "--help"]) == 0
    line = next(t for t in capsys.readouterr().out.splitlines() if "each stage gets the" in t)
    assert "each stage gets the budget that is left. With int8, model.onnx is the int8 model" in line
