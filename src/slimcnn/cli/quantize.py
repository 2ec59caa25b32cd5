"""``slimcnn quantize MODEL --bits ... --out DIR``: k-means weight sharing + pruning into a packed file."""

from __future__ import annotations

from typing import Any

import typer

from slimcnn.cli._app import FORCE_HELP, RESUME_HELP, app, check_torch_source, emit_json, note, say, say_wrote
from slimcnn.errors import ConfigError


@app.command("quantize")
def quantize_cmd(
    model: str = typer.Argument(..., help="Model source, e.g. slimcnn:alexnet_bvlc, slimcnn:resnet56, torchvision:resnet18."),
    scheme: str = typer.Option("kmeans", "--scheme", help="kmeans (weight sharing into model.slim) or int8 (ONNX Runtime static int8 into model.onnx; needs --task/--data)."),
    calibration: str = typer.Option("minmax", "--calibration", help="--scheme int8: activation ranges, minmax, entropy or percentile."),
    bits: str | None = typer.Option(None, "--bits", help="Bits per layer by fnmatch on module names, first match wins: 'conv1=9,conv*=8,fc*=1' (1..16); '8' = every conv/linear."),
    prune: str | None = typer.Option(None, "--prune", help="Magnitude-pruning factor f per layer (keep 1/f), applied before k-means: 'conv3=2,conv4=2,fc*=3'."),
    global_prune: float | None = typer.Option(None, "--global-prune", help="One magnitude threshold over all quantised layers keeping 1/f in total (instead of --prune)."),
    per_channel: bool = typer.Option(False, "--per-channel", help="One codebook per output channel."),
    method: str = typer.Option("exact", "--method", help="exact (optimal 1-D k-means) or lloyd (Deep Compression: linear init)."),
    codebook: str = typer.Option("fp32", "--codebook", help="Centroid storage: fp16 or fp32 (the quantised model uses the stored values)."),
    huffman: bool = typer.Option(False, "--huffman", help="Huffman-code the indices where that is smaller."),
    finetune_steps: int = typer.Option(0, "--finetune-steps", help="Centroid fine-tuning steps (needs --task/--data); 0 = off as in Tomè et al."),
    task: str | None = typer.Option(None, "--task", help="Task for the before/after metric: classification, sr, detection (default: the model's own task)."),
    data: str | None = typer.Option(None, "--data", help="The task's data (folder, .tar, built-in set)."),
    limit: int | None = typer.Option(None, "--limit", help="Evaluate on the first N images only."),
    weight_bytes: str | None = typer.Option(None, "--weight-bytes", help="Planner: fit the weights as model.slim stores them (codebooks, indices, keep masks, float32 rest) into 4MB, 512KiB or 0.1x of the float32 bytes."),
    max_drop: str | None = typer.Option(None, "--max-drop", help="Planner: allowed metric drop, 0.5 (metric units) or 1%; exit 1 when the written model loses more."),
    weights: str | None = typer.Option(None, "--weights", help="Local weights (state_dict) to load."),
    arch: str | None = typer.Option(None, "--arch", help="Architecture source for a file: holding a bare state_dict."),
    scale: int | None = typer.Option(None, "--scale", help="Super-resolution factor (a slimcnn: SR model's weights, the sr task)."),
    seed: int = typer.Option(0, "--seed", help="Seed of a model built with random weights (no --weights)."),
    out: str = typer.Option(..., "--out", help="Output directory: model.slim, model.pt, model.onnx, result.json."),
    no_onnx: bool = typer.Option(False, "--no-onnx", help="Skip the ONNX export."),
    force: bool = typer.Option(False, "--force", help=FORCE_HELP),
    resume: bool = typer.Option(False, "--resume", help=RESUME_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print exactly one JSON object on stdout."),
) -> int:
    """Share weights by k-means (+ magnitude pruning) into a packed .slim file with honest sizes, or (--scheme
    int8) quantise to int8 with ONNX Runtime: model.onnx is the int8 model, scored and timed itself."""
    check_torch_source(model, "quantize")
    if scheme not in ("kmeans", "int8"):
        raise ConfigError(f"--scheme must be kmeans or int8, got '{scheme}'")
    if scale is not None and scale < 1:
        raise ConfigError(f"--scale must be >= 1, got {scale}")
    if scheme == "int8":
        kmeans_flags = {"--bits": bits, "--prune": prune, "--global-prune": global_prune, "--weight-bytes": weight_bytes,
                        "--per-channel": per_channel or None, "--huffman": huffman or None,
                        "--finetune-steps": finetune_steps or None, "--method": None if method == "exact" else method,
                        "--codebook": None if codebook == "fp32" else codebook, "--no-onnx": no_onnx or None}
        given = [flag for flag, value in kmeans_flags.items() if value is not None]
        if given:
            raise ConfigError(f"{given[0]} is a k-means option; --scheme int8 takes --task, --data, --calibration, "
                              "--max-drop (keeps the most sensitive layers in float) and --limit")
        return _int8(model, task=task, data=data, calibration=calibration, max_drop=max_drop, limit=limit,
                     weights=weights, arch=arch, scale=scale, seed=seed, out=out, force=force, resume=resume,
                     as_json=as_json)
    if calibration != "minmax":
        raise ConfigError("--calibration applies to --scheme int8")
    from slimcnn.quantize import KMeansQuantSpec
    from slimcnn.quantize._run import format_bytes, larger_warning, quantize_to_dir, size_ratio_text
    from slimcnn.search.budget import ConstraintCheck, parse_amount, parse_drop

    options = {"per_channel": per_channel, "method": method, "codebook_dtype": codebook, "global_prune": global_prune}
    spec = KMeansQuantSpec.parse(bits, prune, **options) if bits is not None else None
    if spec is None and weight_bytes is not None:
        spec = KMeansQuantSpec.parse("8", None, **options)
    budget = parse_amount(weight_bytes, "weight_bytes") if weight_bytes is not None else None
    drop = parse_drop(max_drop) if max_drop is not None else None
    res = quantize_to_dir(
        model, out, spec=spec, weights=weights, huffman=huffman, task=task, data=data, limit=limit,
        finetune_steps=finetune_steps, weight_bytes=budget, max_drop=drop, onnx=not no_onnx,
        arch=arch, scale=scale, seed=seed, force=force, resume=resume,
    )
    for line in res.notes:
        note(f"note: {line}")
    warning = larger_warning(res)
    if warning is not None:
        note(warning)
    if not finetune_steps and res.drop is not None and res.before and res.drop > 0.01 * abs(res.before["value"]):
        note(f"note: {res.before['metric']} dropped {res.drop:.3g} at these bits; --finetune-steps N trains the "
             "centroids on --data (Deep Compression's fine-tuning; Tomè et al. use none), or give more --bits")
    if as_json:
        from slimcnn.run import read_result

        emit_json(read_result(res.out))
        return _budget_exit(res)
    say(f"{'layer':<24}{'bits':>5}{'keep':>8}{'bits*kept/8 KiB':>17}{'file KiB':>10}  solver")
    for row in res.layers:
        fb = row.get("file_codebook_bytes", 0) + row.get("file_index_bytes", 0) + row.get("file_mask_bytes", 0)
        say(f"{row['name']:<24}{row['bits']:>5}{1 - row['sparsity']:>8.3f}{row['payload_bytes'] / 1024:>17.1f}{fb / 1024:>10.1f}  {row['solver']}")
    orig = res.original_bytes
    say(f"original (float32 parameters): {format_bytes(orig)}")
    say(f"weights as stored: {format_bytes(res.weight_bytes)}  ({size_ratio_text(orig, res.weight_bytes)}; codebooks, "
        f"indices and keep masks {format_bytes(res.weight_bytes - res.float_bytes)} + float32 rest "
        f"{format_bytes(res.float_bytes)}; what --weight-bytes judges)")
    say(f"model.slim file: {format_bytes(res.file_bytes)}  ({size_ratio_text(orig, res.file_bytes)}; + header, "
        "buffers)")
    say(f"paper accounting (bits x kept / 8, quantised layers only): {format_bytes(res.paper_payload_bytes)}  "
        f"({size_ratio_text(orig, res.paper_payload_bytes)})")
    if res.before is not None and res.after is not None:
        say(f"{res.before['metric']}: {res.before['value']:.2f} -> {res.after['value']:.2f} (drop {res.drop:.2f})")
    for c in res.checks:
        say(f"  {ConstraintCheck(**c).line()}")
    say_wrote(res.out)
    return _budget_exit(res)


def _int8(model: str, *, task: str | None, data: str | None, calibration: str, max_drop: str | None,
          limit: int | None, weights: str | None, arch: str | None, scale: int | None, seed: int, out: str,
          force: bool, resume: bool, as_json: bool) -> int:
    """``--scheme int8``: the ``onnx-int8`` export as a quantize run (model.onnx + plan.json with the int8 step)."""
    import dataclasses

    from slimcnn.cli._app import check_task, load_for_cli, open_run, say_notes, task_for
    from slimcnn.export import ExportSpec, Int8Spec, check_export, export_to_run
    from slimcnn.run import read_result, write_run

    check_task(task, data)
    if limit is not None and limit < 1:
        raise ConfigError(f"--limit must be >= 1, got {limit}")
    int8 = Int8Spec(calibration=calibration, float_fallback="auto" if max_drop is not None else None,  # type: ignore[arg-type]
                    max_drop=max_drop)
    spec = ExportSpec(format="onnx-int8", int8=int8)
    check_export(model, spec, task=task, data=data)
    options = {"scheme": "int8", "calibration": calibration, "max_drop": max_drop, "task": task, "limit": limit,
               "arch": arch, "scale": scale, "seed": seed}
    with open_run("quantize", out, model=model, weights=weights, data={"data": data}, options=options, force=force,
                  resume=resume) as run:
        say_notes(run)
        loaded = load_for_cli(model, weights=weights, arch=arch, scale=scale, seed=seed, task=task, data=data, run=run)
        from slimcnn.tasks import make_task

        task = task_for(task, data, loaded.info)
        task_obj = make_task(task, data, info=loaded.info, scale=scale)  # type: ignore[arg-type]
        result = export_to_run(run, loaded, model, spec, task_obj.example_input(), task=task_obj, task_name=task,
                               limit=limit, options=options, seed=seed)
        result = dataclasses.replace(result, command="quantize")
        write_run(run, result)
    for line in result.notes:
        note(f"note: {line}")
    if as_json:
        emit_json(read_result(run.out))
        return 0
    say(result.details["summary"])
    say(f"int8 weight bytes (every initializer of model.onnx): {result.after.cost.weight_bytes:,}; "
        f"ONNX Runtime latency {result.details['latency_ratio']:.3f}x the fp32 model (interleaved)")
    say_wrote(run.out)
    fb = result.details.get("float_fallback", {})
    return 1 if fb.get("final_met") is False else 0


def _budget_exit(res: Any) -> int:
    if res.met is False:
        note(f"budget NOT met: the closest model is saved in {res.out} (exit code 1)")
        return 1
    return 0
