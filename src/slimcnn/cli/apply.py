"""``slimcnn apply PLAN MODEL``: re-apply a saved pruning plan (plan.json) to an unpruned model."""

from __future__ import annotations

from pathlib import Path

import typer

from slimcnn.cli._app import app, emit_json, example_for, load_for_cli, say


@app.command("apply")
def apply_cmd(
    plan: Path = typer.Argument(..., help="plan.json written by slimcnn prune or slimcnn search."),
    model: str = typer.Argument(..., help="The same model source the plan was made on (unpruned)."),
    weights: str | None = typer.Option(None, "--weights", help="Local weights to load."),
    arch: str | None = typer.Option(None, "--arch", help="Architecture source for a file: holding a bare state_dict."),
    scale: int | None = typer.Option(None, "--scale", help="Super-resolution factor."),
    input: str | None = typer.Option(None, "--input", help="Input shape (default: the plan's, else the model's)."),
    task: str | None = typer.Option(None, "--task", help="Task of the calibration data a --compensate plan needs."),
    data: str | None = typer.Option(None, "--data", help="Data for --task (the same as at prune time)."),
    no_latency: bool = typer.Option(False, "--no-latency", help="Skip the ONNX Runtime latency comparison."),
    out: Path = typer.Option(..., "--out", help="Output directory."),
    as_json: bool = typer.Option(False, "--json", help="Print result.json on stdout."),
) -> int:
    """Re-apply PLAN (from prune or search) to the unpruned MODEL (structure fingerprint must match).

    A prune plan made with --compensate re-computes the folded biases from --task/--data (the same data
    and seed give the same model). Search plans replay the structure only (no fine-tuning, no compensation).
    """
    import copy

    from slimcnn._io import ensure_output_dir
    from slimcnn.cli.prune import finish_outputs
    from slimcnn.prune import apply_plan
    from slimcnn.search.plan import SearchPlan, apply_search_plan, load_plan

    p = load_plan(plan)
    loaded = load_for_cli(model, weights=weights, arch=arch, scale=scale)
    out_dir = ensure_output_dir(out, inputs=tuple(x for x in (str(plan), model.removeprefix("file:"), weights) if x))
    plan_shape = getattr(p, "input_shape", ())
    shape = input or ("x".join(map(str, plan_shape)) if plan_shape else None)
    example = example_for(loaded, shape)
    if isinstance(p, SearchPlan):
        new_model = apply_search_plan(loaded.model, p, example)
    else:
        batches: list = []
        if task and data:
            from slimcnn.tasks import make_task

            seed = int(p.options.get("seed", 0))
            task_obj = make_task(task, data, info=loaded.info, scale=scale, seed=seed)  # type: ignore[arg-type]
            batches = list(task_obj.calibration_batches(int(p.options.get("calib", 8))))
        new_model = copy.deepcopy(loaded.model)
        apply_plan(new_model, p, example, batches=batches)
    result = finish_outputs(loaded, new_model, example, out_dir, p, latency=not no_latency)
    if as_json:
        emit_json(result)
    else:
        say(f"applied {plan} to {loaded.source}: MACs {result['macs']['ratio']:.3f}x; wrote {out_dir}")
    return 0
