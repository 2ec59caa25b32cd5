"""``slimcnn prune MODEL``: physical filter/channel pruning with coupled-channel groups."""

from __future__ import annotations

import json
import shlex
import time
import warnings
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
    example_for,
    load_for_cli,
    note,
    open_run,
    parse_round_to,
    parse_shape,
    say_notes,
    task_for,
)
from slimcnn.cli._finish import finish_run, report_run
from slimcnn.errors import ConfigError


def latency_keep(text: str) -> Any:
    """``--latency`` in the one budget grammar: ``0.5x`` (fraction of the measured latency) or ``12ms``."""
    from slimcnn.search.budget import parse_amount

    return parse_amount(text, "latency_ms")


def macs_keep(text: str) -> Any:
    """``--macs`` in the one budget grammar: ``0.5x`` (fraction kept) or ``300M`` (absolute MACs)."""
    from slimcnn.search.budget import parse_amount

    return parse_amount(text, "macs")


@app.command("prune")
def prune_cmd(
    model: str = typer.Argument(..., help="Model source, e.g. torchvision:resnet18, slimcnn:resnet56, ultralytics:yolov8n.yaml."),
    criterion: str = typer.Option("l1", "--criterion", help="l1, l2, bn_scale, taylor, random, sparsity or chip (kernel: l1, sparsity)."),
    granularity: str = typer.Option("filter", "--granularity", help="filter (channels), kernel (free k×k kernels, compact .slimk file) or grouped (grouped convs)."),
    groups: int = typer.Option(2, "--groups", help="--granularity grouped: groups G per conv (keeps 1/G of the kernels)."),
    ratio: float | None = typer.Option(None, "--ratio", help="Fraction of each coupled group's channels to remove."),
    macs: str | None = typer.Option(None, "--macs", help="Target MACs: 0.5x (fraction of the original) or 300M (absolute)."),
    latency: str | None = typer.Option(None, "--latency", help="Target latency on --runtime: 0.5x (of the original, measured) or 12ms; kept widths from a measured per-group latency table and a knapsack (with --macs: both budgets at once)."),
    runtime: str = typer.Option("onnxruntime", "--runtime", help="Where latency is measured: onnxruntime (CPU) or torch (PyTorch eager, CPU); the latency table, --latency and the before/after comparison all use it."),
    threads: int | None = typer.Option(None, "--threads", help="Runtime threads for every latency measured (default: physical cores); part of the latency table's key."),
    latency_objective: str | None = typer.Option(None, "--latency-objective", help="With --latency, what the knapsack keeps: macs (default: each channel's importance weighted by its group's MACs per channel, so the channels that cost the most time per MAC go) or importance (HALP's unweighted importance: keeps the most channels)."),
    latency_tries: int | None = typer.Option(None, "--tries", help="With --latency: selections timed whole against the original at most (default 4); more narrows the search where timings spread (sub-millisecond models)."),
    params: str | None = typer.Option(None, "--params", help="With --latency: parameter budget as well, 0.6x (of the original) or 1M; the knapsack honours every budget given at once or says which it cannot meet."),
    scope: str = typer.Option("local", "--scope", help="local (same ratio per group) or global ranking."),
    round_to_text: str = typer.Option("1", "--round-to", help="Round kept widths up to a multiple of N (every part a split conv or a concatenation's producer makes or reads, too); 'auto' = ONNX Runtime's channel block on this CPU (16 with AVX-512, 8 with AVX2)."),
    exclude: list[str] = typer.Option([], "--exclude", help="fnmatch pattern of layers whose groups stay (repeatable)."),
    reduce: str = typer.Option("sum", "--reduce", help="Group score over members: sum, mean or max."),
    task: str | None = typer.Option(None, "--task", help="classification, sr or detection (default: the model's own task); with --data it adds the metric (taylor/chip need it)."),
    data: str | None = typer.Option(None, "--data", help="Data for --task."),
    calib: int = typer.Option(8, "--calib", help="Calibration/training batches for data-driven criteria."),
    compensate: str = typer.Option("none", "--compensate", help="What the layers reading removed channels get (needs --task/--data): none, mean (their mean activations folded into the bias) or lsq (weights and bias refitted by least squares to the original outputs)."),
    limit: int | None = typer.Option(None, "--limit", help="Evaluate on the first N validation images."),
    seed: int = typer.Option(0, "--seed", help="Seed for the random criterion and example input."),
    weights: str | None = typer.Option(None, "--weights", help="Local weights to load."),
    arch: str | None = typer.Option(None, "--arch", help="Architecture source for a file: holding a bare state_dict."),
    scale: int | None = typer.Option(None, "--scale", help="Super-resolution factor."),
    input: str | None = typer.Option(None, "--input", help="Input shape like 1x3x224x224 (default: the model's)."),
    no_latency: bool = typer.Option(False, "--no-latency", help="Skip the latency comparison."),
    out: Path = typer.Option(..., "--out", help="Output directory (model.pt, model.onnx, plan.json, result.json)."),
    force: bool = typer.Option(False, "--force", help=FORCE_HELP),
    resume: bool = typer.Option(False, "--resume", help=RESUME_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print result.json on stdout."),
) -> int:
    """Remove whole filters/channels (coupled groups found by tracing) and write the pruned model."""
    check_torch_source(model, "prune")
    from slimcnn.prune import CRITERIA
    from slimcnn.prune._compensate import compensation_mode

    round_to = parse_round_to(round_to_text)
    compensate = compensation_mode(compensate) or False  # type: ignore[assignment]
    if granularity not in ("filter", "kernel", "grouped"):
        raise ConfigError(f"--granularity must be filter, kernel or grouped, got '{granularity}'")
    if granularity != "filter" and compensate:
        raise ConfigError(f"--compensate works with --granularity filter only, got '{granularity}'")
    check_task(task, data)
    if ratio is not None and not 0 < ratio < 1:
        raise ConfigError(f"--ratio is the fraction of channels removed, above 0 and below 1 (e.g. 0.3), got {ratio:g}")
    if limit is not None and limit < 1:
        raise ConfigError(f"--limit must be >= 1, got {limit}")
    shape = parse_shape(input) if input else None
    target = macs_keep(macs) if macs else None
    lat_target = latency_keep(latency) if latency else None
    objective = _latency_objective(latency_objective, latency)
    tries = _latency_tries(latency_tries, latency)
    params_target = _params_budget(params, latency)
    if latency is not None and granularity != "filter":
        raise ConfigError(f"--latency works with --granularity filter only, got '{granularity}'")
    if latency is not None and no_latency:
        raise ConfigError("--latency needs the latency measurement: drop --no-latency")
    check_runtime(runtime)
    if threads is not None and threads < 1:
        raise ConfigError(f"--threads must be >= 1, got {threads}")
    if granularity == "filter":
        if sum(a is not None for a in (ratio, macs, latency)) != 1 and not (latency and macs and ratio is None):
            raise ConfigError("give exactly one of --ratio R, --macs 0.5x or --latency 0.5x (or --latency with --macs)")
        if scope not in ("local", "global"):
            raise ConfigError(f"--scope must be local or global, got '{scope}'")
        if reduce not in ("sum", "mean", "max"):
            raise ConfigError(f"--reduce must be sum, mean or max, got '{reduce}'")
        CRITERIA.get(criterion)
        if criterion in ("taylor", "chip") and not data:
            raise ConfigError(f"--criterion {criterion} needs --data (it measures the model on data)")
        if compensate and not data:
            raise ConfigError(f"--compensate {compensate} needs calibration data: pass --data")
        if calib < 1:
            raise ConfigError(f"--calib must be >= 1, got {calib}")
    else:
        if criterion not in ("l1", "sparsity"):
            raise ConfigError(f"--granularity {granularity} ranks kernels by l1 or sparsity, got '{criterion}'")
        if granularity == "kernel" and ratio is None:
            raise ConfigError("--granularity kernel needs --ratio R (the fraction of k×k kernels to remove)")
        if macs is not None:
            raise ConfigError(f"--granularity {granularity} takes --ratio (kernel) or --groups (grouped), not --macs")
        if groups < 2:
            raise ConfigError(f"--groups must be >= 2, got {groups}")
    options = {"criterion": criterion, "granularity": granularity, "groups": groups if granularity == "grouped" else None,
               "ratio": ratio, "macs": macs, **({"latency_target": latency, "latency_objective": objective, "latency_tries": tries} if latency else {}), **({"params": params} if params else {}), "scope": scope, "round_to": round_to, "exclude": list(exclude),
               "reduce": reduce, "task": task, "calib": calib, "compensate": compensate, "limit": limit, "seed": seed,
               "arch": arch, "scale": scale, "input": input, "latency": not no_latency,
               **({"runtime": runtime} if runtime != "onnxruntime" else {}),
               **({"threads": threads} if threads is not None else {})}
    with open_run("prune", out, model=model, weights=weights, data={"data": data}, options=options,
                  force=force, resume=resume) as run:
        say_notes(run)
        loaded = load_for_cli(model, weights=weights, arch=arch, scale=scale, seed=seed, task=task, data=data,
                              input=input, run=run)
        check_exclude(loaded.model, exclude)
        example = example_for(loaded, input) if shape else example_for(loaded, None)
        task = task_for(task, data, loaded.info)
        task_obj = None
        if task and data:
            from slimcnn.tasks import make_task

            task_obj = make_task(task, data, info=loaded.info, scale=scale, seed=seed)  # type: ignore[arg-type]
        t0 = time.perf_counter()
        if granularity == "filter":
            new_model, plan_step, details = _prune_filters(loaded, example, task_obj, criterion=criterion, ratio=ratio,
                                                           target=target, scope=scope, round_to=round_to,
                                                           exclude=exclude, reduce=reduce, calib=calib, seed=seed,
                                                           compensate=compensate, latency=lat_target,
                                                           objective=objective, tries=tries, params=params_target,
                                                           runtime=runtime, threads=threads)
        else:
            new_model, plan_step, details = _prune_kernels(loaded, example, granularity, criterion=criterion,
                                                           ratio=ratio, groups=groups)
        details["prune_seconds"] = round(time.perf_counter() - t0, 3)
        result = finish_run(run, "prune", loaded, new_model, example, (plan_step,), task_obj, limit=limit,
                            latency=not no_latency, options=options, details=details, seed=seed, finetuned=False,
                            runtime=runtime, threads=threads, compact=granularity == "kernel")
    report_run(result, run.out, as_json)
    if hint := _finetune_hint(result, run.out, task, data):
        note(hint)
    if granularity == "filter" and lat_target is None and (slower := _slower(result)):
        note(slower)
    # every target the written model misses is named (result.checks), with what explains it where known
    failed = {c.name: c for c in result.checks if not c.met}
    missed = []
    if "latency_ms" in failed:
        missed.append(latency_miss(latency, details, result.before.cost.latency.median_ms))
    if details.get("latency_budgets_unmet"):
        missed.append(details["latency_budgets_unmet"])
    elif "macs" in failed and "macs_reached" in details:
        missed.append(f"MACs target {macs} NOT met: {details['macs_reached']:.3f}x reached (the rest "
                      "is protected: outputs, unmappable ops, excluded layers)")
    named = {"latency_ms"} | ({"macs", "params"} if details.get("latency_budgets_unmet") else {"macs"})
    missed += [f"{c.name} target NOT met: {c.value:,.4g} > {c.limit:,.4g}" for n, c in failed.items()
               if n not in named]
    for line in missed:
        note(f"{line}; the closest model is saved in {run.out} (exit code 1)")
    return 1 if missed else 0


SPEED_CHANGE = 0.05
"""The original's median ms in the final timing and in the kept try's check differ by more than this: the machine
changed speed in between (a shared VM's neighbours, clock states), and a latency miss says so."""


def latency_miss(latency: str, details: dict[str, Any], final_ms: float | None = None) -> str:
    """The line for a written model slower than ``--latency``: its timing, the search's check of the same widths and
    the table's prediction; when the check met the target the miss is the timing's spread, and the line says so, and
    when the original itself ran at another speed in the final timing (``final_ms``) and in that check, it says that
    too."""
    measured, check = details["latency_measured_ratio"], details.get("latency_check_ratio")
    predicted = f"table predicted {details['latency_predicted_ratio']:.3f}x"
    kept = next((a for a in details.get("latency_attempts", ()) if a.get("kept")), {})
    check_ms = kept.get("original_ms")
    speed = (f"; the original ran at {final_ms:.3g} ms in the final timing and {check_ms:.3g} ms in that check: the "
             "machine changed speed in between" if final_ms and check_ms and abs(final_ms / check_ms - 1) > SPEED_CHANGE
             else "")
    if check is not None and check <= details["latency_target"]:
        return (f"latency target {latency} NOT met: the written model measured {measured:.3f}x of the original, where "
                f"the search's check of the same widths said {check:.3f}x ({predicted}){speed}: timings on this "
                "machine vary by that much, so re-run it or ask a little lower")
    checked = f"the search's check {check:.3f}x, " if check is not None else ""
    return f"latency target {latency} NOT met: measured {measured:.3f}x of the original ({checked}{predicted}){speed}"


def _prune_filters(loaded: Any, example: Any, task_obj: Any, *, criterion: str, ratio: float | None, target: Any,
                   scope: str, round_to: int, exclude: list[str], reduce: str, calib: int, seed: int,
                   compensate: bool, tries: int, latency: Any = None, objective: str = "macs",
                   params: Any = None, runtime: str = "onnxruntime",
                   threads: int | None = None) -> tuple[Any, Any, dict[str, Any]]:
    import copy

    from slimcnn.measure import ort_channel_block, profile
    from slimcnn.prune import NothingPrunableWarning, prune_model_
    from slimcnn.run import PlanStep

    macs_frac = None
    if target is not None:
        macs_frac = target.value if target.relative else target.value / max(profile(loaded.model, example).macs, 1)
        if macs_frac >= 1:
            raise ConfigError(f"--macs {target.value:,.0f} is not below the model's MACs; give a smaller target")
    new_model = copy.deepcopy(loaded.model)
    lat_details: dict[str, Any] = {}
    if latency is not None:
        from slimcnn.prune import prune_for_latency_

        frac, lat_details = _latency_frac(loaded.model, example, latency, runtime, threads)
        params_frac = None
        if params is not None:
            n_params = sum(p.numel() for p in loaded.model.parameters())
            params_frac = params.value if params.relative else params.value / max(n_params, 1)
            if params_frac >= 1:
                raise ConfigError(f"--params {params.value:,.0f} is not below the model's {n_params:,} parameters; "
                                  "give a smaller target")
        lat = prune_for_latency_(new_model, example, frac, criterion=criterion, exclude=exclude, reduce=reduce,  # type: ignore[arg-type]
                                 task=task_obj, calib=calib, seed=seed, source=loaded.source, macs=macs_frac,
                                 params=params_frac, objective=objective, compensate=compensate, tries=tries,  # type: ignore[arg-type]
                                 runtime=runtime, threads=threads)  # type: ignore[arg-type]
        if (fixed := lat.fixed_time_message()) is not None:
            note(f"note: {fixed}")
        outcome, lat_details = lat.outcome, lat.details() | lat_details | {"latency_objective": objective}
        if params_frac is not None:
            reached = sum(p.numel() for p in new_model.parameters()) / max(n_params, 1)
            lat_details |= {"params_target": params_frac, "params_reached": reached,
                            "params_target_met": reached <= params_frac + 1e-9}
        if lat.selection.shortfall():
            lat_details["latency_budgets_unmet"] = lat.selection.shortfall(frac)
    else:
        with warnings.catch_warnings():  # said below, once, for every path (the latency path does not warn)
            warnings.simplefilter("ignore", NothingPrunableWarning)
            outcome = prune_model_(
                new_model, example, criterion=criterion, prune_ratio=ratio, macs=macs_frac, scope=scope,  # type: ignore[arg-type]
                round_to=round_to, exclude=exclude, reduce=reduce, task=task_obj, calib=calib, seed=seed,  # type: ignore[arg-type]
                source=loaded.source, compensate=compensate, best_effort=True,
            )
    block = ort_channel_block()
    odd = [f for f, kept in outcome.plan.layers.items() if len(kept) >= 2 * block and len(kept) % block]
    if round_to == 1 and block > 1 and odd:
        # ORT runs blocked convs in whole blocks: a width of 24 costs as much as 32 on AVX-512 (README)
        note(f"note: {len(odd)} pruned layers keep a width that is not a multiple of {block}, ONNX Runtime's channel "
             f"block on this CPU (e.g. '{odd[0]}'); --round-to auto usually runs faster")
    if not outcome.plan.layers:
        where = f"outside --exclude {' '.join(exclude)}" if exclude else "(outputs and unmappable ops are protected)"
        why = (f"no channel group is prunable {where}; `slimcnn analyze {loaded.source} --groups` lists each group "
               "and why" if outcome.prunable_groups == 0 else
               f"the amount asked removes no whole channel from any of the {outcome.prunable_groups} prunable groups "
               "(ask for more)")
        note(f"warning: nothing was pruned: {why}; the written model equals the input")
    reached = outcome.macs_after / max(outcome.macs_before, 1)
    details: dict[str, Any] = {"prune_ratio_used": outcome.prune_ratio, "macs_reached": reached} | lat_details
    if macs_frac is not None:
        details |= {"macs_target": macs_frac, "macs_target_met": reached <= macs_frac + 0.005}
        if round_to > 1 and reached < macs_frac - 0.02:
            note(f"note: --round-to {round_to} overshoots the MACs target: {reached:.3f}x instead of {macs_frac:.3f}x "
                 "(kept widths move in whole blocks)")
    step = PlanStep("prune_channels", tuple(outcome.plan.layers), outcome.plan.to_dict())
    return new_model, step, details


def _latency_tries(tries: int | None, latency: str | None) -> int:
    """``--tries``, checked: only with ``--latency``, at least 1; :data:`~slimcnn.prune._latency_prune.TRIES` when not
    given."""
    from slimcnn.prune._latency_prune import TRIES

    if tries is None:
        return TRIES
    if latency is None:
        raise ConfigError("--tries sets how many selections --latency times: give --latency 0.5x too")
    if tries < 1:
        raise ConfigError(f"--tries must be >= 1, got {tries}")
    return tries


def _latency_objective(objective: str | None, latency: str | None) -> str:
    """``--latency-objective``, checked: only with ``--latency``; ``macs`` when not given."""
    from slimcnn.prune._latency_prune import OBJECTIVES

    if objective is None:
        return "macs"
    if latency is None:
        raise ConfigError("--latency-objective sets what the latency knapsack keeps: give --latency 0.5x too")
    if objective not in OBJECTIVES:
        raise ConfigError(f"--latency-objective must be one of {', '.join(OBJECTIVES)}, got '{objective}'")
    return objective


def _params_budget(params: str | None, latency: str | None) -> Any:
    """``--params`` in the one budget grammar, a budget of the latency knapsack (so only with ``--latency``)."""
    from slimcnn.search.budget import parse_amount

    if params is None:
        return None
    if latency is None:
        raise ConfigError("--params is a budget of the latency knapsack: give --latency 0.5x too (or use "
                          "`slimcnn search --params` for a params target alone)")
    return parse_amount(params, "params")


def _latency_frac(model: Any, example: Any, target: Any, runtime: str,
                  threads: int | None) -> tuple[float, dict[str, Any]]:
    """``--latency`` as a fraction of the original's latency (an absolute target is divided by a measurement taken
    as the final timing takes it: the written model is judged on its ms there)."""
    from slimcnn.measure import CHECK_SECONDS, compare_latency

    if target.relative:
        return float(target.value), {}
    base_ms = compare_latency({"original": model}, example, runtime=runtime, threads=threads, runs=20,  # type: ignore[arg-type]
                              min_seconds=CHECK_SECONDS, warmup=3)["original"].median_ms
    if target.value >= base_ms:
        raise ConfigError(f"--latency {target.value:g} ms is not below the model's measured {base_ms:.3f} ms; "
                          "give a smaller target")
    return target.value / base_ms, {"latency_target_ms": target.value, "latency_original_ms_measured": base_ms}


def _prune_kernels(loaded: Any, example: Any, granularity: str, *, criterion: str, ratio: float | None,
                   groups: int) -> tuple[Any, Any, dict[str, Any]]:
    """``--granularity kernel|grouped``: Liu et al.'s criterion at the level of single k×k kernels."""
    import copy

    from slimcnn.prune.kernel import (
        apply_kernel_masks_,
        default_kernel_layers,
        drop_removable_channels_,
        group_kernels_,
        kept_to_json,
        kernel_masks,
    )
    from slimcnn.run import PlanStep

    new_model = copy.deepcopy(loaded.model)
    details: dict[str, Any] = {"granularity": granularity}
    if granularity == "kernel":
        masks = kernel_masks(new_model, ratio, criterion)  # type: ignore[arg-type]
        apply_kernel_masks_(new_model, masks)
        details["dropped_channels"] = drop_removable_channels_(new_model, example)  # model.slimk: written by _finish
        kept = kept_to_json(masks)
        step = PlanStep("prune_kernels", tuple(kept), {"kept": kept, "criterion": criterion, "prune_ratio": ratio,
                                                       "drop_channels": True})
    else:
        layers = {name: groups for name in default_kernel_layers(new_model)}
        report = group_kernels_(new_model, layers, criterion, example_input=example)
        from slimcnn._io import to_json

        grouped = json.loads(to_json(report))
        details["grouped"] = {"permuted": grouped["permuted"], "pinned": grouped["pinned"],
                              "max_abs_error": grouped["max_abs_error"], "layers": grouped["layers"]}
        step = PlanStep("group_kernels", tuple(layers), {"groups": layers, "criterion": criterion})
    return new_model, step, details


def _finetune_hint(result: Any, out: Path, task: str | None, data: str | None) -> str | None:
    """How to recover what pruning lost, when the written model scores more than 1 % below the original: prune
    never fine-tunes, and a user seeing a 70-point drop should learn the next command from the output."""
    before, after = result.before.score, result.after.score
    # an untrained detector scores 0 before and after: nothing was lost (its relative drop is 0/0)
    if before is None or after is None or before.drop_to(after) <= 0 or before.drop_to(after, relative=True) <= 0.01:
        return None
    # from model.slimk, train keeps the removed kernels at zero (from model.pt it would train them back)
    name = "model.slimk" if (out / "model.slimk").exists() else "model.pt"
    model, data = shlex.quote(f"file:{out / name}"), shlex.quote(str(data))
    return (f"note: {before.metric} dropped {before.drop_to(after):.3g} without fine-tuning; recover it with "
            f"`slimcnn train {model} --task {task} --data {data} --steps N --out DIR`, or prune and "
            "fine-tune (by distillation from the original) in one run with `slimcnn compress`")


def _slower(result: Any) -> str | None:
    """A warning when the written model measured slower than the original (MACs are not time: widths off the
    runtime's channel blocks, or cuts where the time is not), else None. 2 % of slack: interleaved timings of one
    model differ by about 1 % on the idle benchmark VM."""
    before, after = result.before.cost.latency, result.after.cost.latency
    if before is None or after is None or after.median_ms <= 1.02 * before.median_ms:
        return None
    macs = result.after.cost.macs / max(result.before.cost.macs, 1)
    return (f"warning: the pruned model is SLOWER than the original on {after.runtime} ({before.median_ms:.4g} -> "
            f"{after.median_ms:.4g} ms, {after.median_ms / before.median_ms:.2f}x) at {macs:.3f}x the MACs; prune for "
            "time with --latency (e.g. 0.5x), or keep whole channel blocks with --round-to auto")
