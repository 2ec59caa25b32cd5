"""The ``slimcnn`` console script: imports the CLI inside the Ctrl-C guard (torch takes seconds to import)."""

from __future__ import annotations

import sys


def main() -> int:
    """Run :func:`slimcnn.cli.main`; Ctrl-C while the CLI is still importing is one line and exit code 130."""
    try:
        from slimcnn.cli import main as cli_main
    except KeyboardInterrupt:
        sys.stderr.write("interrupted: nothing was written\n")
        return 130
    return cli_main()
