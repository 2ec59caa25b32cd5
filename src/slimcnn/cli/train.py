"""``slimcnn train MODEL --task T --data D --steps N --out DIR``: fine-tune with the shared loop."""

from __future__ import annotations

import dataclasses
from typing import Any

import typer

from slimcnn.cli._app import app, check_device, emit_json, note, say
from slimcnn.cli.evaluate import DATA_HELP, TASK_HELP, format_score, model_notes, resolve_task, score_to_json


def _input_files(model: str, weights: str | None) -> tuple[str, ...]:
    files = [weights] if weights else []
    if model.startswith("file:"):
        files.append(model[len("file:"):])
    return tuple(files)


@app.command("train")
def train_cmd(
    model: str = typer.Argument(..., help="Model source, e.g. slimcnn:lenet5, file:DIR/model.pt."),
    task: str | None = typer.Option(None, "--task", help=TASK_HELP),
    data: str = typer.Option(..., "--data", help=DATA_HELP + " Evaluated before and after."),
    steps: int = typer.Option(..., "--steps", help="Optimiser steps."),
    out: str = typer.Option(..., "--out", help="Output directory: model.pt (+ model.json) and result.json."),
    train_data: str | None = typer.Option(None, "--train-data", help="Training data (default: see the task)."),
    weights: str | None = typer.Option(None, "--weights", help="Local weights (state_dict) to start from."),
    arch: str | None = typer.Option(None, "--arch", help="Architecture source for a file: holding a bare state_dict."),
    scale: int | None = typer.Option(None, "--scale", help="Super-resolution factor."),
    lr: float | None = typer.Option(None, "--lr", help="Peak learning rate (task default)."),
    optimizer: str | None = typer.Option(None, "--optimizer", help="sgd, adam or adamw (task default)."),
    batch_size: int | None = typer.Option(None, "--batch-size", help="Batch size (task default)."),
    warmup_steps: int | None = typer.Option(None, "--warmup-steps", help="Linear warm-up steps."),
    schedule: str | None = typer.Option(None, "--schedule", help="cosine, constant or step."),
    checkpoint_every: int = typer.Option(0, "--checkpoint-every", help="Write DIR/checkpoint.pt every N steps; resume from it."),
    limit: int | None = typer.Option(None, "--limit", help="Evaluate on the first N images only."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, ..."),
    seed: int = typer.Option(0, "--seed", help="Shuffling/augmentation/dropout seed."),
    as_json: bool = typer.Option(False, "--json", help="Print exactly one JSON object on stdout."),
) -> int:
    """Fine-tune MODEL on a task's training data and write DIR/model.pt (load it as file:DIR/model.pt)."""
    from slimcnn._io import ensure_output_dir, write_json
    from slimcnn.models import LoadedModel, load_model, save_model
    from slimcnn.tasks import make_task

    check_device(device)
    out_dir = ensure_output_dir(out, inputs=_input_files(model, weights))
    loaded = load_model(model, weights=weights, arch=arch, scale=scale)
    kind = resolve_task(task, loaded.info)
    t = make_task(kind, data, info=loaded.info, scale=scale, train_data=train_data, batch_size=batch_size, seed=seed)
    model_notes(loaded.info, loaded.source)
    options: dict[str, Any] = {k: v for k, v in {
        "lr": lr, "optimizer": optimizer, "batch_size": batch_size, "warmup_steps": warmup_steps, "schedule": schedule,
    }.items() if v is not None}
    if checkpoint_every:
        options.update(checkpoint=out_dir / "checkpoint.pt", checkpoint_every=checkpoint_every)
    before = t.evaluate(loaded.model, limit=limit, device=device)
    (note if as_json else say)(f"before: {format_score(before)}")
    stats = t.finetune(loaded.model, steps, device=device, seed=seed, progress=not as_json, **options)
    after = t.evaluate(loaded.model, limit=limit, device=device)
    trained = " ".join(f"{k}={v}" for k, v in options.items() if k != "checkpoint")
    info = dataclasses.replace(
        loaded.info, pretrained=True, weights=None,
        notes=(*loaded.info.notes, f"fine-tuned by slimcnn train: {kind} on {data}, {steps} steps {trained}".rstrip()),
    )
    path = save_model(LoadedModel(loaded.model, loaded.source, info), out_dir / "model.pt")
    result = {
        "source": loaded.source, "task": kind, "data": data, "train_data": train_data, "steps": steps,
        "options": {k: str(v) for k, v in options.items()}, "seed": seed,
        "before": score_to_json(before), "after": score_to_json(after), "train": dataclasses.asdict(stats),
        "model": str(path), "pretrained_before": loaded.info.pretrained,
    }
    write_json(out_dir / "result.json", result)
    if as_json:
        emit_json({**result, "out": str(out_dir)})
    else:
        say(f"after:  {format_score(after)}")
        say(f"trained {stats.steps} steps in {stats.seconds:.1f}s ({stats.samples_per_s:.0f} samples/s, "
            f"final loss {stats.final_loss:.4f}); wrote {path} (load it as file:{path})")
    return 0
