"""``slimcnn train MODEL --task T --data D --steps N --out DIR``: fine-tune with the shared loop."""

from __future__ import annotations

import dataclasses
from typing import Any

import typer

from slimcnn.cli._app import (
    FORCE_HELP,
    NUM_CLASSES_HELP,
    RESUME_HELP,
    app,
    check_device,
    check_torch_source,
    data_or_both,
    emit_json,
    note,
    open_run,
    say,
    say_notes,
    settle_info,
)
from slimcnn.cli.evaluate import (
    BOTH_DATA_HELP,
    TASK_HELP,
    TRAIN_DATA_HELP,
    VAL_DATA_HELP,
    format_score,
    model_notes,
)
from slimcnn.errors import ConfigError


@app.command("train")
def train_cmd(
    model: str = typer.Argument(..., help="Model source, e.g. slimcnn:lenet5, file:DIR/model.pt."),
    task: str | None = typer.Option(None, "--task", help=TASK_HELP),
    data: str | None = typer.Option(None, "--data", help=BOTH_DATA_HELP),
    steps: int = typer.Option(..., "--steps", help="Optimiser steps."),
    out: str = typer.Option(..., "--out", help="Output directory: model.pt (+ model.json), result.json, manifest.json."),
    train_data: str | None = typer.Option(None, "--train-data", help=TRAIN_DATA_HELP),
    val_data: str | None = typer.Option(None, "--val-data", help=VAL_DATA_HELP),
    weights: str | None = typer.Option(None, "--weights", help="Local weights (state_dict) to start from."),
    arch: str | None = typer.Option(None, "--arch", help="Architecture source for a file: holding a bare state_dict."),
    scale: int | None = typer.Option(None, "--scale", help="Super-resolution factor."),
    num_classes: int | None = typer.Option(None, "--num-classes", help=NUM_CLASSES_HELP),
    lr: float | None = typer.Option(None, "--lr", help="Peak learning rate (task default)."),
    optimizer: str | None = typer.Option(None, "--optimizer", help="sgd, adam or adamw (task default)."),
    batch_size: int | None = typer.Option(None, "--batch-size", help="Batch size (task default)."),
    warmup_steps: int | None = typer.Option(None, "--warmup-steps", help="Linear warm-up steps."),
    schedule: str | None = typer.Option(None, "--schedule", help="cosine, constant or step."),
    checkpoint_every: int = typer.Option(0, "--checkpoint-every", help="Checkpoint every N steps (0: about every tenth of the run); an interrupted run resumes from it."),
    limit: int | None = typer.Option(None, "--limit", help="Evaluate on the first N images only."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, ... (under torchrun, cuda is each rank's GPU)."),
    amp: str | None = typer.Option(None, "--amp", help="Mixed precision: bf16, or fp16 (with a GradScaler); default fp32."),
    channels_last: bool = typer.Option(False, "--channels-last", help="Train in channels-last memory order (faster on CUDA)."),
    seed: int = typer.Option(0, "--seed", help="Shuffling/augmentation/dropout seed."),
    force: bool = typer.Option(False, "--force", help=FORCE_HELP),
    resume: bool = typer.Option(False, "--resume", help=RESUME_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print exactly one JSON object on stdout."),
) -> int:
    """Fine-tune MODEL on a task's training data and write DIR/model.pt (load it as file:DIR/model.pt).

    A file:MODEL.slimk or .slim keeps its compression (removed kernels stay zero, k-means codebook indices stay)
    and the trained model is written in that format too.

    Progress is checkpointed in the run's staging folder (every --checkpoint-every steps, default about
    every tenth of the run): after Ctrl-C or a crash, the same command resumes from the last checkpoint.

    Under ``torchrun --nproc-per-node N`` (or several nodes through its rendezvous) the fine-tune runs
    DistributedDataParallel with --batch-size as the global batch (a multiple of N); rank 0 writes DIR.
    """
    check_torch_source(model, "train")
    import time

    import torch

    from slimcnn.models import LoadedModel, load_model, save_model
    from slimcnn.models.files import trained_notes
    from slimcnn.run import Measured, RunResult, environment, write_run
    from slimcnn.run._artifacts import compact_source
    from slimcnn.search._stored import write_as_input
    from slimcnn.tasks import make_task, resolve_task
    from slimcnn.train import AMP_DTYPES, is_main, join_from_env, keep_promises

    check_device(device)
    data = data_or_both(data, train_data, val_data)
    if amp is not None and amp not in AMP_DTYPES:
        raise ConfigError(f"--amp must be {' or '.join(AMP_DTYPES)}, got '{amp}'")
    if steps < 1:
        raise ConfigError(f"--steps must be >= 1, got {steps}")
    for flag, value in (("--lr", lr), ("--batch-size", batch_size), ("--limit", limit), ("--num-classes", num_classes)):
        if value is not None and value <= 0:
            raise ConfigError(f"{flag} must be above 0, got {value}")
    if warmup_steps is not None and warmup_steps < 0:
        raise ConfigError(f"--warmup-steps must be >= 0, got {warmup_steps}")
    if checkpoint_every < 0:
        raise ConfigError(f"--checkpoint-every must be >= 0, got {checkpoint_every}")
    if optimizer is not None and optimizer not in ("sgd", "adam", "adamw"):
        raise ConfigError(f"--optimizer must be sgd, adam or adamw, got '{optimizer}'")
    if schedule is not None and schedule not in ("cosine", "constant", "step"):
        raise ConfigError(f"--schedule must be cosine, constant or step, got '{schedule}'")
    if task is not None and task not in ("classification", "sr", "detection"):
        raise ConfigError(f"--task must be classification, sr or detection, got '{task}'")
    if task == "detection" and (amp or channels_last):
        raise ConfigError("--amp and --channels-last apply to classification and sr fine-tuning; drop them for detection")
    options: dict[str, Any] = {k: v for k, v in {
        "lr": lr, "optimizer": optimizer, "batch_size": batch_size, "warmup_steps": warmup_steps, "schedule": schedule,
        "amp": amp, "channels_last": channels_last or None,
    }.items() if v is not None}
    manifest_options = {**options, "task": task, "steps": steps, "seed": seed, "arch": arch, "scale": scale, "num_classes": num_classes,
                        "limit": limit, "device": device}
    every = checkpoint_every or max(steps // 10, 1)
    if join_from_env(device) and not is_main():
        _train_other_rank(model, weights=weights, arch=arch, scale=scale, num_classes=num_classes, seed=seed, task=task, data=data,
                          train_data=train_data, val_data=val_data, batch_size=batch_size, steps=steps, device=device, every=every,
                          options=options)
        return 0
    with open_run("train", out, model=model, weights=weights, data={"data": data, "train_data": train_data, "val_data": val_data},
                  options=manifest_options, force=force, resume=resume) as run:
        say_notes(run)
        ckpt = run.state_file("checkpoint.pt")
        _share_checkpoint_path(ckpt)
        if ckpt.exists():
            done = int(torch.load(ckpt, map_location="cpu", weights_only=True)["step"])
            note(f"resuming: step {done} of {steps} (checkpoint of an interrupted run with the same options)")
        loaded = load_model(model, weights=weights, arch=arch, scale=scale, num_classes=num_classes, seed=seed)
        kind = resolve_task(task, loaded.info)
        settle_info(loaded, kind, data, val_data=val_data)
        t = make_task(kind, data, info=loaded.info, scale=scale, train_data=train_data, val_data=val_data,
                      batch_size=batch_size, seed=seed)
        model_notes(loaded.info, loaded.source)
        before = t.evaluate(loaded.model, limit=limit, device=device)
        (note if as_json else say)(f"before: {format_score(before)}")
        promises = compact_source(model)
        with keep_promises(loaded.model, promises):
            stats = t.finetune(loaded.model, steps, device=device, seed=seed, progress=not as_json, checkpoint=ckpt,
                               checkpoint_every=every, **options)
        after = t.evaluate(loaded.model, limit=limit, device=device)
        trained = " ".join(f"{k}={v}" for k, v in options.items())
        trained_on = getattr(getattr(t, "eval_set", None), "classes", None)  # the classes the model now predicts
        info = dataclasses.replace(
            loaded.info, pretrained=True, weights=None,
            classes=tuple(trained_on) if trained_on is not None else loaded.info.classes,
            notes=(*trained_notes(loaded.info.notes), f"fine-tuned by slimcnn train: {kind} on {data}, {steps} steps {trained}".rstrip()),
        )
        save_model(LoadedModel(loaded.model, loaded.source, info), run.path / "model.pt")
        # the trained model in the compact format its source had (details.slimk / details.slim)
        stored = write_as_input(run.path, loaded, loaded.model, promises)
        skipped = getattr(t, "skipped", None)  # streamed images that could not be decoded
        skipped_details = {"skipped_images": skipped.count, "skipped_examples": skipped.examples} if skipped else {}
        result = RunResult("train", loaded.source, task=kind, before=Measured(before), after=Measured(after),
                           options=manifest_options | {"data": data, "train_data": train_data, "val_data": val_data,
                                                              "checkpoint_every": every},
                           details={"train": dataclasses.asdict(stats), "pretrained_before": loaded.info.pretrained,
                                    **skipped_details, **stored},
                           seconds=round(time.perf_counter() - run.started, 2), environment=environment(seed))
        path = write_run(run, result) / "model.pt"
    if as_json:
        from slimcnn.run import read_result

        emit_json(read_result(run.out))
    else:
        say(f"after:  {format_score(after)}")
        if skipped:
            say(f"skipped {skipped.count} undecodable image(s), e.g. {skipped.examples[0]}")
        say(f"trained {stats.steps} steps in {stats.seconds:.1f}s ({stats.samples_per_s:.0f} samples/s, "
            f"final loss {stats.final_loss:.4f}); wrote {path} (load it as file:{path})")
        for fmt, kept in (("slimk", "its removed kernels still zero"), ("slim", "its k-means codebooks kept")):
            if fmt in stored:
                say(f"and {path.parent / ('model.' + fmt)} ({kept}, as in {model}; "
                    f"{stored[fmt]['weight_bytes']:,} weight bytes)")
    return 0


def _share_checkpoint_path(path: Any) -> Any:
    """Rank 0's checkpoint file, sent to every rank (they resume from it too; only rank 0 writes it)."""
    from slimcnn.train import world

    if world()[1] == 1:
        return path
    import torch.distributed as dist

    box = [path]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _train_other_rank(model: str, *, weights: str | None, arch: str | None, scale: int | None, num_classes: int | None,
                      seed: int,
                      task: str | None, data: str, train_data: str | None, val_data: str | None, batch_size: int | None, steps: int,
                      device: str, every: int, options: dict[str, Any]) -> None:
    """A rank other than 0 under torchrun: the same fine-tune (its slice of each batch), no outputs."""
    from slimcnn.models import load_model
    from slimcnn.run._artifacts import compact_source
    from slimcnn.tasks import make_task, resolve_task
    from slimcnn.train import keep_promises

    ckpt = _share_checkpoint_path(None)
    loaded = load_model(model, weights=weights, arch=arch, scale=scale, num_classes=num_classes, seed=seed)
    kind = resolve_task(task, loaded.info)
    settle_info(loaded, kind, data, val_data=val_data, quiet=True)
    t = make_task(kind, data, info=loaded.info, scale=scale, train_data=train_data, val_data=val_data,
                  batch_size=batch_size, seed=seed)
    with keep_promises(loaded.model, compact_source(model)):  # the same parametrizations on every rank
        t.finetune(loaded.model, steps, device=device, seed=seed, progress=False, checkpoint=ckpt,
                   checkpoint_every=every, **options)
