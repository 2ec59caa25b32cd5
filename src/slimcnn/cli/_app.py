"""The typer app and the helpers every command shares. Only the CLI prints or exits."""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import typer

from slimcnn._io import to_json
from slimcnn.errors import ConfigError

app = typer.Typer(
    name="slimcnn",  # its help is _root's docstring
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",  # docstrings are wrapped at the source's width: rich mode kept those line breaks
)


def emit_json(obj: Any) -> None:
    """Print exactly one JSON object on stdout."""
    sys.stdout.write(to_json(obj) + "\n")
    sys.stdout.flush()


def say(message: str = "") -> None:
    """Human-readable progress/results go to stderr when --json owns stdout; here to stdout."""
    typer.echo(message)


def say_wrote(out: Path | str) -> None:
    """The closing line of every run: its folder, the files it wrote (``result.json``'s artifacts) and its report."""
    from slimcnn.run import read_result

    out = Path(out)
    files = ", ".join(str(a["path"]) for a in read_result(out)["artifacts"])
    report = f"; report: {out / 'report.html'}" if (out / "report.html").exists() else ""
    say(f"wrote {out}/ ({files}){report}")


def note(message: str) -> None:
    """A remark that must not pollute --json stdout (e.g. 'model is untrained')."""
    typer.echo(message, err=True)


def note_nothing_finetuned(zero_flags: str, example: str) -> None:
    """After a missed budget with no fine-tuning at all: each point was judged on its raw loss, which fine-tuning
    recovers (an SR net lost 10-21 dB per raw pruning point and met every target with 20 + 300 steps)."""
    note(f"note: nothing was fine-tuned ({zero_flags}), so every point was judged on its raw loss; e.g. {example} "
         "recovers much of it")


def note_limited_judging(limit: int | None, result: Any) -> None:
    """After a missed ``max_drop`` in a search that scored its points on ``--limit`` validation images: the written
    model is judged on all of them, and a few images are a coarse scale (resnet56 searched on 200 CIFAR-10 images:
    the point chosen at a drop of 0.5 dropped 3.33 on all 10,000)."""
    drop = next((c for c in result.checks if c.name == "max_drop"), None)
    score = result.after.score if result.after is not None else None
    if limit is None or drop is None or drop.met or score is None or score.n <= limit:
        return
    grain = f"; one image moves {score.metric} by {100 / limit:.2g} points" if score.metric in ("top1", "top5") else ""
    note(f"note: the search judged its points on the first {limit:,} validation images (--limit{grain}), the written "
         f"model on all {score.n:,}: a larger --limit judges closer to that")


def parse_shape(text: str) -> tuple[int, ...]:
    """Parse ``1x3x224x224`` into ``(1, 3, 224, 224)``."""
    try:
        dims = tuple(int(t) for t in text.lower().replace("×", "x").split("x"))
    except ValueError:
        raise ConfigError(f"--input expects a shape like 1x3x224x224, got '{text}'") from None
    from slimcnn.measure import check_input_shape

    return check_input_shape(dims)


def parse_round_to(text: str) -> int:
    """``--round-to``: a positive int, or ``auto`` = ONNX Runtime's channel block on this CPU (16/8/1)."""
    if text.strip().lower() == "auto":
        from slimcnn.measure import ort_channel_block

        return ort_channel_block()
    try:
        value = int(text)
    except ValueError:
        raise ConfigError(f"--round-to expects a positive integer or 'auto', got '{text}'") from None
    if value < 1:
        raise ConfigError(f"--round-to must be >= 1 (or 'auto'), got {value}")
    return value


ROUND_TO_HELP = ("Round kept channels to a multiple of N; 'auto' = ONNX Runtime's channel block on this CPU (16 with "
                 "AVX-512, 8 with AVX2). Default: auto with --latency (odd widths run slow there: mobilenet_v2 at 0.5x "
                 "MACs ran 1.27x the original's time at 1, 0.61x at 8), else 1.")


