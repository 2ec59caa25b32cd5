"""``slimcnn search MODEL``: the smallest/fastest model that meets a quality and a hardware target."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import typer

from slimcnn.cli._app import (
    app,
    check_device,
    emit_json,
    example_for,
    load_for_cli,
    note,
    parse_round_to,
    say,
)
from slimcnn.errors import ConfigError


def _summary(result: Any) -> dict[str, Any]:
    def side(d: dict[str, Any]) -> dict[str, Any]:
        cost = d["cost"]
        return {"score": dataclasses.asdict(d["score"]), "params": cost.params, "macs": cost.macs,
                "weight_bytes": cost.weight_bytes,
                "latency": dataclasses.asdict(cost.latency) if cost.latency is not None else None}

    return {"before": side(result.before), "after": side(result.after),
            "checks": [dataclasses.asdict(c) for c in result.checks], "met": result.met}


@app.command("search")
def search_cmd(
    model: str = typer.Argument(..., help="Model source, e.g. slimcnn:fsrcnn, slimcnn:lenet5, file:model.pt."),
    task: str = typer.Option(..., "--task", help="classification, sr or detection."),
    data: str = typer.Option(..., "--data", help="Training data (also validation unless --val-data)."),
    val_data: str | None = typer.Option(None, "--val-data", help="Validation data that drives the search."),
    metric: str | None = typer.Option(None, "--metric", help="Detection metric driving the search: map50_95 (default) or map50."),
    method: str = typer.Option("prune", "--method", help="prune, kernel, lowrank or kmeans."),
    strategy: str = typer.Option("greedy", "--strategy", help="greedy, cpo (Liu et al.) or iterative (Pavlitska et al.)."),
    criterion: str | None = typer.Option(None, "--criterion", help="Channel criterion for prune (l1, sparsity, chip...)."),
    max_drop: str | None = typer.Option(None, "--max-drop", help="Allowed metric drop: 0.2 (dB/points) or 1%."),
    macs: str | None = typer.Option(None, "--macs", help="MACs limit: 0.5x or 300M."),
    params: str | None = typer.Option(None, "--params", help="Parameter limit: 0.5x or 1M."),
    weight_bytes: str | None = typer.Option(None, "--weight-bytes", help="Weight memory limit: 4MB, 512KiB, 0.25x."),
    latency: str | None = typer.Option(None, "--latency", help="Latency limit on --runtime: 12ms or 0.7x."),
    runtime: str | None = typer.Option(None, "--runtime", help="onnxruntime or torch (measures latency)."),
    threads: int | None = typer.Option(None, "--threads", help="Runtime threads."),
    objective: str | None = typer.Option(None, "--objective", help="What to minimise: macs, params, weight_bytes, latency_ms."),
    finetune_steps: int = typer.Option(0, "--finetune-steps", help="Fine-tuning steps per measured point/step/iteration."),
    lr: float | None = typer.Option(None, "--lr", help="Fine-tuning learning rate."),
    limit: int | None = typer.Option(None, "--limit", help="Validation images used while searching."),
    workers: int = typer.Option(1, "--workers", help="Worker processes for the sensitivity sweep."),
    iterations: int = typer.Option(3, "--iterations", help="Iterations of the iterative strategy."),
    alpha: float = typer.Option(20.0, "--alpha", help="Metric exponent of the iterative strategy's score."),
    round_to: str = typer.Option("1", "--round-to", help="Round kept channels to a multiple of N; 'auto' = ONNX Runtime's channel block on this CPU (16 with AVX-512, 8 with AVX2)."),
    exclude: list[str] = typer.Option([], "--exclude", help="fnmatch pattern of layers to leave alone (repeatable)."),
    amounts: str | None = typer.Option(None, "--amounts", help="Amounts the sweep tries per knob, e.g. 0.125,0.25,0.5 (prune: fraction removed; lowrank: fraction of weights removed; kmeans: bits)."),
    input: str | None = typer.Option(None, "--input", help="Input shape for costs and latency, e.g. 1x1x128x128 (default: the task's example input)."),
    compensate: bool = typer.Option(False, "--compensate", help="prune: fold removed channels' mean activations into the next layer's bias."),
    accumulate: bool = typer.Option(False, "--accumulate", help="cpo: prune each step's retrained model further (the paper) instead of the original."),
    device: str = typer.Option("cpu", "--device", help="Where fine-tuning and evaluation run: cpu, cuda, cuda:1, ..."),
    scale: int | None = typer.Option(None, "--scale", help="Super-resolution factor."),
    weights: str | None = typer.Option(None, "--weights", help="Local weights (state_dict) to load."),
    arch: str | None = typer.Option(None, "--arch", help="Architecture source for a file: holding a bare state_dict."),
    num_classes: int | None = typer.Option(None, "--num-classes", help="Classes when building a model."),
    out: Path = typer.Option(..., "--out", help="Output directory."),
    as_json: bool = typer.Option(False, "--json", help="Print result.json on stdout."),
) -> int:
    """Search per-layer amounts of a transform so the model meets --max-drop and the hardware limits."""
    from slimcnn._io import ensure_output_dir
    from slimcnn.models import LoadedModel, save_model
    from slimcnn.search import Budget, SearchSpec, search
    from slimcnn.tasks import make_task

    check_device(device)
    if max_drop is None and not any((macs, params, weight_bytes, latency)):
        raise ConfigError("give a target: --max-drop and/or one of --macs, --params, --weight-bytes, --latency")
    if latency is not None and runtime is None:
        runtime = "onnxruntime"
    budget = Budget.from_options(max_drop=max_drop, macs=macs, params=params, weight_bytes=weight_bytes,
                                 latency=latency, objective=objective)  # type: ignore[arg-type]
    loaded = load_for_cli(model, weights=weights, arch=arch, scale=scale, num_classes=num_classes)
    out_dir = ensure_output_dir(out, inputs=tuple(p for p in (model.removeprefix("file:"), weights) if p))
    task_obj = make_task(task, data, info=loaded.info, scale=scale, val_data=val_data, metric=metric)
    spec = SearchSpec(method=method, strategy=strategy, criterion=criterion, finetune_steps=finetune_steps,
                      finetune={"lr": lr} if lr is not None else {}, limit=limit, workers=workers, runtime=runtime,
                      threads=threads, iterations=iterations, alpha=alpha, round_to=parse_round_to(round_to), exclude=tuple(exclude),
                      compensate=compensate, amounts=_parse_amounts(amounts), device=device,
                      accumulate=accumulate)
    example = example_for(loaded, input) if input else None
    result = search(loaded.model, task_obj, budget, spec, source=loaded.source, example_input=example,
                    resume=str(out_dir / "sensitivity.json"), progress=not as_json)
    write_outputs(result, loaded, out_dir, spec, budget, save_model=save_model, loaded_cls=LoadedModel,
                  example=example)
    report = json.loads((out_dir / "result.json").read_text())
    if as_json:
        emit_json(report)
    else:
        b, a = report["before"], report["after"]
        say(f"{b['score']['metric']}: {b['score']['value']:.4f} → {a['score']['value']:.4f}; "
            f"MACs {b['macs']:,} → {a['macs']:,}; params {b['params']:,} → {a['params']:,}; "
            f"weights {b['weight_bytes']:,} → {a['weight_bytes']:,} B")
        for c in report["checks"]:
            say(f"  {c['name']}: {c['value']:.6g} (limit {c['limit']:.6g}) {'met' if c['met'] else 'NOT MET'}")
        say(f"wrote {out_dir}/ model.pt model.onnx plan.json result.json pareto.json pareto.png")
    if not report["met"]:
        note("budget NOT met: the closest point reached is saved in " + str(out_dir) + " (exit code 1)")
        return 1
    return 0


def write_outputs(result: Any, loaded: Any, out_dir: Path, spec: Any, budget: Any, *, save_model: Any,
                  loaded_cls: Any, example: Any = None) -> None:
    """model.pt, model.onnx, plan.json, pareto.json (+png), sensitivity.png, result.json — all atomic."""
    from slimcnn._io import write_json
    from slimcnn.measure import export_onnx
    from slimcnn.prune import fingerprint
    from slimcnn.report import plot_pareto, plot_sensitivity

    example = example_for(loaded, None) if example is None else example
    save_model(loaded_cls(result.model, loaded.source, loaded.info), out_dir / "model.pt")
    export_onnx(result.model, example, out_dir / "model.onnx")
    plan = {"_type": "SearchPlan", "_version": 1, "method": spec.method, "strategy": spec.strategy,
            "criterion": spec.criterion, "source": loaded.source, "fingerprint": fingerprint(loaded.model),
            "assignment": result.assignment, "details": result.details,
            "steps": result.strategy_log.get("plans", []), "finetune_steps": spec.finetune_steps,
            "input_shape": list(example.shape) if hasattr(example, "shape") else None}
    write_json(out_dir / "plan.json", plan)
    write_json(out_dir / "pareto.json", {"objective": budget.objective, "points": result.tried})
    if result.tried:
        x = budget.objective if all(budget.objective in p for p in result.tried) else "macs"
        chosen = result.tried[-1] if spec.strategy == "iterative" else None
        plot_pareto(result.tried, out_dir / "pareto.png", x=x, metric=result.before["score"].metric, chosen=chosen)
    if result.sensitivity is not None and result.sensitivity.points:
        plot_sensitivity(result.sensitivity, out_dir / "sensitivity.png")
    summary = _summary(result)
    write_json(out_dir / "result.json", {
        "source": loaded.source, "spec": dataclasses.asdict(spec),
        "budget": {"max_drop": str(budget.max_drop) if budget.max_drop else None,
                   "limits": {k: str(v) for k, v in budget.limits.items()}, "objective": budget.objective},
        **summary, "assignment": result.assignment, "strategy": result.strategy_log,
        "seconds": round(result.seconds, 2),
    })


def _parse_amounts(text: str | None) -> tuple[float, ...] | None:
    """``"0.25,0.5"`` -> ``(0.25, 0.5)``; a one-line error for anything else."""
    if text is None:
        return None
    try:
        vals = tuple(sorted({float(v) for v in text.split(",") if v.strip()}))
    except ValueError:
        vals = ()
    if not vals or any(v <= 0 for v in vals):
        raise ConfigError(f"--amounts must be positive numbers separated by commas, got '{text}'")
    return vals
