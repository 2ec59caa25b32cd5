"""``slimcnn`` command line. Each subcommand lives in its own module and calls one library function."""

from __future__ import annotations

import functools
import importlib
import logging
import sys
import warnings
from typing import Any

import click
import typer

from slimcnn.cli._app import app
from slimcnn.errors import SlimcnnError
from slimcnn.run._outdir import interrupts_deferred

# Each module registers its command(s) on ``app`` when imported.
_COMMAND_MODULES: tuple[str, ...] = (
    # one line per command module, in the order --help lists them: the whole job first, then its parts
    "compress",
    "analyze",
    "evaluate",
    "train",
    "prune",
    "search",
    "decompose",
    "quantize",
    "apply",
    "export",
    "report",
    "demo",
)
for _name in _COMMAND_MODULES:
    importlib.import_module(f"slimcnn.cli.{_name}")

# What a command needs before it can do anything (torch, torchvision, ONNX Runtime, the graph and run rooms): the
# command modules import it lazily so that `slimcnn --help` or a mistyped option answers in a fraction of a second
# instead of after ~4 s of imports, and each command loads it first, with Ctrl-C deferred (an interrupt inside an
# extension's initialisation can abort the interpreter).
_COMMAND_IMPORTS: tuple[str, ...] = ("slimcnn.measure", "slimcnn.run._plan", "slimcnn.run._result")


def _imports_first(callback: Any) -> Any:
    @functools.wraps(callback)  # typer reads the wrapped signature and its type hints
    def command(*args: Any, **kwargs: Any) -> Any:
        with interrupts_deferred():
            for module in _COMMAND_IMPORTS:
                importlib.import_module(module)
        return callback(*args, **kwargs)

    return command


for _info in app.registered_commands:
    if _info.name != "report":  # re-renders a folder from its JSON files: no model, no torch
        _info.callback = _imports_first(_info.callback)


def _click_exceptions() -> tuple[Any, ...]:
    """typer >= 0.20 vendors its own click: catch both copies' classes."""
    mods = [click.exceptions]
    try:
        from typer._click import exceptions as vendored

        mods.append(vendored)
    except ImportError:  # older typer uses click itself
        pass
    return tuple(mods)


def main(argv: list[str] | None = None) -> int:
    """Entry point: runs the app, turns user errors into one stderr line and exit code 2.

    ``--debug`` anywhere on the command line shows full tracebacks instead. Ctrl-C prints what an
    interrupted run kept and exits 130; a usage error (unknown option or command, missing argument)
    prints one line naming it and the ``--help`` to read, exit code 2.
    """
    from slimcnn.run import _outdir

    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    if debug:
        args.remove("--debug")
    # a user reads `warning: ...` like `note:` and `error:`; --debug adds which module said it
    console = _StderrHandler()
    console.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s") if debug else _OneLineFormatter())
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, handlers=[console])
    progress = logging.getLogger("slimcnn.progress")  # one plain line per long phase (measured points...)
    if not progress.handlers:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        progress.addHandler(handler)
        progress.setLevel(logging.INFO)
        progress.propagate = False
    if not args:
        args = ["--help"]
    empty = _empty_path_option(args)
    if empty is not None:
        click.echo(f"error: {empty} is empty; name a folder or file (is a shell variable unset?) "
                   f"(see slimcnn --help)", err=True)
        return 2
    if args in (["--version"], ["-V"]):
        from slimcnn.version import __version__

        click.echo(f"slimcnn {__version__}")
        return 0
    mods = _click_exceptions()
    usage = tuple(m.UsageError for m in mods)
    clicks = tuple(m.ClickException for m in mods)
    aborts = (click.exceptions.Abort, typer.Abort)
    exits = (click.exceptions.Exit, typer.Exit)
    _outdir.last_interrupt = None
    try:
        with warnings.catch_warnings():
            if not debug:  # one line, not the library's file:line and source line
                warnings.showwarning = _show_warning
            try:
                result = app(args=args, prog_name="slimcnn", standalone_mode=False)
            except Exception as e:
                if _outdir.caused_by_interrupt(e):  # e.g. an import that Ctrl-C cut short: an interrupt, no traceback
                    raise KeyboardInterrupt from e
                raise
    except usage as e:
        cmd = e.ctx.command_path if getattr(e, "ctx", None) is not None else "slimcnn"
        click.echo(f"error: {_usage_message(e)} (see {cmd} --help)", err=True)
        return 2
    except clicks as e:
        click.echo(f"error: {e.format_message()}", err=True)
        return 2
    except (*aborts, KeyboardInterrupt):
        click.echo(_outdir.last_interrupt or "interrupted: nothing was written", err=True)
        return 130
    except exits as e:
        code = int(getattr(e, "exit_code", 0) or 0)
        if code == 130 or isinstance(e.__cause__, KeyboardInterrupt):  # typer turns Ctrl-C into Exit(130)
            click.echo(_outdir.last_interrupt or "interrupted: nothing was written", err=True)
            return 130
        return code
    except SlimcnnError as e:
        if debug:
            raise
        click.echo(f"error: {_one_line(e)}", err=True)
        return 2
    except (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError) as e:
        if debug:
            raise
        click.echo(f"error: {_one_line(e)}; check the path", err=True)
        return 2
    except MemoryError:
        if debug:
            raise
        click.echo("error: out of memory; use a smaller --input, --batch-size or --limit", err=True)
        return 2
    except OSError as e:  # a full disk, a vanished mount: the run was not committed, --out is unchanged
        if debug:
            raise
        click.echo(f"error: {_one_line(e)}; nothing was written to --out (free space or choose another --out)", err=True)
        return 2
    if result == 130:  # typer returns Exit(130) for Ctrl-C in non-standalone mode
        click.echo(_outdir.last_interrupt or "interrupted: nothing was written", err=True)
    return result if isinstance(result, int) else 0


