"""The ``slimcnn`` console script: imports the CLI with Ctrl-C deferred (torch takes seconds to import)."""

from __future__ import annotations

import signal
import sys
import threading


def main() -> int:
    """Run :func:`slimcnn.cli.main`; Ctrl-C while the CLI is still importing is one line and exit code 130.

    Once the command has returned, Ctrl-C is ignored for the few milliseconds of interpreter shutdown.
    """
    try:  # the first import is pure Python (no torch): an interrupt there is caught below too
        from slimcnn.run._outdir import interrupts_deferred

        with interrupts_deferred():
            from slimcnn.cli import main as cli_main
    except KeyboardInterrupt:
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
