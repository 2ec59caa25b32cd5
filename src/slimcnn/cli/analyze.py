"""``slimcnn analyze MODEL``: params, MACs, memory and latency of a model, per layer."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import typer

from slimcnn.cli._app import app, check_torch_source, emit_json, note, parse_shape, say
from slimcnn.errors import ConfigError, SlimcnnError
from slimcnn.types import Cost


def _human(n: float, unit: str = "") -> str:
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            return f"{n / div:.2f} {suffix}{unit}"
    return f"{n:.0f} {unit}".rstrip()


def cost_to_json(cost: Cost, *, source: str, notes: tuple[str, ...] = (), pretrained: bool | None = None) -> dict[str, Any]:
    """The ``--json`` object: totals, ``latency`` (or null), ``layers`` and where it came from."""
    return {
        "source": source,
        "input_shape": list(cost.input_shape),
        "params": cost.params,
        "macs": cost.macs,
        "weight_bytes": cost.weight_bytes,
        "activation_bytes": cost.activation_bytes,
        "latency": dataclasses.asdict(cost.latency) if cost.latency is not None else None,
        "layers": [dataclasses.asdict(row) for row in cost.layers],
        "pretrained": pretrained,
        "notes": list(notes),
    }


def _print_table(cost: Cost, source: str) -> None:
    from rich.console import Console
    from rich.table import Table

    shape = "x".join(str(d) for d in cost.input_shape)
    table = Table(title=f"{source} @ {shape}", show_footer=True)
    has_lat = any(r.latency_ms is not None for r in cost.layers)
    table.add_column("layer", footer="total")
    table.add_column("type", no_wrap=True)
    table.add_column("params", justify="right", footer=f"{cost.params:,}")
    table.add_column("MACs", justify="right", footer=f"{cost.macs:,}")
    table.add_column("output", justify="right")
    if has_lat:
        table.add_column("latency_ms", justify="right", footer="(alone)")
    for r in cost.layers:
        cells = [r.name or "(model)", r.type, f"{r.params:,}", f"{r.macs:,}", "x".join(str(d) for d in r.output_shape)]
        if has_lat:
            cells.append("" if r.latency_ms is None else f"{r.latency_ms:.3f}")
        table.add_row(*cells)
    console = Console()
    console.print(table)
    console.print(f"params {_human(cost.params)}  MACs {_human(cost.macs)}  weights {_human(cost.weight_bytes, 'B')}  "
                  f"peak activations {_human(cost.activation_bytes, 'B')}")
    lat = cost.latency
    if lat is not None:
        console.print(f"latency {lat.median_ms:.3f} ms median (p10 {lat.p10_ms:.3f}, p90 {lat.p90_ms:.3f}, n={lat.n}) "
                      f"on {lat.runtime}, {lat.threads} threads, {lat.device}, batch {lat.batch}")


@app.command("analyze")
def analyze_cmd(
    model: str = typer.Argument(..., help="Model source, e.g. torchvision:resnet18, slimcnn:fsrcnn, file:model.pt."),
    weights: str | None = typer.Option(None, "--weights", help="Local weights (state_dict) to load."),
    arch: str | None = typer.Option(None, "--arch", help="Architecture source for a file: holding a bare state_dict."),
    scale: int | None = typer.Option(None, "--scale", help="Super-resolution factor (slimcnn: SR models)."),
    input_shape: str | None = typer.Option(None, "--input", help="Input shape like 1x3x224x224 (default: the model's)."),
    runtime: str = typer.Option("onnxruntime", "--runtime", help="Latency runtime: onnxruntime or torch."),
    threads: int | None = typer.Option(None, "--threads", help="Intra-op threads (default: physical cores)."),
    no_latency: bool = typer.Option(False, "--no-latency", help="Count params/MACs/memory only; skip timing."),
    per_layer: bool = typer.Option(True, "--per-layer/--no-per-layer", help="Also time each conv/linear layer alone."),
    bits: int = typer.Option(32, "--bits", help="Bits per weight for the weight size."),
    runs: int = typer.Option(50, "--runs", help="Timed runs of the whole model."),
    groups: bool = typer.Option(False, "--groups", help="Also list the coupled channel groups pruning sees: size, members, and why a group (or some of its channels) is fixed; and whether pruning runs the pruned model once to check its shapes and values, and why."),
    as_json: bool = typer.Option(False, "--json", help="Print exactly one JSON object on stdout."),
) -> int:
    """Params, MACs, weight and activation memory, and latency of MODEL (per layer and in total)."""
    check_torch_source(model, "analyze", onnx_ok=True)
    import torch

    from slimcnn.export._run import is_onnx_source, is_slim_source
    from slimcnn.measure import analyze
    from slimcnn.measure._latency import RUNTIMES
    from slimcnn.models import load_model

    if runtime not in RUNTIMES:
        raise ConfigError(f"--runtime must be one of {list(RUNTIMES)}, got '{runtime}'")
    for flag, value in (("--threads", threads), ("--runs", runs), ("--scale", scale)):
        if value is not None and value < 1:
            raise ConfigError(f"{flag} must be >= 1, got {value}")
    if not 1 <= bits <= 64:
        raise ConfigError(f"--bits is the bits per weight, 1 to 64, got {bits}")
    if input_shape:
        parse_shape(input_shape)
    loaded = load_model(model, weights=weights, arch=arch, scale=scale)
    for line in loaded.info.notes:
        note(f"note: {line}")
    shape = parse_shape(input_shape) if input_shape else tuple(loaded.info.input_shape)
    if not input_shape:
        _note_run_input(model, shape)
    example = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    if is_onnx_source(model):  # the file itself, in ONNX Runtime
        return _analyze_onnx(loaded, example, runtime=runtime, threads=threads, runs=runs, latency=not no_latency,
                             groups=groups, as_json=as_json)
    cost = analyze(loaded.model, example, runtime=runtime, threads=threads, per_layer=per_layer,  # type: ignore[arg-type]
                   bits=bits, latency=not no_latency, runs=runs)
    if is_slim_source(model) and bits == 32:
        cost = _as_stored(cost, model.removeprefix("file:"), loaded.model)
    elif model.startswith("file:") and model.lower().endswith(".slimk") and bits == 32:
        cost = _as_stored_kernels(cost, model.removeprefix("file:"))
    traced = _groups(loaded.model, example) if groups else None
    if as_json:
        emit_json(cost_to_json(cost, source=loaded.source, notes=loaded.info.notes, pretrained=loaded.info.pretrained)
                  | (traced or {}))
    else:
        _print_table(cost, loaded.source)
        if traced is not None:
            _print_groups(traced)
    return 0


def _note_run_input(model: str, shape: tuple[int, ...]) -> None:
    """A model a run wrote keeps its source's input (it sets evaluation preprocessing), but the run may have counted
    and timed it at its own ``--input``: say so, so the numbers below are not read as contradicting result.json."""
    if not model.startswith("file:"):
        return
    from slimcnn.run import read_result

    path = Path(model.removeprefix("file:"))
    try:
        result = read_result(path.parent)
        if not any(a.get("path") == path.name for a in result.get("artifacts", [])):
            return
        measured = tuple(int(d) for d in result["after"]["cost"]["input_shape"])
    except (OSError, ValueError, KeyError, TypeError):  # no run folder around it, or another schema: nothing to say
        return
    if measured and measured != tuple(shape):
        run_shape = "x".join(map(str, measured))
        note(f"note: the {result.get('command', 'run')} run that wrote {path.name} counted it at input {run_shape} "
             f"(its result.json); this counts the model's own {'x'.join(map(str, shape))}: pass --input {run_shape} "
             "to count as the run did")


def _as_stored(cost: Cost, path: str, model: Any) -> Cost:
    """``cost`` with the weight bytes a ``.slim`` file stores (codebooks, indices, masks; float32 rest), in total and
    per quantised layer: the decoded model's float32 bytes (what it printed) are not what k-means saved. Whole
    k×k kernels the file keeps at zero (removed before k-means: compress's kernel stage) are gone from params and
    MACs, as compress counted them and as a ``.slimk`` is counted."""
    from slimcnn.quantize._read import read_packed, stored_weight_bytes

    total, saved = stored_weight_bytes(read_packed(path).header)
    note(f"note: weight bytes as {Path(path).name} stores them: {total:,} B (float32 after decoding: "
         f"{cost.weight_bytes:,} B)")
    rows = tuple(dataclasses.replace(r, weight_bytes=r.weight_bytes - saved.get(r.name, 0)) for r in cost.layers)
    cost = dataclasses.replace(cost, weight_bytes=total, layers=rows)
    from slimcnn.run._artifacts import still_convs
    from slimcnn.search.families import removed_kernels

    # the convolutions, as compress and search count them
    return _without_kernels(cost, removed_kernels(model, still_convs(model, list(saved))))


def _without_kernels(cost: Cost, gone: dict[str, tuple[int, int, int]]) -> Cost:
    """``cost`` less removed k×k kernels: ``{layer: (kernels gone, kernels in all, weights per kernel)}`` come
    off the layer's params and, in proportion, its MACs (a sparse kernel engine's work), in its row and the total."""
    rows = {r.name: r for r in cost.layers}
    d_params = d_macs = 0
    for name, (n_gone, n_all, per) in gone.items():
        if not n_gone or name not in rows:
            continue
        r = rows[name]
        rows[name] = dataclasses.replace(r, params=r.params - n_gone * per, macs=r.macs - r.macs * n_gone // n_all)
        d_params, d_macs = d_params + n_gone * per, d_macs + r.macs - rows[name].macs
    return dataclasses.replace(cost, params=cost.params - d_params, macs=cost.macs - d_macs,
                               layers=tuple(rows.values()))


def _as_stored_kernels(cost: Cost, path: str) -> Cost:
    """``cost`` of a ``.slimk`` file as the kernel search and compress count it: the removed kernels are gone
    (params, MACs), and the weight bytes are what the file stores (kept kernels and their index, every other
    parameter dense), in total and per layer; the decoded dense model (what it printed) holds them as zeros."""
    import torch

    from slimcnn.prune._kernel_format import read_kernel_compact

    header, _ = read_kernel_compact(path)
    rows = {r.name: r for r in cost.layers}
    gone: dict[str, tuple[int, int, int]] = {}
    d_bytes = 0
    for e in header["tensors"]:
        name = str(e["name"]).removesuffix(".weight")
        if e["kind"] != "kernels" or name not in rows:
            continue
        o, i, kh, kw = e["shape"]
        gone[name] = (o * i - int(e["n_kept"]), o * i, kh * kw)
        saved = o * i * kh * kw * getattr(torch, e["dtype"]).itemsize - (int(e["nbytes"]) + int(e["index_nbytes"]))
        rows[name] = dataclasses.replace(rows[name], weight_bytes=rows[name].weight_bytes - saved)
        d_bytes += saved
    note(f"note: {Path(path).name} counted as stored: removed kernels are gone (params, MACs: a sparse kernel engine's "
         f"work) and weights are {cost.weight_bytes - d_bytes:,} B (float32 after decoding: {cost.weight_bytes:,} B)")
    stored = dataclasses.replace(cost, weight_bytes=cost.weight_bytes - d_bytes, layers=tuple(rows.values()))
    return _without_kernels(stored, gone)


def _analyze_onnx(loaded: Any, example: Any, *, runtime: str, threads: int | None, runs: int, latency: bool,
                  groups: bool, as_json: bool) -> int:
    """An ONNX file has no torch layers to hook: its initializers are counted and the file is timed as it is.

    (Before, a ``file:model.onnx`` printed 0 params, 0 MACs, 0 bytes and the latency of a re-export of its
    wrapper.) MACs and activations are not counted from ONNX graphs: analyze the torch model it came from."""
    import onnx

    from slimcnn.export import compare_onnx_latency
    from slimcnn.export._onnx import initializer_sizes

    if runtime != "onnxruntime" or groups:
        raise ConfigError(f"{loaded.source} is an ONNX file: it is timed in ONNX Runtime and has no channel groups; "
                          "drop --runtime torch/--groups, or analyze the torch model it came from")
    data = loaded.model.model_bytes()
    try:
        loaded.model(example)
    except SlimcnnError:  # the file's own check (a fixed input size) says what to pass
        raise
    except Exception as e:  # ONNX Runtime's errors are its own classes: one line, whatever they are
        shape = onnx.load_from_string(data).graph.input[0].type.tensor_type.shape
        dims = [d.dim_value or d.dim_param or "?" for d in shape.dim]
        raise ConfigError(f"{loaded.source} does not run on input {'x'.join(map(str, example.shape))} "
                          f"({str(e).splitlines()[0][:160]}); its input is {'x'.join(map(str, dims))}: pass that "
                          "--input") from None
    params, weight_bytes = initializer_sizes(data)
    lat = compare_onnx_latency({"file": data}, example, threads=threads, runs=runs)["file"] if latency else None
    if as_json:
        emit_json({"source": loaded.source, "input_shape": list(example.shape), "params": params, "macs": None,
                   "weight_bytes": weight_bytes, "activation_bytes": None,
                   "latency": dataclasses.asdict(lat) if lat is not None else None, "layers": [],
                   "pretrained": loaded.info.pretrained, "notes": [*loaded.info.notes, ONNX_NOTE]})
        return 0
    say(f"{loaded.source} @ {'x'.join(map(str, example.shape))}: {params:,} values in its initializers, "
        f"{weight_bytes:,} B (every initializer of the file)")
    if lat is not None:
        say(f"latency {lat.median_ms:.3f} ms median (p10 {lat.p10_ms:.3f}, p90 {lat.p90_ms:.3f}, n={lat.n}) on "
            f"{lat.runtime}, {lat.threads} threads, {lat.device}, batch {lat.batch}")
    note(f"note: {ONNX_NOTE}")
    return 0


ONNX_NOTE = "MACs and activations are not counted from an ONNX graph; analyze the torch model it came from for them"


def _groups(model: Any, example: Any) -> dict[str, Any]:
    """What one trace tells pruning, as ``--json`` keys: ``groups`` (one row per channel group) and ``check_run``
    (why pruning runs the pruned model to check its shapes; null when the trace proves them)."""
    from slimcnn.graph import trace

    graph = trace(model, example)
    rows = [{"id": g.id, "channels": g.size, "fixed": len(g.fixed), "prunable": g.prunable,
             "fixed_because": sorted({why for _, why in g.fixed}), "producers": sorted({m.layer for m in g.producers}),
             "layers": g.layers()} for g in graph.groups()]
    return {"groups": rows, "check_run": graph.check_reason}


def _print_groups(traced: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    rows = traced["groups"]
    n = sum(r["prunable"] for r in rows)
    table = Table(title=f"channel groups: {n} of {len(rows)} prunable (channels in a group are removed together)")
    for name, justify in (("group", "right"), ("channels", "right"), ("fixed", "right"), ("why fixed", "left"),
                          ("produced by", "left"), ("members", "right")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for r in rows:
        producers = ", ".join(r["producers"][:3]) + (f" +{len(r['producers']) - 3}" if len(r["producers"]) > 3 else "")
        table.add_row(str(r["id"]), str(r["channels"]), str(r["fixed"]), "; ".join(r["fixed_because"]), producers,
                      str(len(r["layers"])))
    console = Console()
    console.print(table)
    why = traced["check_run"]
    console.print("after pruning: no check run needed, the trace proves every output keeps its shape" if why is None
                  else f"after pruning: one check run of the pruned model (its shapes, and its values against the original "
                  f"with the pruned channels zeroed), because {why}", markup=False, soft_wrap=True)