def round_to_for(text: str | None, latency: str | None) -> int:
    """``--round-to``, by default the channel block when the target is time (:data:`ROUND_TO_HELP`), else 1."""
    return parse_round_to(text if text is not None else "auto" if latency is not None else "1")


TASK_NAMES: tuple[str, ...] = ("classification", "sr", "detection")


def data_or_both(data: str | None, train_data: str | None, val_data: str | None, *, required: bool = True) -> Any:
    """``--data``, or ``--val-data`` when ``--train-data`` and ``--val-data`` name both sides (``--data`` would then
    serve neither); else one line, or None where the data is optional (``required=False``)."""
    if data is not None:
        return data
    if train_data is not None and val_data is not None:
        return val_data
    if not required:
        return None
    raise ConfigError("Missing option '--data': give --data (trained on and scored), or both --train-data and "
                      "--val-data")


def check_task(task: str | None, data: str | None = None, *, data_required: bool = True) -> None:
    """Fail early, in one line, on an unknown ``--task`` or (where both are optional) one without ``--data``.

    ``--data`` alone is the model's own task (:func:`task_for`; one written by slimcnn knows it)."""
    if task is not None and task not in TASK_NAMES:
        import difflib

        close = difflib.get_close_matches(task, TASK_NAMES, n=1, cutoff=0.5)
        hint = f" Did you mean {close}?" if close else ""
        raise ConfigError(f"--task must be classification, sr or detection, got '{task}'.{hint}")
    if data_required and task is not None and data is None:
        raise ConfigError(f"--task {task} needs --data to measure on (e.g. --task classification --data digits)")


def task_for(task: str | None, data: str | None, info: Any) -> str | None:
    """The task a command measures on: ``--task``, else the model's own when ``--data`` is given, else None."""
    from slimcnn.tasks import resolve_task

    return resolve_task(task, info) if data is not None else None


def check_runtime(runtime: str | None) -> None:
    """Fail early, in one line, on a ``--runtime`` slimcnn does not time on (``None``: not given)."""
    from slimcnn.measure._latency import RUNTIMES

    if runtime is not None and runtime not in RUNTIMES:
        raise ConfigError(f"--runtime must be {' or '.join(RUNTIMES)}, got '{runtime}'")


def check_device(device: str) -> str:
    """Fail early, in one line, on a ``--device`` torch cannot use here."""
    import torch

    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"--device expects cpu, cuda or cuda:N, got '{device}'") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {device}: no CUDA GPU is usable here; use --device cpu")
    if dev.type == "cuda" and (dev.index or 0) >= torch.cuda.device_count():
        raise ConfigError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) here")
    if dev.type not in ("cpu", "cuda"):
        raise ConfigError(f"--device {device}: slimcnn trains on cpu or cuda")
    return device


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", "-V", help="Print the version and exit."),
) -> None:
    """Make trained CNNs small and fast for embedded and edge hardware, with measured proof.

    MODEL is a source string: torchvision:NAME, timm:NAME, ultralytics:FILE, file:PATH, python:pkg.module:factory or slimcnn:NAME (the built-in zoo). Add --debug for tracebacks.

    A compressed file:model.slimk / model.slim stays compressed: every command counts it as the file stores it (as analyze does) and keeps its removed kernels and codebooks through fine-tuning; train, prune, apply, search, compress and decompose write their result in that format too.
    """
    if version:  # `slimcnn --version` alone is answered before typer (cli.main); this is `--version COMMAND ...`
        from slimcnn.version import __version__

        typer.echo(f"slimcnn {__version__}")
        raise typer.Exit()


