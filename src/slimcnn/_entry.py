"""The ``slimcnn`` console script: imports the CLI with Ctrl-C deferred (torch takes seconds to import)."""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def interrupts_deferred() -> Iterator[list[int]]:
    """Note Ctrl-C instead of raising it inside the block; yields the list the noted signals go to.

    For imports of extension modules (torch, its C++ init): a KeyboardInterrupt raised inside an extension module's
    initialisation can abort the interpreter (seen as exit -6 under load), so the caller acts on the interrupt
    after the block. Outside the main thread (embedded use) nothing is deferred.
    """
    interrupted: list[int] = []
    try:
        previous = signal.signal(signal.SIGINT, lambda signum, frame: interrupted.append(signum))
    except ValueError:  # not the main thread: signals go to the main thread's handler anyway
        previous = None
    try:
        yield interrupted
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


def main() -> int:
    """Run :func:`slimcnn.cli.main`; Ctrl-C while the CLI is still importing is one line and exit code 130.

    Once the command has returned, Ctrl-C is ignored for the few milliseconds of interpreter shutdown.
    """
    with interrupts_deferred() as interrupted:
        from slimcnn.cli import main as cli_main
    if interrupted:
        sys.stderr.write("interrupted: nothing was written\n")
        return 130
    code = cli_main()
    _forget_unhandled_interrupt()  # the CLI returned: whatever interrupt it met, it handled
    if threading.current_thread() is threading.main_thread():
        # the command is over and its outputs are written: a Ctrl-C during interpreter shutdown would otherwise
        # end the process by the signal (exit -2) after a successful run
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    return code


def _forget_unhandled_interrupt() -> None:
    """Let the process end with the code the CLI returned (130 after an interrupt it handled).

    CPython marks a KeyboardInterrupt raised in code an extension runs through ``PyRun_String`` as unhandled
    (``_Py_UnhandledKeyboardInterrupt``) even when the caller catches it, and ``python -m`` then ends the process
    by SIGINT (exit -2) after a clean return: seen in 2 of 60 Ctrl-Cs during the import of sklearn/scipy. Without
    CPython's private flag (another interpreter) nothing changes.
    """
    import ctypes

    try:
        ctypes.c_int.in_dll(ctypes.pythonapi, "_Py_UnhandledKeyboardInterrupt").value = 0
    except (AttributeError, ValueError):  # not CPython, or the symbol is gone
        pass