_PATH_OPTIONS = ("--out", "--data", "--val-data", "--train-data", "--weights")


def _empty_path_option(args: list[str]) -> str | None:
    """The first path option given an empty value (``--out ""`` would mean the current folder)."""
    for i, a in enumerate(args):
        name, eq, value = a.partition("=")
        if name in _PATH_OPTIONS and (value.strip() == "" if eq else i + 1 < len(args) and not args[i + 1].strip()):
            return name
    return None


# Words of the field a user may type for an option slimcnn names otherwise: the unknown option's error names the
# option of that command that means it (click's spelling suggestions only find near-typos, e.g. --sram -> --scale),
# the first of the candidates the command has.
_PARAMS_NOT_BYTES = ("--params", "prune has no weight-bytes budget (search, quantize and compress take --weight-bytes); "
                                 "here --ratio or --macs shrink the weights, and --params goes with --latency")
_OPTION_SYNONYMS: dict[str, tuple[tuple[str, str], ...]] = {
    **dict.fromkeys(("--sram", "--memory", "--size", "--model-size", "--max-size", "--max-bytes", "--bytes"),
                    (("--weight-bytes", "the weight memory budget (on-chip SRAM) is --weight-bytes, e.g. 4MB or 0.1x"),
                     _PARAMS_NOT_BYTES)),
    "--weight-bytes": (_PARAMS_NOT_BYTES,),
    **dict.fromkeys(("--flops", "--gflops", "--max-macs", "--max-flops", "--compute"),
                    (("--macs", "the compute budget is --macs, e.g. 0.5x or 1.2G"),)),
    **dict.fromkeys(("--speedup", "--max-latency", "--target-latency", "--time"),
                    (("--latency", "the time budget is --latency, e.g. 0.5x (of the original's) or 12ms"),)),
    **dict.fromkeys(("--drop", "--max-loss", "--tolerance", "--accuracy-drop", "--quality"),
                    (("--max-drop", "the quality target is --max-drop, e.g. 1 (metric units) or 1%"),)),
    **dict.fromkeys(("--epochs", "--iters", "--fine-tune-steps"),
                    (("--finetune-steps", "fine-tuning length is --finetune-steps (optimizer steps)"),
                     ("--steps", "training length is --steps (optimizer steps)"))),
    **dict.fromkeys(("--output", "--output-dir", "--outdir", "--out-dir", "-o"),
                    (("--out", "the output folder is --out"),)),
    **dict.fromkeys(("--dataset", "--data-dir"), (("--data", "the data is --data (folder, .tar or built-in set)"),)),
    **dict.fromkeys(("--gpu", "--cuda"), (("--device", "the device is --device, e.g. --device cuda"),)),
}


def _usage_message(e: Any) -> str:
    """click's message, with a missing positional named as ``--help`` shows it (``MODEL``, not ``'model'``) and an
    unknown option that is a field's word for one of the command's options (``--sram``) pointed at it."""
    param = getattr(e, "param", None)
    if type(e).__name__ == "MissingParameter" and getattr(param, "param_type_name", None) == "argument":
        return f"Missing argument {param.metavar or str(param.name).upper()}."
    ctx = getattr(e, "ctx", None)
    if type(e).__name__ == "NoSuchOption" and ctx is not None:
        known = {opt for p in ctx.command.params for opt in p.opts}
        for option, meaning in _OPTION_SYNONYMS.get(str(e.option_name).split("=", 1)[0], ()):
            if option in known:
                return f"No such option: {e.option_name}; {meaning}."
    return " ".join(e.format_message().split())


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is when a record is emitted (tests swap it between runs)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


class _OneLineFormatter(logging.Formatter):
    """``warning: message`` (the level in lower case, no logger name)."""

    def format(self, record: logging.LogRecord) -> str:
        return f"{record.levelname.lower()}: {record.getMessage()}"


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: Any = None, line: str | None = None) -> None:
    """A Python warning as ``warning: message`` on stderr (``warnings.showwarning``'s signature)."""
    click.echo(f"warning: {_one_line(message) if isinstance(message, BaseException) else message}", file=file or sys.stderr)


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


if __name__ == "__main__":
    sys.exit(main())
