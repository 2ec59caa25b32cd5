"""``slimcnn apply PLAN MODEL``: replay any plan.json (prune, kernel, grouped, low-rank, k-means, search) on MODEL."""

from __future__ import annotations

from pathlib import Path

import typer

from slimcnn.cli._app import (
    FORCE_HELP,
    RESUME_HELP,
    app,
    check_task,
    check_torch_source,
    example_for,
    load_for_cli,
    note,
    open_run,
    parse_shape,
    say_notes,
    task_for,
)


@app.command("apply")
def apply_cmd(
    plan: Path = typer.Argument(..., help="plan.json written by any slimcnn command (or its run folder)."),
    model: str = typer.Argument(..., help="The model source the plan was made on (unchanged)."),
    weights: str | None = typer.Option(None, "--weights", help="Local weights to load."),
    arch: str | None = typer.Option(None, "--arch", help="Architecture source for a file: holding a bare state_dict."),
    scale: int | None = typer.Option(None, "--scale", help="Super-resolution factor."),
    input: str | None = typer.Option(None, "--input", help="Input shape (default: the plan's, else the model's)."),
    task: str | None = typer.Option(None, "--task", help="Task of the calibration data a --compensate plan needs (default: the model's own task)."),
    data: str | None = typer.Option(None, "--data", help="Data for --task (the same as at prune time)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the initial weights of a model without trained weights (as in the run)."),
    no_latency: bool = typer.Option(False, "--no-latency", help="Skip the ONNX Runtime latency comparison."),
    out: Path = typer.Option(..., "--out", help="Output directory."),
    force: bool = typer.Option(False, "--force", help=FORCE_HELP),
    resume: bool = typer.Option(False, "--resume", help=RESUME_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print result.json on stdout."),
) -> int:
    """Replay PLAN on the unchanged MODEL (its structure fingerprint must match) and write the result.

    The steps replay bit-identically: kept channels, kept kernels, groups, low-rank factors, k-means
    codebooks. Fine-tuning is not replayed: a plan from a run that fine-tuned gives the structure
    with the original weights. A channel-pruning plan made with --compensate re-computes the folded
    biases from --task/--data (the same data and seed give the same model).
    """
    check_torch_source(model, "apply")
    from slimcnn.cli._finish import finish_run, report_run
    from slimcnn.run import Plan, apply_plan

    check_task(task, data)
    p = Plan.load(plan)
    shape = input or ("x".join(map(str, p.input_shape)) if p.input_shape else None)
    if shape:
        parse_shape(shape)
    options = {"plan": str(plan), "input": shape, "seed": seed, "task": task, "arch": arch, "scale": scale, "latency": not no_latency,
               "steps": [s.transform for s in p.steps]}
    with open_run("apply", out, model=model, weights=weights, data={"data": data}, options=options, force=force,
                  resume=resume) as run:
        say_notes(run)
        if p.finetuned:
            note("note: the run that made this plan fine-tuned its weights; a plan replays the structure and the "
                 "transform's own weights, so this model has the original (not fine-tuned) weights")
        loaded = load_for_cli(model, weights=weights, arch=arch, scale=scale, seed=seed, task=task, data=data, input=shape, run=run)
        example = example_for(loaded, shape, check=input is not None)
        task = task_for(task, data, loaded.info)
        batches: list = []
        task_obj = None
        if task and data:
            from slimcnn.tasks import make_task

            seeds = [int(s.params.get("options", {}).get("seed", 0)) for s in p.steps if s.transform == "prune_channels"]
            task_obj = make_task(task, data, info=loaded.info, scale=scale, seed=seeds[0] if seeds else 0)  # type: ignore[arg-type]
            calib = [int(s.params.get("options", {}).get("calib", 8)) for s in p.steps if s.transform == "prune_channels"]
            batches = list(task_obj.calibration_batches(calib[0] if calib else 8))
        new_model = apply_plan(loaded.model, p, example, batches=batches)
        result = finish_run(run, "apply", loaded, new_model, example, p.steps, task_obj, limit=None,
                            latency=not no_latency, options=options, details={"finetuned_in_original_run": p.finetuned},
                            seed=None, finetuned=False, compact=True)
    report_run(result, run.out, as_json)
    return 0
