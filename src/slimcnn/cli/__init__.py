"""``slimcnn`` command line. Each subcommand lives in its own module and calls one library function."""

from __future__ import annotations

import importlib
import logging
import sys

import click

from slimcnn.cli._app import app
from slimcnn.errors import SlimcnnError

# Each module registers its command(s) on ``app`` when imported.
_COMMAND_MODULES: tuple[str, ...] = (
    # one line per command module, e.g. "analyze",
    "analyze",
    "apply",
    "prune",
    "decompose",
    "search",
    "evaluate",
    "quantize",
    "train",
    "demo",
)
for _name in _COMMAND_MODULES:
    importlib.import_module(f"slimcnn.cli.{_name}")


def main(argv: list[str] | None = None) -> int:
    """Entry point: runs the app, turns user errors into one stderr line and exit code 2.

    ``--debug`` anywhere on the command line shows full tracebacks instead.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    if debug:
        args.remove("--debug")
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        result = app(args=args, prog_name="slimcnn", standalone_mode=False)
    except click.exceptions.ClickException as e:
        e.show()
        return e.exit_code
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    except SlimcnnError as e:
        if debug:
            raise
        click.echo(f"error: {e}", err=True)
        return 2
    except (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError) as e:
        if debug:
            raise
        click.echo(f"error: {e}; check the path", err=True)
        return 2
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
