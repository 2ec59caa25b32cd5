"""slimcnn.progress: one log line per phase that took long enough, nothing for short ones."""

from __future__ import annotations

import logging

import pytest

from slimcnn import progress


def test_long_phase_logs_one_line_with_its_count(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(progress, "MIN_SECONDS", 0.0)
    with caplog.at_level(logging.INFO, logger="slimcnn.progress"):
        with progress.phase("fine-tune", total=5, unit="steps") as advance:
            for _ in range(3):
                advance()
    lines = [r.getMessage() for r in caplog.records if r.name == "slimcnn.progress"]
    assert len(lines) == 1
    assert lines[0].startswith("fine-tune: 3/5 steps [")


def test_short_phase_is_silent_and_errors_pass_through(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="slimcnn.progress"):
        with pytest.raises(ValueError, match="boom"):
            with progress.phase("evaluate", total=2) as advance:
                advance(2)
                raise ValueError("boom")
    assert not [r for r in caplog.records if r.name == "slimcnn.progress"]