def load_for_cli(model: str, *, weights: str | None = None, arch: str | None = None, scale: int | None = None,
                 num_classes: int | None = None, seed: int | None = None, task: str | None = None,
                 data: str | None = None, val_data: str | None = None, input: str | None = None,
                 run: Any = None) -> Any:
    """Load MODEL like every command does, settle what it does not say (:func:`settle_info`) and print its
    notes (e.g. 'untrained') on stderr; with the open ``run``, they are the run's notes too (:func:`keep_model_notes`).

    ``seed`` seeds the initial weights of a model built without trained weights."""
    from slimcnn.models import load_model

    loaded = load_model(model, weights=weights, arch=arch, scale=scale, num_classes=num_classes, seed=seed)
    settle_info(loaded, task or loaded.info.task, data, val_data=val_data, input=input)
    for line in loaded.info.notes:
        note(f"note: {line}")
    if run is not None:
        keep_model_notes(run, loaded)
    return loaded


def keep_model_notes(run: Any, loaded: Any) -> None:
    """The loaded model's notes ('untrained: ...', a guessed input) go into the run's result.json and report: a
    report that says "every target met" on a random-weight model at chance accuracy must say so where it is read."""
    run.notes.extend(line for line in loaded.info.notes if line not in run.notes)


def check_torch_source(model: str, command: str, *, onnx_ok: bool = False) -> None:
    """Commands that change, train or profile a model need it as an eager ``nn.Module``: an ONNX file ran as if it
    had no layers (`compress` claimed "met" at 0 MACs -> 0 MACs, `prune` stopped on an IndexError), and a TorchScript
    archive takes no hooks and cannot be pickled (tracebacks). ``onnx_ok``: the command reads ONNX files itself."""
    from pathlib import Path

    from slimcnn.export._run import is_onnx_source
    from slimcnn.models._weights import is_torchscript

    if is_onnx_source(model) and not onnx_ok:
        raise ConfigError(f"{model} is an ONNX file, and `slimcnn {command}` changes the torch model: pass the model.pt "
                          "written beside it, or the model it was exported from (evaluate, analyze and export read ONNX "
                          "files)")
    path = Path(model.removeprefix("file:")).expanduser()
    if model.startswith("file:") and path.is_file() and is_torchscript(path):
        raise ConfigError(f"{model} is a TorchScript archive: `slimcnn {command}` needs the eager nn.Module (TorchScript "
                          "takes no layer hooks and does not pickle), so pass a torch.save(model) file or a state_dict "
                          "with --arch (`slimcnn evaluate` runs TorchScript)")


def check_exclude(model: Any, patterns: Sequence[str]) -> None:
    """A ``--exclude`` pattern that matches no module of the model would protect nothing, silently (a typo, or
    the names of another model): one line naming some of the model's layers instead."""
    import fnmatch

    names = [n for n, _ in model.named_modules() if n]
    for pat in patterns:
        if not any(fnmatch.fnmatch(n, pat) for n in names):
            layers = [n for n, m in model.named_modules() if n and hasattr(m, "weight") and not list(m.children())]
            shown = ", ".join((layers or names)[:6])
            raise ConfigError(f"--exclude '{pat}' matches no layer of the model, so it would leave nothing alone; its "
                              f"layers are named like {shown}, ... (`slimcnn analyze MODEL` lists them all)")


def settle_info(loaded: Any, kind: str | None, data: str | None, *, val_data: str | None = None,
                input: str | None = None, quiet: bool = False) -> None:
    """What a model that does not say (``python:``, bare ``file:``) is taken to be, before anything is built
    from ``loaded.info`` (the task, the example input, the saved sidecar): the task it is run as, and an
    input size from ``--input`` or the data instead of a guess, and for SR how it is fed and at what scale (said on
    stderr)."""
    from slimcnn.tasks import fit_input
    from slimcnn.tasks.sr import fit_sr

    if data is not None and loaded.info.task is None and kind in TASK_NAMES:  # files written from it know their task
        loaded.info = dataclasses.replace(loaded.info, task=kind)
    loaded.info, said = fit_input(loaded.info, kind, data if kind is not None else None, val_data=val_data,
                                  input_shape=parse_shape(input) if input else None)
    if said and not quiet:
        note(f"note: {said}")
    if kind == "sr":
        loaded.info, said = fit_sr(loaded.model, loaded.info)
        if said and not quiet:
            note(f"note: {said}")


