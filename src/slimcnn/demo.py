"""The built-in demo: ``compress`` end to end on built-in data, in about two minutes on a 2-core CPU.

1. LeNet-5 trained on scikit-learn's 1,797 real handwritten digits, then compressed in one run to
   <= 1 point of top-1, <= 0.5x MACs and <= 0.1x weight bytes (channel pruning, then k-means
   weight sharing packed into a ``.slim`` file);
2. ESPCN x2 trained on scikit-image's photos, then compressed to <= 0.2 dB PSNR and <= 0.8x MACs
   (Liu et al.'s sparsity criterion, widths rounded to ONNX Runtime's channel block, so the MACs saved are time
   saved).

Each is judged against the original; every number is a measurement of the files written (the models
are re-loaded from ``model.pt`` for the table; latency is ONNX Runtime, original and compressed
interleaved in one run).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from slimcnn._io import write_json
from slimcnn.errors import ConfigError
from slimcnn.models import load_model

log = logging.getLogger(__name__)

Say = Callable[[str], None]


def _lat(models: dict[str, nn.Module], x: torch.Tensor) -> dict[str, float]:
    from slimcnn.measure import compare_latency

    stats = compare_latency(models, x, runtime="onnxruntime", runs=30, warmup=5)
    return {k: v.median_ms for k, v in stats.items()}


def _compress_section(loaded: Any, task: Any, budget: Any, spec: Any, out: Path, say: Say,
                      timing_shape: tuple[int, ...], final: Path) -> dict[str, Any]:
    from slimcnn.compress import compress, write_compress_run
    from slimcnn.measure import profile
    from slimcnn.run import Manifest, RunDir

    x = task.example_input()
    options = dataclasses.asdict(spec) | {"max_drop": str(budget.max_drop),
                                          "limits": {k: str(v) for k, v in budget.limits.items()}}
    with RunDir(out, Manifest.of("compress", model=loaded.source, options=options), force=True) as run:
        res = compress(loaded.model, task, budget, spec, example_input=x, source=loaded.source, progress=False,
                       on_stage=lambda i, stage, line: say(f"  {line}"))
        result = write_compress_run(run, loaded, res, x, options=options, task=task.name)
    written = load_model(f"file:{out / 'model.pt'}").model.eval()  # the artifact, not the in-memory copy
    # timed on a realistic workload: on one small patch these tiny nets measure ONNX Runtime's call overhead
    lat = _lat({"before": loaded.model, "after": written},
               torch.randn(timing_shape, generator=torch.Generator().manual_seed(0)))
    big = torch.zeros(timing_shape)
    act_b, act_a = profile(loaded.model, big).activation_bytes, profile(written, big).activation_bytes
    b, a = result.before, result.after
    row = {
        "metric": b.score.metric, "before": b.score.value, "after": a.score.value, "n": a.score.n,
        "macs_before": b.cost.macs, "macs_after": a.cost.macs,
        "params_before": b.cost.params, "params_after": a.cost.params,
        "weight_bytes_before": b.cost.weight_bytes, "weight_bytes_after": a.cost.weight_bytes,
        "activation_bytes_before": act_b, "activation_bytes_after": act_a,
        "latency_ms_before": lat["before"], "latency_ms_after": lat["after"], "latency_input": list(timing_shape),
        "stages": [s["name"] for s in result.details["stages"]], "slim": result.details.get("slim"),
        "met": result.met, "checks": [dataclasses.asdict(c) for c in result.checks], "out": out.name,
        "report": f"{out.name}/report.html" if (out / "report.html").exists() else None,
    }
    _table(row, say)
    if row["report"]:
        say(f"  report: {final / row['report']}")  # where it lands once the demo folder is committed
    from slimcnn.measure import ort_channel_block

    block = ort_channel_block()
    if block > 1 and row["macs_after"] < 0.9 * row["macs_before"] and lat["after"] > 0.95 * lat["before"]:
        say(f"  note: fewer MACs but not less time: ONNX Runtime runs convs in blocks of {block} channels on this "
            f"CPU, so a kept width off that block costs the next multiple (`--round-to auto` rounds to it)")
    return row


def _table(row: dict[str, Any], say: Say) -> None:
    """One before/after table: quantities, then each target and whether it holds."""
    unit = "dB" if row["metric"].startswith("psnr") else "%"
    shape = "x".join(map(str, row["latency_input"]))
    rows = [
        (row["metric"], f"{row['before']:.2f} {unit}", f"{row['after']:.2f} {unit}"),
        ("MACs", f"{row['macs_before']:,}", f"{row['macs_after']:,} ({row['macs_after'] / row['macs_before']:.2f}x)"),
        ("weight bytes", f"{row['weight_bytes_before']:,}",
         f"{row['weight_bytes_after']:,} ({row['weight_bytes_after'] / row['weight_bytes_before']:.2f}x)"),
        (f"activation bytes at {shape}", f"{row['activation_bytes_before']:,}", f"{row['activation_bytes_after']:,}"),
        (f"ORT latency at {shape}", f"{row['latency_ms_before']:.3f} ms",
         f"{row['latency_ms_after']:.3f} ms ({row['latency_ms_after'] / row['latency_ms_before']:.2f}x)"),
    ]
    say(f"  {'':<34}{'before':>16}{'after':>26}")
    for name, before, after in rows:
        say(f"  {name:<34}{before:>16}{after:>26}")
    for c in row["checks"]:
        fmt = (lambda v: f"{v:.3g}") if c["name"] == "max_drop" else (lambda v: f"{v:,.0f}")
        say(f"  target {c['name']:<27}{'<= ' + fmt(c['limit']):>16}{fmt(c['value']):>26}  "
            f"{'met' if c['met'] else 'NOT met'}")


def run_demo(out_dir: str | Path = "demo-out", *, say: Say = print, quick: bool = False) -> dict[str, Any]:
    """Run the three demo sections and write ``out_dir/demo.json`` (plus each section's outputs).

    The folder is one run (staged, then renamed into place): an interrupted demo leaves the previous
    one as it was. A folder slimcnn did not write is refused.

    Args:
        out_dir: where results go.
        say: where progress lines go (the CLI passes ``typer.echo``).
        quick: fewer training steps (used by the test suite).
    """
    from slimcnn.run import Manifest, RunDir, RunResult, environment, read_result, write_run

    if (Path(out_dir) / "result.json").is_file() and read_result(out_dir).get("command", "demo") != "demo":
        raise ConfigError(f"--out {out_dir} holds a `{read_result(out_dir)['command']}` run, not a demo; choose "
                          "another folder for the demo")
    with RunDir(out_dir, Manifest.of("demo", options={"quick": quick}), force=True) as run:
        report = _sections(run.path, say, quick, final=run.out)
        write_json(run.path / "demo.json", report)
        write_run(run, RunResult("demo", "slimcnn:lenet5, slimcnn:espcn", options={"quick": quick},
                                 details={"sections": sorted(report)}, seconds=report["seconds"],
                                 environment=environment(0)))
    say(f"done in {report['seconds']:.0f} s; results in {run.out}/: demo.json, and per model (lenet5-compress/, "
        "espcn-compress/) report.html, result.json, model.pt, model.onnx (+ model.slim)")
    return report


def _sections(out: Path, say: Say, quick: bool, *, final: Path) -> dict[str, Any]:
    from slimcnn.compress import CompressSpec
    from slimcnn.measure import ort_channel_block
    from slimcnn.models import save_model
    from slimcnn.search import Budget
    from slimcnn.tasks import make_task

    t0 = time.perf_counter()
    report: dict[str, Any] = {}
    torch.manual_seed(0)

    say("[1/2] LeNet-5 on scikit-learn's 1,797 handwritten digits")
    lenet = load_model("slimcnn:lenet5")
    digits = make_task("classification", "digits", info=lenet.info)
    digits.finetune(lenet.model, 60 if quick else 300, lr=0.05, batch_size=64, progress=False)
    lenet.info = dataclasses.replace(lenet.info, pretrained=True, notes=("trained on digits by slimcnn demo",))
    save_model(lenet, out / "lenet5-digits" / "model.pt")
    say("  compress: <= 1 point top-1, <= 0.5x MACs, <= 0.1x weight bytes (prune, then k-means; distillation)")
    report["classification"] = _compress_section(
        lenet, digits, Budget.from_options(max_drop="1", macs="0.5x", weight_bytes="0.1x"),
        CompressSpec(finetune_steps=10 if quick else 40, finetune={"lr": 0.01}),
        out / "lenet5-compress", say, timing_shape=(256, 1, 32, 32), final=final)

    say("[2/2] super-resolution: ESPCN x2 trained on scikit-image's photos")
    from slimcnn.tasks.sr_recipes import paper_init_

    espcn = load_model("slimcnn:espcn", scale=2)
    paper_init_(espcn.model)  # the demo trains from scratch, with the paper's initialisation
    sr = make_task("sr", "photos-train", info=dataclasses.replace(espcn.info, pretrained=False), scale=2,
                   val_data="photos-val")
    sr.finetune(espcn.model, 300 if quick else 2000, progress=False)
    espcn.info = dataclasses.replace(espcn.info, pretrained=True, notes=("trained on built-in photos by slimcnn demo",))
    say("  compress: <= 0.2 dB PSNR, <= 0.8x MACs (Liu et al.'s sparsity criterion)")
    # A fresh task: the model is trained now, so fine-tuning uses the gentle (not the from-scratch) recipe.
    sr = make_task("sr", "photos-train", info=espcn.info, scale=2, val_data="photos-val")
    report["super_resolution"] = _compress_section(
        espcn, sr, Budget.from_options(max_drop="0.2", macs="0.8x"),
        CompressSpec(recipe="prune:sparsity", finetune_steps=50 if quick else 500, round_to=ort_channel_block()),
        out / "espcn-compress", say, timing_shape=(1, 1, 256, 256), final=final)
    report["seconds"] = round(time.perf_counter() - t0, 1)
    return report
