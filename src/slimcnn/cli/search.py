"""``slimcnn search MODEL``: the smallest/fastest model that meets a quality and a hardware target."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import typer

from slimcnn.cli._app import (
    FORCE_HELP,
    NUM_CLASSES_HELP,
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
    settle_info,
)
from slimcnn.cli.evaluate import BOTH_DATA_HELP, TASK_HELP, TRAIN_DATA_HELP
from slimcnn.errors import ConfigError


@app.command("search")
def search_cmd(
    model: str = typer.Argument(..., help="Model source, e.g. slimcnn:fsrcnn, slimcnn:lenet5, file:model.pt."),
    task: str | None = typer.Option(None, "--task", help=TASK_HELP),
    data: str | None = typer.Option(None, "--data", help=BOTH_DATA_HELP),
    train_data: str | None = typer.Option(None, "--train-data", help=TRAIN_DATA_HELP),
    val_data: str | None = typer.Option(None, "--val-data", help="Validation data that drives the search (default: --data)."),
    metric: str | None = typer.Option(None, "--metric", help="Detection metric driving the search: map50_95 (default) or map50."),
    method: str = typer.Option("prune", "--method", help="prune, kernel, lowrank or kmeans."),
    strategy: str = typer.Option("greedy", "--strategy", help="greedy, cpo (Liu et al.), iterative (Pavlitska et al.) or latency (widths from a measured per-layer latency table and a knapsack under --latency, and --macs if given; --method prune)."),
    criterion: str | None = typer.Option(None, "--criterion", help="Channel criterion for prune (l1, sparsity, chip...)."),
    max_drop: str | None = typer.Option(None, "--max-drop", help="Allowed metric drop: 0.2 (dB/points) or 1%."),
    macs: str | None = typer.Option(None, "--macs", help="MACs limit: 0.5x (of the original) or 300M (absolute)."),
    params: str | None = typer.Option(None, "--params", help="Parameter limit: 0.5x or 1M."),
    weight_bytes: str | None = typer.Option(None, "--weight-bytes", help="Weight memory limit: 4MB, 512KiB, 0.25x."),
    latency: str | None = typer.Option(None, "--latency", help="Latency limit on --runtime: 12ms or 0.7x."),
    activation_bytes: str | None = typer.Option(None, "--activation-bytes", help="Peak activation memory limit at --input: 0.5x or 256KB."),
    runtime: str | None = typer.Option(None, "--runtime", help="onnxruntime or torch (measures latency)."),
    threads: int | None = typer.Option(None, "--threads", help="Runtime threads."),
    objective: str | None = typer.Option(None, "--objective", help="What to minimise: macs, params, weight_bytes, latency_ms, activation_bytes."),
    finetune_steps: int = typer.Option(0, "--finetune-steps", help="Fine-tuning steps per measured point/step/iteration."),
    lr: float | None = typer.Option(None, "--lr", help="Fine-tuning learning rate."),
    limit: int | None = typer.Option(None, "--limit", help="Validation images used while searching."),
    workers: int = typer.Option(1, "--workers", help="Local ranks for the sensitivity sweep and CPO's probes: a torch.distributed gloo group on this machine sharing the knobs and probes (CPU; for CUDA launch under torchrun)."),
    iterations: int = typer.Option(3, "--iterations", help="Iterations of the iterative strategy."),
    alpha: float = typer.Option(20.0, "--alpha", help="Metric exponent of the iterative strategy's score."),
    round_to: str | None = typer.Option(None, "--round-to", help=ROUND_TO_HELP),
    exclude: list[str] = typer.Option([], "--exclude", help="fnmatch pattern of layers to leave alone (repeatable)."),
    amounts: str | None = typer.Option(None, "--amounts", help="Amounts the sweep tries per knob, e.g. 0.125,0.25,0.5 (prune: fraction removed; lowrank: fraction of weights removed; kmeans: bits)."),
    input: str | None = typer.Option(None, "--input", help="Input shape for costs and latency, e.g. 1x1x128x128 (default: the task's example input)."),
    codebook: str = typer.Option("fp32", "--codebook", help="kmeans: centroids stored as fp32 or fp16 in model.slim (fp16 halves the codebook bytes counted against --weight-bytes; the model uses the rounded centroids)."),
    compensate: str = typer.Option("none", "--compensate", help="prune: what the layers reading removed channels get: none, mean (their mean activations folded into the bias) or lsq (weights and bias refitted by least squares)."),
    accumulate: bool = typer.Option(False, "--accumulate", help="cpo: prune each step's retrained model further (the paper) instead of the original."),
    device: str = typer.Option("cpu", "--device", help="Where fine-tuning and evaluation run: cpu, cuda, cuda:1, ... (--workers N with cuda: run under torchrun --nproc-per-node N)."),
    recovery: str = typer.Option("plain", "--recovery", help="How fine-tuning recovers: plain (the task's loss) or kd (distillation from the original model)."),
    scale: int | None = typer.Option(None, "--scale", help="Super-resolution factor."),
    weights: str | None = typer.Option(None, "--weights", help="Local weights (state_dict) to load."),
    arch: str | None = typer.Option(None, "--arch", help="Architecture source for a file: holding a bare state_dict."),
    num_classes: int | None = typer.Option(None, "--num-classes", help=NUM_CLASSES_HELP),
    seed: int = typer.Option(0, "--seed", help="Seed of a model built with random weights and of the data order."),
    out: Path = typer.Option(..., "--out", help="Output directory."),
    force: bool = typer.Option(False, "--force", help=FORCE_HELP),
    resume: bool = typer.Option(False, "--resume", help=RESUME_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print result.json on stdout."),
) -> int:
    """Search per-layer amounts of a transform so the model meets --max-drop and the hardware limits.

    The sensitivity sweep is kept in --out/sensitivity.json with the run's manifest: a re-run with
    other budgets (--max-drop, --macs, ...) and --resume reuses it; any other change measures anew.

    Under ``torchrun --nproc-per-node N`` (or several nodes) every rank runs the search: the sweep, CPO's
    probes and the iterative rounds' sweeps are sharded over the ranks, fine-tunes run DDP (--batch-size is
    the global batch), latency is timed on rank 0, and rank 0 alone writes --out.
    """
    check_torch_source(model, "search")
    from slimcnn.run import read_result
    from slimcnn.run._artifacts import compact_source
    from slimcnn.search import Budget, SearchSpec, search
    from slimcnn.search.outputs import write_search_run

    check_device(device)
    data = data_or_both(data, train_data, val_data)
    if max_drop is None and not any((macs, params, weight_bytes, latency, activation_bytes)):
        raise ConfigError("give a target: --max-drop and/or one of --macs, --params, --weight-bytes, --latency, "
                          "--activation-bytes")
    if latency is not None and runtime is None:
        runtime = "onnxruntime"
    check_runtime(runtime)
    for flag, value, low in (("--finetune-steps", finetune_steps, 0), ("--limit", limit, 1), ("--workers", workers, 1),
                             ("--iterations", iterations, 1), ("--threads", threads, 1),
                             ("--num-classes", num_classes, 1), ("--scale", scale, 1)):
        if value is not None and value < low:
            raise ConfigError(f"{flag} must be >= {low}, got {value}")
    if lr is not None and lr <= 0:
        raise ConfigError(f"--lr must be above 0, got {lr}")
    if alpha <= 0:
        raise ConfigError(f"--alpha is the metric's exponent in the iterative score and must be above 0, got {alpha:g}")
    budget = Budget.from_options(max_drop=max_drop, macs=macs, params=params, weight_bytes=weight_bytes,
                                 latency=latency, activation_bytes=activation_bytes, objective=objective)  # type: ignore[arg-type]
    check_task(task, data_required=False)
    if input:
        parse_shape(input)
    spec = SearchSpec(method=method, strategy=strategy, criterion=criterion, finetune_steps=finetune_steps,
                      finetune={"lr": lr} if lr is not None else {}, limit=limit, workers=workers, runtime=runtime,
                      threads=threads, iterations=iterations, alpha=alpha, round_to=round_to_for(round_to, latency),
                      exclude=tuple(exclude), compensate=compensate, amounts=parse_amounts(amounts, method), device=device,
                      accumulate=accumulate, recovery=recovery, codebook=codebook,
                      promises=tuple(compact_source(model)))  # a compact input keeps its zeros / codebooks
    _check_criterion(method, criterion)
    budget_options = {"max_drop": max_drop, "macs": macs, "params": params, "weight_bytes": weight_bytes,
                      "latency": latency, "activation_bytes": activation_bytes, "objective": objective}
    options = {**dataclasses.asdict(spec), **budget_options, "task": task, "metric": metric, "scale": scale,
               "arch": arch, "num_classes": num_classes, "input": input, "seed": seed}
    from slimcnn.models import load_model
    from slimcnn.tasks import make_task, resolve_task
    from slimcnn.train import is_main, join_from_env

    if join_from_env(device) and not is_main():  # under torchrun: the same search, rank 0 writes
        spec = _spec_from_main(None)
        if spec is None:  # rank 0 could not open --out and says why
            return 2
        loaded = load_model(model, weights=weights, arch=arch, scale=scale, num_classes=num_classes, seed=seed)
        check_exclude(loaded.model, exclude)  # every rank stops on it, as rank 0 does
        task = resolve_task(task, loaded.info)
        settle_info(loaded, task, data, val_data=val_data, input=input, quiet=True)
        task_obj = make_task(task, data, info=loaded.info, scale=scale, train_data=train_data, val_data=val_data, metric=metric,
                             seed=seed)
        res = search(loaded.model, task_obj, budget, spec, source=loaded.source,
                     example_input=example_for(loaded, input) if input else None, progress=False)
        return 0 if res.met else 1
    try:
        opened = open_run("search", out, model=model, weights=weights, data={"data": data, "train_data": train_data, "val_data": val_data},
                          options=options, force=force, resume=resume)
    except BaseException:
        _spec_from_main(None)
        raise
    with opened as run:
        _spec_from_main(spec)  # the other ranks start (with rank 0's --round-to auto, if the CPUs differ)
        sweep = run.state_file("sensitivity.json", keep=True, ignore=tuple(budget_options))
        say_notes(run)
        loaded = load_for_cli(model, weights=weights, arch=arch, scale=scale, num_classes=num_classes, seed=seed,
                              task=task, data=data, val_data=val_data, input=input, run=run)
        check_exclude(loaded.model, exclude)
        task = resolve_task(task, loaded.info)
        task_obj = make_task(task, data, info=loaded.info, scale=scale, train_data=train_data, val_data=val_data, metric=metric,
                             seed=seed)
        example = example_for(loaded, input) if input else None
        result = write_search_run(run, loaded, task_obj, budget, spec, example, sweep=sweep, progress=not as_json,
                            options=options)
    report = read_result(run.out)
    if as_json:
        emit_json(report)
    else:
        from slimcnn.run._measure import summary_line

        say(summary_line(result.before, result.after))
        for c in result.checks:
            say(f"  {c.line()}")
        say_wrote(run.out)
    if not result.met:
        note("budget NOT met: the closest point reached is saved in " + str(run.out) + " (exit code 1)")
        if finetune_steps == 0 and strategy != "latency":  # the knapsack's widths do not depend on the loss
            note_nothing_finetuned("--finetune-steps 0", "--finetune-steps 20")
        note_limited_judging(limit, result)
        return 1
    return 0


def _spec_from_main(spec: Any) -> Any:
    """Rank 0's search spec on every rank (``spec`` on rank 0; None there tells the others it could not open --out).

    Outside a process group, ``spec`` itself."""
    from slimcnn.train._distributed import from_main

    return from_main(lambda: spec)


def _check_criterion(method: str, criterion: str | None) -> None:
    """``--criterion`` names a channel criterion (prune) or a kernel one (kernel); other methods take none."""
    if criterion is None:
        return
    if method == "prune":
        from slimcnn.prune import CRITERIA

        CRITERIA.get(criterion)
    elif method == "kernel":
        if criterion not in ("l1", "sparsity"):
            raise ConfigError(f"--method kernel ranks kernels by l1 or sparsity, got --criterion '{criterion}'")
    else:
        raise ConfigError(f"--criterion applies to --method prune or kernel, not '{method}'")