def example_for(loaded: Any, input_shape: str | None, *, check: bool | None = None) -> Any:
    """A seeded random example input of ``input_shape`` or the model's default shape.

    ``check`` (default: when a shape is given, i.e. the user's ``--input``) runs one forward pass so a
    shape the model cannot take fails now, in one line naming ``--input``."""
    import torch

    shape = parse_shape(input_shape) if input_shape else tuple(loaded.info.input_shape)
    example = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    if input_shape if check is None else check:
        from slimcnn.measure._inputs import forward_error, run_model

        try:
            with torch.no_grad():
                run_model(loaded.model, example)
        except (RuntimeError, ValueError, TypeError, IndexError) as e:
            raise forward_error(loaded.model, example, e) from None
    return example


FORCE_HELP = "Replace an --out made with other options (slimcnn never overwrites folders it did not write)."
NUM_CLASSES_HELP = ("Classes of the model built (e.g. 10 for CIFAR-10); with --weights from another number of "
                    "classes, the classifier is new and the rest is loaded.")
RESUME_HELP = "Continue in an --out made with other options, reusing only the state whose options still match."


def input_files(model: str, weights: str | None) -> tuple[str, ...]:
    """The user's files a run must never write over: a ``file:`` model and ``--weights``."""
    return tuple(p for p in (model[len("file:"):] if model.startswith("file:") else None, weights) if p)


UNDER_TORCHRUN: tuple[str, ...] = ("train", "search")
"""Commands whose work is shared by torchrun's ranks (the others refuse WORLD_SIZE > 1 rather than write --out twice)."""


def open_run(command: str, out: Any, *, model: str, weights: str | None = None, data: dict[str, str | None] | None = None,
             options: dict[str, Any] | None = None, force: bool = False, resume: bool = False) -> Any:
    """Validate ``--out`` against the inputs and open its transaction (before any model is loaded)."""
    from slimcnn.run import Manifest, RunDir

    if force and resume:
        raise ConfigError("--force starts over and --resume continues: give one of them")
    if command not in UNDER_TORCHRUN and int(os.environ.get("WORLD_SIZE", "1")) > 1:  # every rank stops: none waits
        raise ConfigError(f"slimcnn {command} does not run under torchrun yet (only {' and '.join(UNDER_TORCHRUN)} do); "
                          "run it as one process")
    data = data or {}
    manifest = Manifest.of(command, model=model, weights=weights, data=data, options=options)
    return RunDir(out, manifest, force=force, resume=resume, inputs=input_files(model, weights),
                  data=tuple(data.values()))


def say_notes(run: Any) -> None:
    """Print what the transaction decided (resumed, started fresh and why) on stderr."""
    for line in run.notes:
        note(f"note: {line}")


def parse_amounts(text: str | None, method: str = "prune") -> tuple[float, ...] | None:
    """``"0.25,0.5"`` -> ``(0.25, 0.5)``; a one-line error for anything else.

    ``kmeans`` amounts are bits per weight (whole numbers 1..16); the other methods' are fractions
    removed, above 0 and below 1."""
    if text is None:
        return None
    try:
        vals = tuple(sorted({float(v) for v in text.split(",") if v.strip()}))
    except ValueError:
        vals = ()
    if not vals or any(v <= 0 for v in vals):
        raise ConfigError(f"--amounts must be positive numbers separated by commas, got '{text}'")
    if method == "kmeans":
        if any(v != int(v) or not 1 <= v <= 16 for v in vals):
            raise ConfigError(f"--amounts of --method kmeans are bits per weight, whole numbers 1 to 16 "
                              f"(e.g. 8,6,4), got '{text}'")
    elif any(v >= 1 for v in vals):
        raise ConfigError(f"--amounts of --method {method} are fractions removed, above 0 and below 1 "
                          f"(e.g. 0.25,0.5), got '{text}'")
    return vals
