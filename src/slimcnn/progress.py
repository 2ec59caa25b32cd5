"""Progress for long phases: a rich bar on a terminal; in logs, one plain line per phase and, while a
phase runs, a line every :data:`HEARTBEAT_SECONDS` with its count and the time it has left.

Every phase that can take more than a couple of seconds (a fine-tune, an evaluation, latency timing,
a sweep, a k-means fit) wraps its loop in :func:`phase`. Output goes through the ``slimcnn.progress``
logger, which the CLI routes to stderr; a library user sees nothing unless they configure logging.

Example:
    >>> with phase("fine-tune", total=steps, unit="steps") as advance:
    ...     for _ in range(steps):
    ...         step()
    ...         advance()
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["phase", "progress_log"]

progress_log = logging.getLogger("slimcnn.progress")
"""The logger every progress line goes to (the CLI shows INFO on stderr)."""

MIN_SECONDS = 2.0
"""Phases shorter than this leave no line in logs (a bar still shows while they run on a terminal)."""

HEARTBEAT_SECONDS = 30.0
"""In logs (no terminal), a running phase says how far it is at most this often: a 20-minute fine-tune under
nohup or CI is not silent until it ends."""

_bar: Any = None  # the one rich Progress shared by nested phases
_depth = 0


def _on_terminal() -> bool:
    if not progress_log.isEnabledFor(logging.INFO):
        return False
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # closed or replaced stderr
        return False


@contextmanager
def phase(title: str, total: int | None = None, unit: str = "") -> Iterator[Callable[[int], None]]:
    """Report one long phase; yields ``advance(n=1)`` to call as work completes.

    Args:
        title: What the phase does, e.g. ``"evaluate (10,000 images)"``.
        total: How many units the phase has, if known (a bar needs it; a log line counts them anyway).
        unit: The unit's name for the log line (``"steps"``, ``"images"``).

    Yields:
        ``advance(n=1)``: counts ``n`` more units done.
    """
    global _bar, _depth
    done = 0
    t0 = time.perf_counter()
    task = None
    if _on_terminal():
        try:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
        except ImportError:  # rich is a dependency; a broken install still gets log lines
            pass
        else:
            if _bar is None:
                _bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                console=Console(stderr=True), transient=True)
                _bar.start()
            task = _bar.add_task(title, total=total)
    _depth += 1

    logged = t0  # when this phase last left a line in the log

    def advance(n: int = 1) -> None:
        nonlocal done, logged
        done += n
        if task is not None:
            _bar.update(task, advance=n)
            return
        now = time.perf_counter()
        if now - logged >= HEARTBEAT_SECONDS and progress_log.isEnabledFor(logging.INFO):
            logged = now
            left = (f", ~{_duration((now - t0) * (total - done) / done)} left"
                    if total is not None and 0 < done < total else "")
            of = f"/{total:,}" if total is not None else ""
            progress_log.info("%s: %s%s %s [%s%s]", title, f"{done:,}", of, unit, _duration(now - t0), left)

    try:
        yield advance
    finally:
        _depth -= 1
        if task is not None:
            _bar.remove_task(task)
            if _depth == 0:
                _bar.stop()
                _bar = None
        seconds = time.perf_counter() - t0
        if seconds >= MIN_SECONDS:
            count = f": {done:,}{'/' + format(total, ',') if total is not None and total != done else ''} {unit}".rstrip()
            progress_log.info("%s%s [%.1f s]", title, count if (done or total) else "", seconds)


def _duration(seconds: float) -> str:
    """``42 s``, ``3 min 05 s``, ``1 h 02 min``."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
