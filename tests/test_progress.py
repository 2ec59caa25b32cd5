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


def test_a_long_phase_in_a_log_says_how_far_it_is_while_it_runs(caplog: pytest.LogCaptureFixture,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Under nohup or CI (no terminal) a 20-minute fine-tune printed nothing until it ended."""
    clock = iter(float(t) for t in range(0, 1000, 10))  # every perf_counter call is 10 s later
    monkeypatch.setattr(progress.time, "perf_counter", lambda: next(clock))
    monkeypatch.setattr(progress, "_on_terminal", lambda: False)
    with caplog.at_level(logging.INFO, logger="slimcnn.progress"):
        with progress.phase("fine-tune", total=400, unit="steps") as advance:
            for _ in range(8):
                advance(50)
    lines = [r.getMessage() for r in caplog.records if r.name == "slimcnn.progress"]
    # t0 = 0; advances at 10, 20, ..., 80 s: lines at 30 and 60 s, then the phase's own line at the end (90 s)
    assert lines == ["fine-tune: 150/400 steps [30 s, ~50 s left]",
                     "fine-tune: 300/400 steps [1 min 00 s, ~20 s left]",
                     "fine-tune: 400 steps [90.0 s]"]
