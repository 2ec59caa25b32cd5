"""``slimcnn evaluate MODEL --task T --data D``: score a model on a task's data."""

from __future__ import annotations

from typing import Any

import typer

from slimcnn.cli._app import app, check_device, check_task, emit_json, note, say, settle_info
from slimcnn.errors import ConfigError
from slimcnn.types import Score

_UNITS = {"top1": "%", "top5": "%", "psnr": "dB"}

TASK_HELP = "Task: classification, sr or detection (default: the model's own task)."
DATA_HELP = "Data: a folder, an ImageFolder .tar, a CIFAR folder, or a built-in set (digits, photos)."
# train, decompose, search and compress: one --data for both, --train-data / --val-data override either side
BOTH_DATA_HELP = DATA_HELP + " Trained on and scored unless --train-data / --val-data."
TRAIN_DATA_HELP = ("Training data (default: --data; without --val-data, a set with splits trains on its train split "
                   "and a test set on the training set beside it).")
VAL_DATA_HELP = "Validation data, scored before and after (default: --data)."


def format_score(score: Score) -> str:
    """``top1 83.20 %  top5 99.12 %  (n=10000, test-10k.tar:test)``."""
    order = [score.metric] + [k for k in score.metrics if k != score.metric]
    parts = []
    for k in order:
        v = score.metrics.get(k, score.value if k == score.metric else None)
        if v is not None:
            unit = _UNITS.get(k, "dB" if k.startswith("psnr") else "")
            # % and dB to 2 decimals; fractions (SSIM, mAP, miss rate) to 4 digits: "map50 0.02" hid 0.0196
            parts.append(f"{k} {v:.2f} {unit}" if unit and abs(v) >= 1e-2 else f"{k} {v:.4g}")
    return "  ".join(parts) + f"  (n={score.n}, {score.dataset})"


def score_to_json(score: Score) -> dict[str, Any]:
    """The Score fields as a plain dict."""
    return {"metric": score.metric, "value": score.value, "higher_is_better": score.higher_is_better,
            "metrics": dict(score.metrics), "n": score.n, "dataset": score.dataset}


def model_notes(info: Any, source: str) -> None:
    """Print the model's notes and, for a model built with random weights, say so (stderr).

    A ``file:`` model holds whatever weights were saved in it (trained or not): only its own notes
    (from its sidecar) are printed, never a guess that it is untrained.
    """
    lines = [str(line) for line in getattr(info, "notes", ())]
    for line in lines:
        note(f"note: {line}")
    if source.startswith("file:") or getattr(info, "pretrained", False):
        return
    if not any("untrained" in line for line in lines):
        note(f"note: {source} has no trained weights (random init); its score is meaningless until trained")


@app.command("evaluate")
def evaluate_cmd(
    model: str = typer.Argument(..., help="Model source, e.g. slimcnn:resnet56, torchvision:resnet18, file:model.pt."),
    task: str | None = typer.Option(None, "--task", help=TASK_HELP),
    data: str = typer.Option(..., "--data", help=DATA_HELP),
    scale: int | None = typer.Option(None, "--scale", help="Super-resolution factor."),
    weights: str | None = typer.Option(None, "--weights", help="Local weights (state_dict) to load."),
    arch: str | None = typer.Option(None, "--arch", help="Architecture source for a file: holding a bare state_dict."),
    limit: int | None = typer.Option(None, "--limit", help="Evaluate on the first N images only."),
    batch_size: int | None = typer.Option(None, "--batch-size", help="Evaluation batch size (task default)."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:1, ..."),
    seed: int = typer.Option(0, "--seed", help="Seed of a model built with random weights (no --weights)."),
    as_json: bool = typer.Option(False, "--json", help="Print exactly one JSON object on stdout."),
) -> int:
    """Score MODEL on a task's data (top-1/top-5 %, PSNR/SSIM dB, mAP)."""
    from slimcnn.models import load_model
    from slimcnn.tasks import make_task, resolve_task

    check_device(device)
    check_task(task, data_required=False)
    for flag, value in (("--limit", limit), ("--batch-size", batch_size), ("--scale", scale)):
        if value is not None and value < 1:
            raise ConfigError(f"{flag} must be >= 1, got {value}")
    loaded = load_model(model, weights=weights, arch=arch, scale=scale, seed=seed)
    kind = resolve_task(task, loaded.info)
    settle_info(loaded, kind, data)
    t = make_task(kind, data, info=loaded.info, scale=scale, batch_size=batch_size)
    model_notes(loaded.info, loaded.source)
    score = t.evaluate(loaded.model, limit=limit, device=device)
    if as_json:
        emit_json({**score_to_json(score), "task": kind, "source": loaded.source, "pretrained": loaded.info.pretrained})
    else:
        say(f"{loaded.source}: {format_score(score)}")
    return 0
