"""``slimcnn prune MODEL``: physical filter/channel pruning with coupled-channel groups."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import typer

from slimcnn.cli._app import app, emit_json, example_for, load_for_cli, note, parse_round_to, say
from slimcnn.errors import ConfigError


def parse_macs(text: str) -> float:
    """``0.5x`` / ``0.5`` / ``50%`` -> 0.5 (fraction of the original MACs to keep)."""
    t = text.strip().lower()
    try:
        if t.endswith("%"):
            return float(t[:-1]) / 100
        return float(t.removesuffix("x"))
    except ValueError:
        raise ConfigError(f"--macs expects a fraction of the original like 0.5x, got '{text}'") from None


def finish_outputs(loaded: Any, new_model: Any, example: Any, out_dir: Path, plan: Any, *, task_obj: Any = None,
                   limit: int | None = None, extra: dict[str, Any] | None = None,
                   latency: bool = True) -> dict[str, Any]:
    """Write model.pt (+ ultralytics best.pt), model.onnx, plan.json, result.json; return the result dict."""
    import dataclasses

    from slimcnn._io import write_json
    from slimcnn.measure import compare_latency, export_onnx, profile
    from slimcnn.models import LoadedModel, save_model
    from slimcnn.prune._ultralytics import (
        is_ultralytics_model,
        save_ultralytics_checkpoint,
        sync_ultralytics_widths_,
    )

    if is_ultralytics_model(new_model):
        sync_ultralytics_widths_(new_model)
    before, after = profile(loaded.model, example), profile(new_model, example)
    save_model(LoadedModel(new_model, loaded.source, loaded.info), out_dir / "model.pt")
    if is_ultralytics_model(new_model):
        save_ultralytics_checkpoint(new_model, out_dir / "yolo.pt")
    export_onnx(new_model, example, out_dir / "model.onnx")
    plan.save(out_dir / "plan.json")
    result: dict[str, Any] = {
        "source": loaded.source,
        "input_shape": list(example.shape),
        "params": {"before": before.params, "after": after.params, "ratio": after.params / max(before.params, 1)},
        "macs": {"before": before.macs, "after": after.macs, "ratio": after.macs / max(before.macs, 1)},
        "pruned_layers": len(plan.layers),
        "criterion": plan.criterion,
        "options": plan.options,
    }
    if latency:
        lat = compare_latency({"before": loaded.model, "after": new_model}, example, runtime="onnxruntime", runs=20, warmup=3)
        result["latency"] = {k: dataclasses.asdict(v) for k, v in lat.items()}
        result["latency"]["speedup"] = lat["before"].median_ms / max(lat["after"].median_ms, 1e-9)
    if task_obj is not None:
        result["score"] = {"before": task_obj.evaluate(loaded.model, limit=limit), "after": task_obj.evaluate(new_model, limit=limit)}
    result.update(extra or {})
    write_json(out_dir / "result.json", result)
    return result


@app.command("prune")
def prune_cmd(
    model: str = typer.Argument(..., help="Model source, e.g. torchvision:resnet18, slimcnn:resnet56, ultralytics:yolov8n.yaml."),
    criterion: str = typer.Option("l1", "--criterion", help="l1, l2, bn_scale, taylor, random, sparsity or chip (kernel: l1, sparsity)."),
    granularity: str = typer.Option("filter", "--granularity", help="filter (channels), kernel (free k×k kernels, compact .slimk file) or grouped (grouped convs)."),
    groups: int = typer.Option(2, "--groups", help="--granularity grouped: groups G per conv (keeps 1/G of the kernels)."),
    ratio: float | None = typer.Option(None, "--ratio", help="Fraction of each coupled group's channels to remove."),
    macs: str | None = typer.Option(None, "--macs", help="Target MACs as a fraction of the original, e.g. 0.5x."),
    scope: str = typer.Option("local", "--scope", help="local (same ratio per group) or global ranking."),
    round_to_text: str = typer.Option("1", "--round-to", help="Round kept widths up to a multiple of N; 'auto' = ONNX Runtime's channel block on this CPU (16 with AVX-512, 8 with AVX2)."),
    exclude: list[str] = typer.Option([], "--exclude", help="fnmatch pattern of layers whose groups stay (repeatable)."),
    reduce: str = typer.Option("sum", "--reduce", help="Group score over members: sum, mean or max."),
    task: str | None = typer.Option(None, "--task", help="classification, sr or detection (needed by taylor/chip; adds the metric)."),
    data: str | None = typer.Option(None, "--data", help="Data for --task."),
    calib: int = typer.Option(8, "--calib", help="Calibration/training batches for data-driven criteria."),
    compensate: bool = typer.Option(False, "--compensate", help="Fold the mean activation of removed channels into the next layer's bias (needs --task/--data)."),
    limit: int | None = typer.Option(None, "--limit", help="Evaluate on the first N validation images."),
    seed: int = typer.Option(0, "--seed", help="Seed for the random criterion and example input."),
    weights: str | None = typer.Option(None, "--weights", help="Local weights to load."),
    arch: str | None = typer.Option(None, "--arch", help="Architecture source for a file: holding a bare state_dict."),
    scale: int | None = typer.Option(None, "--scale", help="Super-resolution factor."),
    input: str | None = typer.Option(None, "--input", help="Input shape like 1x3x224x224 (default: the model's)."),
    no_latency: bool = typer.Option(False, "--no-latency", help="Skip the ONNX Runtime latency comparison."),
    out: Path = typer.Option(..., "--out", help="Output directory (model.pt, model.onnx, plan.json, result.json)."),
    as_json: bool = typer.Option(False, "--json", help="Print result.json on stdout."),
) -> int:
    """Remove whole filters/channels (coupled groups found by tracing) and write the pruned model."""
    import copy

    from slimcnn._io import ensure_output_dir
    from slimcnn.measure import ort_channel_block
    from slimcnn.prune import CRITERIA, prune_model_

    round_to = parse_round_to(round_to_text)
    if granularity not in ("filter", "kernel", "grouped"):
        raise ConfigError(f"--granularity must be filter, kernel or grouped, got '{granularity}'")
    if granularity != "filter" and compensate:
        raise ConfigError(f"--compensate works with --granularity filter only, got '{granularity}'")
    if granularity != "filter":
        return _kernel_granularity(model, granularity, criterion=criterion, ratio=ratio, groups=groups, weights=weights,
                                   arch=arch, scale=scale, input=input, task=task, data=data, limit=limit,
                                   no_latency=no_latency, out=out, as_json=as_json)
    if (ratio is None) == (macs is None):
        raise ConfigError("give exactly one of --ratio R or --macs 0.5x")
    if scope not in ("local", "global"):
        raise ConfigError(f"--scope must be local or global, got '{scope}'")
    if reduce not in ("sum", "mean", "max"):
        raise ConfigError(f"--reduce must be sum, mean or max, got '{reduce}'")
    CRITERIA.get(criterion)
    if criterion == "taylor" and not (task and data):
        raise ConfigError("--criterion taylor needs --task and --data (it backpropagates the task loss)")
    if compensate and not (task and data):
        raise ConfigError("--compensate needs calibration data: pass --task and --data")
    loaded = load_for_cli(model, weights=weights, arch=arch, scale=scale)
    out_dir = ensure_output_dir(out, inputs=tuple(p for p in (model.removeprefix("file:"), weights) if p))
    example = example_for(loaded, input)
    task_obj = None
    if task and data:
        from slimcnn.tasks import make_task

        task_obj = make_task(task, data, info=loaded.info, scale=scale, seed=seed)  # type: ignore[arg-type]
    elif task or data:
        raise ConfigError("--task and --data go together")
    new_model = copy.deepcopy(loaded.model)
    t0 = time.perf_counter()
    outcome = prune_model_(
        new_model, example, criterion=criterion, prune_ratio=ratio, macs=parse_macs(macs) if macs else None,
        scope=scope, round_to=round_to, exclude=exclude, reduce=reduce, task=task_obj, calib=calib,  # type: ignore[arg-type]
        seed=seed, source=loaded.source, compensate=compensate, best_effort=True,
    )
    seconds = time.perf_counter() - t0
    block = ort_channel_block()
    odd = [f for f, kept in outcome.plan.layers.items() if len(kept) >= 2 * block and len(kept) % block]
    if round_to == 1 and block > 1 and odd:
        # ORT runs blocked convs in whole blocks: a width of 24 costs as much as 32 on AVX-512 (README)
        note(f"{len(odd)} pruned layers keep a width that is not a multiple of {block}, ONNX Runtime's channel "
             f"block on this CPU (e.g. '{odd[0]}'); --round-to auto usually runs faster")
    target = parse_macs(macs) if macs else None
    reached = outcome.macs_after / max(outcome.macs_before, 1)
    target_met = target is None or reached <= target + 0.005
    result = finish_outputs(loaded, new_model, example, out_dir, outcome.plan, task_obj=task_obj, limit=limit,
                            extra={"prune_seconds": seconds, "prune_ratio_used": outcome.prune_ratio,
                                   "macs_target": target, "macs_target_met": target_met},
                            latency=not no_latency)
    if as_json:
        emit_json(result)
    else:
        say(f"pruned {loaded.source} with {criterion}: params {result['params']['before']:,} -> "
            f"{result['params']['after']:,}, MACs {result['macs']['before']:,} -> {result['macs']['after']:,} "
            f"({result['macs']['ratio']:.3f}x); wrote {out_dir}")
    if not target_met:
        note(f"MACs target {target:g}x NOT met: the closest model, {reached:.3f}x, is saved in {out_dir} "
             "(the rest is protected: outputs, unmappable ops, excluded layers) (exit code 1)")
        return 1
    return 0


@dataclasses.dataclass(frozen=True)
class _KernelPlan:
    """plan.json of a kernel-granularity run: per layer the kept kernels or the group layout."""

    layers: dict[str, Any]
    criterion: str
    options: dict[str, Any]

    def save(self, path: Path) -> Path:
        from slimcnn._io import write_json

        return write_json(path, {"_type": "KernelPlan", "_version": 1, **dataclasses.asdict(self)})


def _kernel_granularity(model: str, granularity: str, *, criterion: str, ratio: float | None, groups: int,
                        weights: str | None, arch: str | None, scale: int | None, input: str | None,
                        task: str | None, data: str | None, limit: int | None, no_latency: bool, out: Path,
                        as_json: bool) -> int:
    """``--granularity kernel|grouped``: Liu et al.'s criterion at the level of single k×k kernels."""
    import copy

    from slimcnn._io import ensure_output_dir
    from slimcnn.prune.kernel import (
        apply_kernel_masks_,
        default_kernel_layers,
        drop_removable_channels_,
        group_kernels_,
        kernel_masks,
        save_kernel_compact,
    )

    if criterion not in ("l1", "sparsity"):
        raise ConfigError(f"--granularity {granularity} ranks kernels by l1 or sparsity, got '{criterion}'")
    if granularity == "kernel" and ratio is None:
        raise ConfigError("--granularity kernel needs --ratio R (the fraction of k×k kernels to remove)")
    if groups < 2:
        raise ConfigError(f"--groups must be >= 2, got {groups}")
    loaded = load_for_cli(model, weights=weights, arch=arch, scale=scale)
    out_dir = ensure_output_dir(out, inputs=tuple(p for p in (model.removeprefix("file:"), weights) if p))
    example = example_for(loaded, input)
    task_obj = None
    if task and data:
        from slimcnn.tasks import make_task

        task_obj = make_task(task, data, info=loaded.info, scale=scale)
    new_model = copy.deepcopy(loaded.model)
    extra: dict[str, Any] = {"granularity": granularity}
    if granularity == "kernel":
        masks = kernel_masks(new_model, ratio, criterion)  # type: ignore[arg-type]
        apply_kernel_masks_(new_model, masks)
        stats = save_kernel_compact(new_model, masks, out_dir / "model.slimk", source=loaded.source, scale=scale)
        dense_bytes = sum(t.numel() * t.element_size() for t in new_model.state_dict().values())
        extra["compact_file"] = dataclasses.asdict(stats) | {"dense_state_bytes": dense_bytes,
                                                            "ratio": stats.file_bytes / max(dense_bytes, 1)}
        extra["dropped_channels"] = drop_removable_channels_(new_model, example)
        plan = _KernelPlan({k: m.nonzero().tolist() for k, m in masks.items()}, criterion, {"prune_ratio": ratio})
    else:
        layers = {name: groups for name in default_kernel_layers(new_model)}
        report = group_kernels_(new_model, layers, criterion, example_input=example)
        from slimcnn._io import to_json

        grouped = json.loads(to_json(report))
        extra["grouped"] = {"permuted": grouped["permuted"], "pinned": grouped["pinned"],
                            "max_abs_error": grouped["max_abs_error"]}
        plan = _KernelPlan({g["layer"]: g for g in grouped["layers"]}, criterion, {"groups": groups})
    result = finish_outputs(loaded, new_model, example, out_dir, plan, task_obj=task_obj, limit=limit, extra=extra,
                            latency=not no_latency)
    if as_json:
        emit_json(result)
    else:
        say(f"{granularity} pruning of {loaded.source} ({criterion}): MACs {result['macs']['before']:,} -> "
            f"{result['macs']['after']:,} ({result['macs']['ratio']:.3f}x); wrote {out_dir}")
        if "compact_file" in extra:
            cf = extra["compact_file"]
            say(f"compact file model.slimk: {cf['file_bytes']:,} B vs dense {cf['dense_state_bytes']:,} B "
                f"({cf['ratio']:.3f}x; index overhead {cf['index_bytes']:,} B)")
    return 0
