"""``slimcnn export MODEL --format onnx|onnx-int8|onnx-kmeans|c --out DIR``: a deployable artifact, measured."""

from __future__ import annotations

from pathlib import Path

import typer

from slimcnn.cli._app import (
    FORCE_HELP,
    RESUME_HELP,
    app,
    check_task,
    check_torch_source,
    emit_json,
    example_for,
    load_for_cli,
    note,
    open_run,
    parse_shape,
    say,
    say_notes,
    say_wrote,
    task_for,
)
from slimcnn.errors import ConfigError


@app.command("export")
def export_cmd(
    model: str = typer.Argument(..., help="Model source: slimcnn:resnet56, file:out/model.slim (k-means), file:model.pt, ..."),
    format: str = typer.Option(..., "--format", help="onnx (fp32), onnx-int8 (ORT static PTQ), onnx-kmeans (indices + codebook decoded in-graph), c (arrays + C decoder)."),
    bits: str | None = typer.Option(None, "--bits", help="onnx-kmeans/c of a model that is not a .slim: k-means bits per layer, '4' or 'conv1=8,conv*=4,fc*=2'."),
    prune: str | None = typer.Option(None, "--prune", help="With --bits: magnitude-pruning factor per layer (keep 1/f), 'fc*=3'."),
    per_channel_codebook: bool = typer.Option(False, "--per-channel-codebook", help="With --bits: one codebook per output channel."),
    calibration: str = typer.Option("minmax", "--calibration", help="onnx-int8 activation ranges: minmax, entropy or percentile."),
    calibration_samples: int = typer.Option(512, "--calibration-samples", help="onnx-int8: calibration images from the task's training data."),
    percentile: float = typer.Option(99.999, "--percentile", help="onnx-int8 with --calibration percentile."),
    per_tensor: bool = typer.Option(False, "--per-tensor", help="onnx-int8: one weight scale per tensor (default: per output channel)."),
    reduce_range: bool | None = typer.Option(None, "--reduce-range/--full-range", help="onnx-int8: 7-bit / 8-bit weights (default: 7-bit on an x86 CPU without VNNI, whose u8s8 kernels saturate; else 8-bit)."),
    symmetric_activations: bool = typer.Option(False, "--symmetric-activations", help="onnx-int8: int8 activations symmetric around 0 (default: asymmetric uint8)."),
    quant_format: str = typer.Option("qdq", "--quant-format", help="onnx-int8: qdq (Q/DQ pairs ORT fuses) or qoperator (QLinearConv... nodes)."),
    float_layers: list[str] = typer.Option([], "--float-layers", help="onnx-int8: fnmatch pattern of layers kept in float32 (repeatable)."),
    float_fallback: str | None = typer.Option(None, "--float-fallback", help="onnx-int8: keep the most sensitive layers in float, measured per layer on the task's data: 'auto' (fewest that meet --max-drop) or N (the N most sensitive)."),
    max_drop: str | None = typer.Option(None, "--max-drop", help="With --float-fallback auto: allowed score drop, 0.5 (points/dB) or 1% of the original's score."),
    sweep_limit: int = typer.Option(1000, "--sweep-limit", help="With --float-fallback: evaluation images of the per-layer sensitivity sweep (the final score uses --limit/all)."),
    c_prefix: str = typer.Option("slim_model", "--c-prefix", help="c: C name prefix and file stem of the weights."),
    task: str | None = typer.Option(None, "--task", help="classification, sr or detection (default: the model's own task); with --data: score before/after (onnx-int8: calibration)."),
    data: str | None = typer.Option(None, "--data", help="The task's data (folder, .tar, built-in set)."),
    limit: int | None = typer.Option(None, "--limit", help="Score on the first N images only."),
    threads: int | None = typer.Option(None, "--threads", help="ONNX Runtime threads for the latency comparison (default: physical cores)."),
    runs: int = typer.Option(50, "--runs", help="Interleaved timing rounds (original fp32 vs the artifact)."),
    input: str | None = typer.Option(None, "--input", help="Input shape like 1x3x32x32 (default: the model's); the batch stays dynamic."),
    weights: str | None = typer.Option(None, "--weights", help="Local weights (state_dict) to load."),
    arch: str | None = typer.Option(None, "--arch", help="Architecture source for a file: holding a bare state_dict."),
    scale: int | None = typer.Option(None, "--scale", help="Super-resolution factor (a slimcnn: SR model's weights, the sr task)."),
    seed: int = typer.Option(0, "--seed", help="Seed of a model built with random weights (no --weights)."),
    out: Path = typer.Option(..., "--out", help="Output directory: model.onnx (+ model.json) or the C files, result.json."),
    force: bool = typer.Option(False, "--force", help=FORCE_HELP),
    resume: bool = typer.Option(False, "--resume", help=RESUME_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print result.json on stdout."),
) -> int:
    """Write MODEL as a deployable file (ONNX fp32/int8/k-means or C arrays) and measure the file written."""
    check_torch_source(model, "export", onnx_ok=True)
    from slimcnn.export._int8 import Int8Spec
    from slimcnn.export._run import ExportSpec, check_export, export_to_run
    from slimcnn.quantize import KMeansQuantSpec
    from slimcnn.run import read_result, write_run

    check_task(task, data)
    for flag, value, low in (("--limit", limit, 1), ("--threads", threads, 1), ("--runs", runs, 1), ("--scale", scale, 1)):
        if value is not None and value < low:
            raise ConfigError(f"{flag} must be >= {low}, got {value}")
    if prune is not None and bits is None:
        raise ConfigError("--prune goes with --bits (k-means after magnitude pruning)")
    int8_flags = calibration != "minmax" or calibration_samples != 512 or percentile != 99.999 or per_tensor \
        or reduce_range is not None or bool(float_layers) or float_fallback is not None or max_drop is not None or sweep_limit != 1000 \
        or symmetric_activations or quant_format != "qdq"
    if int8_flags and format != "onnx-int8":
        raise ConfigError(f"--calibration/--calibration-samples/--percentile/--per-tensor/--reduce-range/--full-range/--float-layers/"
                          f"--float-fallback/--max-drop/--sweep-limit/--symmetric-activations/--quant-format apply to "
                          f"--format onnx-int8, not {format}")
    if c_prefix != "slim_model" and format != "c":
        raise ConfigError(f"--c-prefix applies to --format c, not {format}")
    if format == "c" and not (c_prefix.isidentifier() and c_prefix.isascii()):
        raise ConfigError(f"--c-prefix must be a C identifier (letters, digits, _), got '{c_prefix}'")
    kmeans = KMeansQuantSpec.parse(bits, prune, per_channel=per_channel_codebook) if bits is not None else None
    if kmeans is None and per_channel_codebook:
        raise ConfigError("--per-channel-codebook goes with --bits")
    int8 = Int8Spec(calibration=calibration, samples=calibration_samples, per_channel=not per_tensor,  # type: ignore[arg-type]
                    percentile=percentile, reduce_range=reduce_range, float_layers=tuple(float_layers),
                    float_fallback=float_fallback, max_drop=max_drop, sweep_limit=sweep_limit,
                    symmetric_activations=symmetric_activations, quant_format=quant_format)  # type: ignore[arg-type]
    spec = ExportSpec(format=format, kmeans=kmeans, int8=int8, c_prefix=c_prefix)  # type: ignore[arg-type]
    check_export(model, spec, task=task, data=data)
    if input:
        parse_shape(input)
    options = {"format": format, "bits": bits, "prune": prune, "per_channel_codebook": per_channel_codebook,
               "calibration": calibration, "calibration_samples": calibration_samples, "percentile": percentile,
               "per_tensor": per_tensor, "reduce_range": reduce_range, "float_layers": list(float_layers),
               "float_fallback": float_fallback, "max_drop": max_drop, "sweep_limit": sweep_limit,
               "symmetric_activations": symmetric_activations, "quant_format": quant_format,
               "c_prefix": c_prefix, "task": task, "limit": limit, "threads": threads, "runs": runs, "input": input,
               "arch": arch, "scale": scale, "seed": seed}
    with open_run("export", out, model=model, weights=weights, data={"data": data}, options=options,
                  force=force, resume=resume) as run:
        say_notes(run)
        loaded = load_for_cli(model, weights=weights, arch=arch, scale=scale, seed=seed, task=task, data=data,
                              input=input, run=run)
        example = example_for(loaded, input)
        task = task_for(task, data, loaded.info)
        task_obj = None
        if task is not None:
            from slimcnn.tasks import make_task

            task_obj = make_task(task, data, info=loaded.info, scale=scale)  # type: ignore[arg-type]
        result = export_to_run(run, loaded, model, spec, example, task=task_obj, task_name=task, limit=limit,
                               threads=threads, runs=runs, options=options, seed=seed)
        write_run(run, result)
    for line in result.notes:
        note(f"note: {line}")
    if as_json:
        emit_json(read_result(run.out))
        return 0
    d = result.details
    for name, size in d["files"].items():
        say(f"{name:<24}{size:>14,} bytes")
    if "parity" in d:
        on = d["parity"].get("input", "random example input")
        say(f"ONNX Runtime parity ({on}): " + ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}"
                                                      for k, v in d["parity"].items() if k != "input"))
    if "onnx_vs_slim" in d:
        say(f"model.onnx is {d['onnx_vs_slim']:.3f}x the .slim file ({d['slim_bytes']:,} bytes) and "
            f"{d['onnx_vs_fp32_onnx']:.3f}x the fp32 ONNX ({d['fp32_onnx_bytes']:,} bytes)")
    if "float_fallback" in d:
        fb = d["float_fallback"]
        say(f"float fallback: {', '.join(fb['chosen']) or 'no layer'} kept in float "
            f"(drop {fb.get('final_drop', float('nan')):.2f} on the written file)")
    if d.get("summary"):
        say(d["summary"])
    say_wrote(run.out)
    return 0
