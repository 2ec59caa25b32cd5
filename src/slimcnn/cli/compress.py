"""``slimcnn compress MODEL``: one run to a quality target and hardware targets, across methods."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import typer

from slimcnn.cli._app import (
    FORCE_HELP,
    RESUME_HELP,
    ROUND_TO_HELP,
    app,
    check_device,
    check_exclude,
    check_runtime,
    check_task,
    check_torch_source,
    data_or_both,
    emit_json,
    example_for,
    load_for_cli,
    note,
    note_limited_judging,
    note_nothing_finetuned,
    open_run,
    parse_amounts,
    parse_shape,
    round_to_for,
    say,
    say_notes,
    say_wrote,
)
from slimcnn.cli.evaluate import BOTH_DATA_HELP, TASK_HELP, TRAIN_DATA_HELP
from slimcnn.errors import ConfigError


@app.command("compress")
def compress_cmd(
    model: str = typer.Argument(..., help="Model source, e.g. slimcnn:resnet56, file:model.pt."),
    task: str | None = typer.Option(None, "--task", help=TASK_HELP),
    data: str | None = typer.Option(None, "--data", help=BOTH_DATA_HELP),
    train_data: str | None = typer.Option(None, "--train-data", help=TRAIN_DATA_HELP),
    val_data: str | None = typer.Option(None, "--val-data", help="Validation data: the drop is measured on it against the original (default: --data)."),
    test_data: str | None = typer.Option(None, "--test-data", help="Held-out test data, scored before/after for the report."),
    max_drop: str = typer.Option(..., "--max-drop", help="Allowed drop against the ORIGINAL: 1 (points/dB), 0.2dB or 1%."),
    macs: str | None = typer.Option(None, "--macs", help="MACs target: 0.5x or 300M."),
    params: str | None = typer.Option(None, "--params", help="Parameter target: 0.5x or 1M."),
    weight_bytes: str | None = typer.Option(None, "--weight-bytes", help="Weight memory target: 0.1x, 256KB, 4MiB."),
    latency: str | None = typer.Option(None, "--latency", help="ONNX Runtime latency target: 0.6x or 12ms."),
    activation_bytes: str | None = typer.Option(None, "--activation-bytes", help="Peak activation memory target at --input (on-chip SRAM): 0.5x or 256KB."),
    recipe: str = typer.Option("auto", "--recipe", help="auto, or stages in order: prune[:criterion], cpo, iterative, latency (widths from the latency table), kernel, lowrank, then kmeans or int8 (e.g. prune,kmeans; latency,int8)."),
    recovery: str = typer.Option("kd", "--recovery", help="Fine-tuning inside every stage: kd (distil from the original) or plain (task labels)."),
    finetune_steps: int = typer.Option(0, "--finetune-steps", help="Fine-tuning steps per measured point in every stage."),
    recovery_steps: int = typer.Option(0, "--recovery-steps", help="Fine-tuning steps of each stage's chosen model before it is judged (the search's points get --finetune-steps)."),
    lr: float | None = typer.Option(None, "--lr", help="Fine-tuning learning rate (task default)."),
    limit: int | None = typer.Option(None, "--limit", help="Validation images used while searching (results use all)."),
    amounts: str | None = typer.Option(None, "--amounts", help="Fractions a structural stage's sweep tries, e.g. 0.25,0.5,0.75."),
    round_to: str | None = typer.Option(None, "--round-to", help=ROUND_TO_HELP),
    exclude: list[str] = typer.Option([], "--exclude", help="fnmatch pattern of layers to leave alone (repeatable)."),
    codebook: str = typer.Option("fp32", "--codebook", help="kmeans stage: centroids stored as fp32 or fp16 in model.slim (fp16 halves the codebook bytes counted against --weight-bytes; the model uses the rounded centroids)."),
    compensate: str = typer.Option("none", "--compensate", help="Channel-pruning stages: none, mean (removed channels' mean activations folded into the next layers' bias) or lsq (the next layers refitted by least squares; far smaller drops before fine-tuning, a calibration pass per pruning)."),
    runtime: str | None = typer.Option(None, "--runtime", help="Latency runtime: onnxruntime (default with --latency) or torch."),
    threads: int | None = typer.Option(None, "--threads", help="Runtime threads."),
    input: str | None = typer.Option(None, "--input", help="Input shape for costs and latency, e.g. 1x3x32x32."),
    device: str = typer.Option("cpu", "--device", help="Where fine-tuning and evaluation run: cpu, cuda, ..."),
    scale: int | None = typer.Option(None, "--scale", help="Super-resolution factor."),
    weights: str | None = typer.Option(None, "--weights", help="Local weights (state_dict) to load."),
    arch: str | None = typer.Option(None, "--arch", help="Architecture source for a file: holding a bare state_dict."),
    seed: int = typer.Option(0, "--seed", help="Seed of a model built with random weights and of the data order."),
    out: Path = typer.Option(..., "--out", help="Output directory."),
    force: bool = typer.Option(False, "--force", help=FORCE_HELP),
    resume: bool = typer.Option(False, "--resume", help=RESUME_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print result.json on stdout."),
) -> int:
    """Reach --max-drop and every hardware target in one run, combining methods (stages), judged on the original.

    `auto` prunes channels first for MACs/params/latency targets; then int8 (ONNX Runtime) last for a latency
    target when int8 runs the original faster, else k-means weight sharing last for a byte target (also with a latency target when the byte ratio
    is under a quarter of the latency ratio: more than int8's 8-bit weights can serve); each stage gets the
    budget that is left. With
    int8, model.onnx is the int8 model every 'after' number is measured on. Exit code 1 when a target is not met (the closest
    model is written).
    """
    check_torch_source(model, "compress")
    from slimcnn.compress import CompressSpec, assign_targets, auto_recipe, compress, parse_recipe
    from slimcnn.compress._int8 import INT8_FACTORS
    from slimcnn.compress._outputs import write_compress_run
    from slimcnn.compress._run import check_codebook
    from slimcnn.prune._compensate import compensation_mode
    from slimcnn.run import read_result
    from slimcnn.run._artifacts import compact_source
    from slimcnn.search import Budget
    from slimcnn.search.budget import parse_drop

    check_device(device)
    data = data_or_both(data, train_data, val_data)
    check_task(task, data_required=False)
    if recovery not in ("kd", "plain"):
        raise ConfigError(f"--recovery must be kd or plain, got '{recovery}'")
    for flag, value, low in (("--finetune-steps", finetune_steps, 0), ("--recovery-steps", recovery_steps, 0), ("--limit", limit, 1), ("--threads", threads, 1)):
        if value is not None and value < low:
            raise ConfigError(f"{flag} must be >= {low}, got {value}")
    if lr is not None and lr <= 0:
        raise ConfigError(f"--lr must be above 0, got {lr}")
    check_runtime(runtime)
    parse_drop(max_drop)
    budget = Budget.from_options(max_drop=max_drop, macs=macs, params=params, weight_bytes=weight_bytes, latency=latency,
                                 activation_bytes=activation_bytes)
    if not budget.limits:
        raise ConfigError("give a hardware target: one of --macs, --params, --weight-bytes, --latency, "
                          "--activation-bytes")
    if latency is not None and runtime is None:
        runtime = "onnxruntime"
    stages = parse_recipe(recipe) or auto_recipe(set(budget.limits), runtime)
    assign_targets(stages, set(budget.limits))
    check_codebook(codebook, stages)
    if stages[-1].method == "int8" and runtime not in (None, "onnxruntime"):
        raise ConfigError(f"--recipe ...,int8 is judged in ONNX Runtime; drop --runtime {runtime} or use onnxruntime")
    if input:
        parse_shape(input)
    spec = CompressSpec(recipe=recipe, finetune_steps=finetune_steps, recovery_steps=recovery_steps, finetune={"lr": lr} if lr is not None else {},
                        recovery=recovery, limit=limit, runtime=runtime, threads=threads,
                        round_to=round_to_for(round_to, latency), amounts=parse_amounts(amounts), device=device,
                        exclude=tuple(exclude), compensate=compensation_mode(compensate) or "none", codebook=codebook)
    options = {**dataclasses.asdict(spec), "max_drop": max_drop, "macs": macs, "params": params,
               "weight_bytes": weight_bytes, "latency": latency, "activation_bytes": activation_bytes, "task": task, "scale": scale, "arch": arch,
               "input": input, "seed": seed}
    with open_run("compress", out, model=model, weights=weights,
                  data={"data": data, "train_data": train_data, "val_data": val_data, "test_data": test_data}, options=options, force=force,
                  resume=resume) as run:
        say_notes(run)
        state = run.path / "stages"
        run.state_file(f"stages/{INT8_FACTORS}")
        for i in range(len(stages)):
            run.state_file(f"stages/stage-{i}.pt")
            run.state_file(f"stages/sensitivity-{i}.json")
            run.state_file(f"stages/trials-{i}.pt")
        state.mkdir(exist_ok=True)
        loaded = load_for_cli(model, weights=weights, arch=arch, scale=scale, seed=seed, task=task, data=data,
                              val_data=val_data, input=input, run=run)
        check_exclude(loaded.model, exclude)
        from slimcnn.tasks import make_task, resolve_task

        task = resolve_task(task, loaded.info)
        task_obj = make_task(task, data, info=loaded.info, scale=scale, train_data=train_data, val_data=val_data, seed=seed)
        test_obj = make_task(task, test_data, info=loaded.info, scale=scale, seed=seed) if test_data else None
        x = example_for(loaded, input) if input else task_obj.example_input()
        res = compress(loaded.model, task_obj, budget, spec, example_input=x, source=loaded.source,
                       progress=not as_json, state_dir=state, on_stage=lambda i, s, line: note(line),
                       promises=compact_source(model))
        result = write_compress_run(run, loaded, res, x, options=options, task=task, test_task=test_obj)
    if as_json:
        emit_json(read_result(run.out))
    else:
        from slimcnn.report.tables import fmt_metric
        from slimcnn.run._measure import summary_line

        for s in result.details["stages"]:
            say(f"  stage {s['name']}: {s['score']['metric']} {fmt_metric(s['score']['value'])} (drop {s['drop']:.3g} vs the "
                f"original), MACs {s['cost']['macs']:,}, weight bytes {s['cost']['weight_bytes']:,}")
        say(summary_line(result.before, result.after))
        for c in result.checks:
            say(f"  {c.line()}")
        say_wrote(run.out)
    if not result.met:
        note(f"budget NOT met: the closest model reached is saved in {run.out} (exit code 1)")
        knapsack_only = all(s.strategy == "latency" for s in stages)
        # the drop or a target a within-drop point would reach; a latency knapsack's widths do not depend on the loss
        if finetune_steps == 0 and recovery_steps == 0 and not knapsack_only:
            note_nothing_finetuned("--finetune-steps 0, --recovery-steps 0", "--finetune-steps 20 --recovery-steps 300")
        note_limited_judging(limit, result)
        return 1
    return 0
