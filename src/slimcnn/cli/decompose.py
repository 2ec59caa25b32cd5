"""``slimcnn decompose MODEL``: hardware-aware low-rank decomposition (measured-faster layers only)."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import typer

from slimcnn.cli._app import (
    FORCE_HELP,
    RESUME_HELP,
    app,
    check_exclude,
    check_runtime,
    check_task,
    check_torch_source,
    data_or_both,
    emit_json,
    example_for,
    keep_model_notes,
    note,
    open_run,
    parse_shape,
    say,
    say_notes,
    say_wrote,
    settle_info,
    task_for,
)
from slimcnn.cli.evaluate import BOTH_DATA_HELP, TRAIN_DATA_HELP, VAL_DATA_HELP, format_score
from slimcnn.errors import ConfigError


def _table(rows: list[Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title="low-rank decisions (each layer timed alone; original vs factors side by side)")
    for col in ("layer", "method", "shape", "rank", "ms before", "ms after", "speed-up", "replaced", "why"):
        t.add_column(col)
    for r in rows:
        sp = r.speedup
        t.add_row(r.layer, r.method, "x".join(map(str, r.shape)), str(r.rank),
                  "" if r.ms_before is None else f"{r.ms_before:.3f}", "" if r.ms_after is None else f"{r.ms_after:.3f}",
                  "" if sp is None else f"{sp:.2f}x", ("yes, SLOWER" if r.slower else "yes") if r.replaced else "no",
                  r.reason)
    import sys

    Console(width=None if sys.stdout.isatty() else 200).print(t)


@app.command("decompose")
def decompose_cmd(
    model: str = typer.Argument(..., help="Model source, e.g. torchvision:resnet50, slimcnn:resnet56, file:model.pt."),
    ratio: float = typer.Option(2.0, "--ratio", help="Per-layer compression target α (2 = the paper's '2x ranks')."),
    rank: int | None = typer.Option(None, "--rank", help="Explicit rank for every layer (overrides --ratio)."),
    energy: float | None = typer.Option(None, "--energy", help="Keep this fraction of squared singular values."),
    rank_multiple: int = typer.Option(8, "--rank-multiple", help="Round ranks down to a multiple of N."),
    runtime: str = typer.Option("onnxruntime", "--runtime", help="Where layers are timed: onnxruntime or torch."),
    threads: int | None = typer.Option(None, "--threads", help="Runtime threads (default: physical cores)."),
    only_faster: bool = typer.Option(True, "--only-faster/--all", help="Replace only layers measured faster."),
    min_speedup: float = typer.Option(1.05, "--min-speedup", help="Replace a layer only if measured at least this much faster."),
    scan_runs: int = typer.Option(10, "--scan-runs", help="Timed runs per candidate rank in the quick scan (cached)."),
    confirm_runs: int = typer.Option(40, "--confirm-runs", help="Interleaved rounds of the side-by-side confirmation."),
    e2e_runs: int = typer.Option(50, "--e2e-runs", help="Interleaved rounds of the whole-model before/after timing."),
    spatial: bool = typer.Option(False, "--spatial", help="Spatial SVD (k×1, 1×k) for k×k convs instead of Tucker-2."),
    exclude: list[str] = typer.Option([], "--exclude", help="fnmatch pattern of layers to leave alone (repeatable)."),
    freeze: str = typer.Option("outer", "--freeze", help="Fine-tuning: outer (freeze outer 1×1 factors), sequential, none."),
    task: str | None = typer.Option(None, "--task", help="classification, sr or detection (default: the model's own task); with --data it enables evaluation."),
    data: str | None = typer.Option(None, "--data", help=BOTH_DATA_HELP),
    train_data: str | None = typer.Option(None, "--train-data", help=TRAIN_DATA_HELP),
    val_data: str | None = typer.Option(None, "--val-data", help=VAL_DATA_HELP),
    finetune_steps: int = typer.Option(0, "--finetune-steps", help="Recovery fine-tuning steps."),
    lr: float | None = typer.Option(None, "--lr", help="Fine-tuning learning rate (default: the task's)."),
    limit: int | None = typer.Option(None, "--limit", help="Evaluate on the first N validation images."),
    weights: str | None = typer.Option(None, "--weights", help="Local weights (state_dict) to load."),
    arch: str | None = typer.Option(None, "--arch", help="Architecture source for a file: holding a bare state_dict."),
    scale: int | None = typer.Option(None, "--scale", help="Super-resolution factor."),
    input: str | None = typer.Option(None, "--input", help="Input shape like 1x3x224x224 (default: the model's)."),
    seed: int = typer.Option(0, "--seed", help="Seed of a model built with random weights (no --weights)."),
    out: Path = typer.Option(..., "--out", help="Output directory (model.pt, model.onnx, plan.json, result.json)."),
    force: bool = typer.Option(False, "--force", help=FORCE_HELP),
    resume: bool = typer.Option(False, "--resume", help=RESUME_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print result.json on stdout."),
) -> int:
    """Decompose Conv2d/Linear layers (SVD, Tucker-2) where the factors are measured faster on --runtime."""
    check_torch_source(model, "decompose")
    from slimcnn.lowrank import LowRankSpec, decompose
    from slimcnn.lowrank.finetune import finetune_frozen, training_throughput
    from slimcnn.measure import compare_latency, profile
    from slimcnn.models import load_model
    from slimcnn.prune import fingerprint
    from slimcnn.run import Measured, Plan, PlanStep, RunResult, environment, read_result, write_run
    from slimcnn.run._artifacts import compact_source
    from slimcnn.run._measure import save_model_files
    from slimcnn.search._stored import stored_cost, stored_form, stored_input_cost, write_as_input
    from slimcnn.train import keep_promises

    if freeze not in ("outer", "sequential", "none"):
        raise ConfigError(f"--freeze must be outer, sequential or none, got '{freeze}'")
    check_runtime(runtime)
    data = data_or_both(data, train_data, val_data, required=False)
    check_task(task, data)
    if finetune_steps and data is None:
        raise ConfigError("--finetune-steps needs --data to train on")
    for flag, value, low in (("--rank", rank, 1), ("--rank-multiple", rank_multiple, 1), ("--threads", threads, 1),
                             ("--scan-runs", scan_runs, 1), ("--confirm-runs", confirm_runs, 1),
                             ("--e2e-runs", e2e_runs, 1), ("--finetune-steps", finetune_steps, 0), ("--limit", limit, 1)):
        if value is not None and value < low:
            raise ConfigError(f"{flag} must be >= {low}, got {value}")
    if ratio <= 1:
        raise ConfigError(f"--ratio is the per-layer compression α and must be above 1 (2 = half the weights), got {ratio:g}")
    if energy is not None and not 0 < energy <= 1:
        raise ConfigError(f"--energy is a fraction of the squared singular values in (0, 1], got {energy:g}")
    if min_speedup <= 0:
        raise ConfigError(f"--min-speedup must be above 0, got {min_speedup:g}")
    if lr is not None and lr <= 0:
        raise ConfigError(f"--lr must be above 0, got {lr:g}")
    if input:
        parse_shape(input)
    spec = LowRankSpec(ratio=ratio, rank=rank, energy=energy, rank_multiple=rank_multiple, only_faster=only_faster,
                       min_speedup=min_speedup, spatial=spatial, exclude=tuple(exclude))
    options = {"spec": dataclasses.asdict(spec), "runtime": runtime, "threads": threads, "scan_runs": scan_runs,
               "confirm_runs": confirm_runs, "e2e_runs": e2e_runs, "freeze": freeze, "task": task,
               "finetune_steps": finetune_steps, "lr": lr, "limit": limit, "arch": arch, "scale": scale, "input": input,
               "seed": seed}
    with open_run("decompose", out, model=model, weights=weights, data={"data": data, "train_data": train_data, "val_data": val_data},
                  options=options, force=force, resume=resume) as run:
        say_notes(run)
        promises = compact_source(model)
        loaded = load_model(model, weights=weights, arch=arch, scale=scale, seed=seed)
        check_exclude(loaded.model, exclude)
        task = task_for(task, data, loaded.info)
        settle_info(loaded, task, data, val_data=val_data, input=input)
        for line in loaded.info.notes:
            note(f"note: {line}")
        keep_model_notes(run, loaded)
        example = example_for(loaded, input)
        t0 = time.perf_counter()
        new, result = decompose(loaded.model, example, spec, runtime=runtime, threads=threads,
                                scan_runs=scan_runs, confirm_runs=confirm_runs, progress=not as_json)
        seconds = time.perf_counter() - t0
        unchanged = not result.replaced  # nothing to time, fine-tune or claim: the model is the original
        task_obj = None
        scores: dict[str, Any] = {}
        throughput: dict[str, Any] = {}
        if task is not None:
            from slimcnn.tasks import make_task

            task_obj = make_task(task, data, info=loaded.info, scale=scale, train_data=train_data, val_data=val_data)  # type: ignore[arg-type]
            scores["before"] = task_obj.evaluate(loaded.model, limit=limit)
            scores["after_decompose"] = scores["before"] if unchanged else task_obj.evaluate(new, limit=limit)
            if finetune_steps and not unchanged:
                throughput = training_throughput(new, result, task_obj)
                with keep_promises(new, promises):  # a compact input's layers that stay keep their zeros / codebooks
                    finetune_frozen(new, result, task_obj, finetune_steps, freeze=freeze, lr=lr)
        written = save_model_files(loaded, new, example, run.path)
        stored = write_as_input(run.path, loaded, written, promises)
        if task_obj is not None and finetune_steps and not unchanged:
            scores["after_finetune"] = task_obj.evaluate(written, limit=limit)  # the artifact, re-loaded
        lat = None if unchanged else compare_latency(
            {"before": loaded.model, "after": written}, example, runtime=runtime, threads=threads,  # type: ignore[arg-type]
            runs=e2e_runs)
        speedup = 1.0 if lat is None else lat["before"].median_ms / lat["after"].median_ms
        slower = speedup < 1.0
        before, after = profile(loaded.model, example), profile(written, example)
        if promises:  # counted as the files store them, as `analyze` counts them
            kernels, bits, book, _ = stored_form(promises)
            b, a = stored_input_cost(loaded.model, example, promises), stored_cost(written, example, bits, kernels, book)
            before = dataclasses.replace(before, params=b.params, macs=b.macs, weight_bytes=b.weight_bytes)
            after = dataclasses.replace(after, params=a.params, macs=a.macs, weight_bytes=next(
                (s["weight_bytes"] for s in stored.values()), a.weight_bytes))
        if lat is not None:
            before = dataclasses.replace(before, latency=lat["before"])
            after = dataclasses.replace(after, latency=lat["after"])
        spec_dict = {k: v for k, v in dataclasses.asdict(spec).items() if k not in ("include", "exclude")}
        replaced = {r.layer: {"method": r.method, "rank": r.rank, "spec": spec_dict} for r in result.layers if r.replaced}
        plan = Plan((PlanStep("lowrank", tuple(replaced), {"layers": replaced}),) if replaced else (), loaded.source,
                    fingerprint(loaded.model), tuple(example.shape), finetuned=bool(finetune_steps and replaced))
        details = {
            "runtime": runtime,
            "threads": result.threads if lat is None else lat["after"].threads,
            "layers": [dataclasses.asdict(r) for r in result.layers],
            "replaced": result.replaced,
            "slower_layers": result.slower,
            "unchanged": unchanged,
            "speedup": speedup,
            "slower": slower,
            "scores": {k: dataclasses.asdict(v) for k, v in scores.items()},
            "training_throughput": throughput,
            "decide_seconds": round(seconds, 2),
            **stored,
        }
        final_score = scores.get("after_finetune", scores.get("after_decompose"))
        run_result = RunResult(
            "decompose", loaded.source, task=task,
            before=Measured(scores.get("before"), dataclasses.replace(before, layers=())),
            after=Measured(final_score, dataclasses.replace(after, layers=())), plan=plan, options=options,
            details=details, seconds=round(time.perf_counter() - run.started, 2), environment=environment(seed))
        write_run(run, run_result)
    if lat is not None and slower:
        b, a = lat["before"].median_ms, lat["after"].median_ms
        note(f"warning: the decomposed model is SLOWER than the original ({b:.2f} ms -> {a:.2f} ms, {speedup:.2f}x "
             f"end to end on {runtime}); keep the original, or raise --min-speedup / drop --all")
    if as_json:
        emit_json(read_result(run.out))
    else:
        _table(list(result.layers))
        if result.slower:
            say(f"{len(result.slower)} replaced layers timed SLOWER alone: {', '.join(result.slower)}")
        if lat is None:
            say(f"no layer was replaced: the model is unchanged (0 of {len(result.layers)} layers; speed-up 1.0, "
                f"not re-timed; decisions took {seconds:.0f} s)")
        else:
            say(f"replaced {len(result.replaced)} of {len(result.layers)} layers; MACs {before.macs:,} → {after.macs:,}; "
                f"latency {lat['before'].median_ms:.3f} → {lat['after'].median_ms:.3f} ms "
                f"({speedup:.3f}x side by side; p10 {lat['before'].p10_ms:.3f} → {lat['after'].p10_ms:.3f}; "
                f"{runtime}, {lat['after'].threads} threads; decisions took {seconds:.0f} s)")
        for k, v in scores.items():
            say(f"{k}: {format_score(v)}")
        say_wrote(run.out)
    lost = scores.get("before"), scores.get("after_decompose")
    if not finetune_steps and lost[0] is not None and lost[1] is not None and lost[0].drop_to(lost[1], relative=True) > 0.01:
        # the paper fine-tunes the factorised model: a raw decomposition is rarely the model to keep
        note(f"note: {lost[0].metric} dropped {lost[0].drop_to(lost[1]):.3g} without fine-tuning; the same command with "
             "--finetune-steps N fine-tunes the decomposed model before it is written (--freeze picks the factors "
             "held fixed)")
    return 0
