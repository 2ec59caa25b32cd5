"""The built-in demo: the whole flow on built-in data, in a few minutes on a 2-core CPU.

1. classification — train LeNet-5 on scikit-learn's real handwritten digits, analyse it, then search
   for the smallest pruned model within 1 point of top-1 and at most half the MACs;
2. memory — k-means weight sharing + magnitude pruning of the same model into a packed ``.slim``
   file (Tomè et al.): bytes before/after, per layer, and the accuracy change;
3. super-resolution — train ESPCN ×2 on scikit-image's photos, then remove redundant filters
   (Liu et al.'s sparsity criterion) under a PSNR-drop and a MACs target. (FSRCNN's 12-channel
   mapping layers lose several dB per removed filter, so the wider ESPCN shows the method better.)

Every number comes from a real measurement (ONNX Runtime latency, the tasks' metrics).
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


def _search_section(name: str, loaded: Any, task: Any, budget: Any, spec: Any, out: Path, say: Say,
                    timing_shape: tuple[int, ...]) -> dict[str, Any]:
    from slimcnn.run import Manifest, RunDir
    from slimcnn.search.outputs import write_search_run

    x = task.example_input()
    options = dataclasses.asdict(spec) | {"max_drop": str(budget.max_drop), "limits": {k: str(v) for k, v in budget.limits.items()}}
    with RunDir(out, Manifest.of("search", model=loaded.source, options=options), force=True) as run:
        result = write_search_run(run, loaded, task, budget, spec, x, sweep=None, progress=False, options=options)
    model = load_model(f"file:{out / 'model.pt'}").model  # the artifact written, not the in-memory copy
    # timed on a realistic workload: on a 32x32 patch these tiny nets measure ONNX Runtime's call overhead
    lat = _lat({"before": loaded.model, "after": model},
               torch.randn(timing_shape, generator=torch.Generator().manual_seed(0)))
    b, a = result.before, result.after
    row = {
        "metric": b.score.metric, "before": b.score.value, "after": a.score.value,
        "macs_before": b.cost.macs, "macs_after": a.cost.macs,
        "params_before": b.cost.params, "params_after": a.cost.params,
        "latency_ms_before": lat["before"], "latency_ms_after": lat["after"], "latency_input": list(timing_shape),
        "met": result.met, "checks": [dataclasses.asdict(c) for c in result.checks], "out": str(out),
    }
    say(f"  {row['metric']}: {row['before']:.2f} -> {row['after']:.2f}   MACs {row['macs_before']:,} -> "
        f"{row['macs_after']:,} ({row['macs_after'] / row['macs_before']:.2f}x)   ONNX Runtime latency at "
        f"{'x'.join(map(str, timing_shape))} {lat['before']:.3f} -> {lat['after']:.3f} ms   "
        f"budget {'met' if result.met else 'NOT met'}")
    from slimcnn.measure import ort_channel_block

    block = ort_channel_block()
    if block > 1 and row["macs_after"] < 0.9 * row["macs_before"] and lat["after"] > 0.95 * lat["before"]:
        say(f"  note: fewer MACs but no less time: ONNX Runtime runs convs in blocks of {block} channels on this "
            f"CPU, so a kept width off that block costs the next multiple; `--round-to auto` rounds to it")
    return row


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
        report = _sections(run.path, say, quick)
        write_json(run.path / "demo.json", report)
        write_run(run, RunResult("demo", "slimcnn:lenet5, slimcnn:espcn", options={"quick": quick},
                                 details={"sections": sorted(report)}, seconds=report["seconds"],
                                 environment=environment(0)))
    say(f"done in {report['seconds']:.0f} s; results in {run.out}/ (demo.json, */result.json, */pareto.png)")
    return report


def _sections(out: Path, say: Say, quick: bool) -> dict[str, Any]:
    from slimcnn.measure import profile
    from slimcnn.models import save_model
    from slimcnn.search import Budget, SearchSpec
    from slimcnn.tasks import make_task

    t0 = time.perf_counter()
    report: dict[str, Any] = {}
    torch.manual_seed(0)

    # 1. classification ----------------------------------------------------------------------------
    say("[1/3] LeNet-5 on scikit-learn's 1,797 handwritten digits")
    lenet = load_model("slimcnn:lenet5")
    digits = make_task("classification", "digits", info=lenet.info)
    digits.finetune(lenet.model, 60 if quick else 300, lr=0.05, batch_size=64, progress=False)
    lenet.info = dataclasses.replace(lenet.info, pretrained=True, notes=("trained on digits by slimcnn demo",))
    save_model(lenet, out / "lenet5-digits" / "model.pt")
    score = digits.evaluate(lenet.model)
    cost = profile(lenet.model, digits.example_input())
    say(f"  trained: top-1 {score.value:.2f} % on {score.n} held-out digits; {cost.params:,} params, {cost.macs:,} MACs")
    say("  search: prune filters (L1) for <= 1 point top-1 drop and <= 0.5x MACs, 40 fine-tune steps per point")
    report["classification"] = _search_section(
        "classification", lenet, digits, Budget.from_options(max_drop="1", macs="0.5x"),
        SearchSpec(method="prune", finetune_steps=10 if quick else 40, finetune={"lr": 0.01}),
        out / "classification-search", say, timing_shape=(256, 1, 32, 32))

    # 2. memory ------------------------------------------------------------------------------------
    say("[2/3] on-chip memory: k-means weight sharing + magnitude pruning of LeNet-5 (Tomè et al.)")
    report["memory"] = _memory_section(lenet, digits, out / "memory", say)

    # 3. super-resolution --------------------------------------------------------------------------
    say("[3/3] super-resolution: ESPCN x2 trained on scikit-image's photos, redundant filters removed")
    from slimcnn.tasks.sr_recipes import paper_init_

    espcn = load_model("slimcnn:espcn", scale=2)
    paper_init_(espcn.model)  # the demo trains from scratch, with the paper's initialisation
    sr = make_task("sr", "photos-train", info=dataclasses.replace(espcn.info, pretrained=False), scale=2,
                   val_data="photos-val")
    sr.finetune(espcn.model, 300 if quick else 2000, progress=False)
    espcn.info = dataclasses.replace(espcn.info, pretrained=True, notes=("trained on built-in photos by slimcnn demo",))
    base = sr.evaluate(espcn.model)
    say(f"  trained: PSNR {base.value:.2f} dB on held-out photos (bicubic {base.metrics.get('psnr_bicubic', float('nan')):.2f} dB)")
    say("  search: remove the sparsest filters (Liu et al.) for <= 0.2 dB drop and <= 0.8x MACs")
    # A fresh task: the model is trained now, so fine-tuning uses the gentle (not the from-scratch) recipe.
    sr = make_task("sr", "photos-train", info=espcn.info, scale=2, val_data="photos-val")
    report["super_resolution"] = _search_section(
        "super_resolution", espcn, sr, Budget.from_options(max_drop="0.2", macs="0.8x"),
        SearchSpec(method="prune", criterion="sparsity", finetune_steps=50 if quick else 500),
        out / "sr-search", say, timing_shape=(1, 1, 256, 256))
    report["seconds"] = round(time.perf_counter() - t0, 1)
    return report


def _memory_section(loaded: Any, task: Any, out: Path, say: Say) -> dict[str, Any]:
    from slimcnn.quantize import KMeansQuantSpec, quantize_model, save_packed
    from slimcnn.quantize._run import size_ratio_text

    spec = KMeansQuantSpec.parse("conv*=6,fc*=4", prune="fc1=4")
    result = quantize_model(loaded.model, spec)
    packed = save_packed(out / "model.slim", result, source=loaded.source, info=loaded.info)
    before, after = task.evaluate(loaded.model), task.evaluate(result.model)
    fp32 = sum(p.numel() for p in loaded.model.parameters()) * 4
    for r in result.reports():
        say(f"  {r.name:6s} {r.bits} bit, {r.sparsity * 100:4.0f} % pruned: {r.original_bytes:,} B -> {r.payload_bytes:,.0f} B")
    say(f"  weights {fp32:,} B fp32 -> payload {packed.payload_bytes:,.0f} B; the whole .slim file is "
        f"{packed.file_bytes:,} B ({size_ratio_text(fp32, packed.file_bytes)}); top-1 {before.value:.2f} -> {after.value:.2f} %")
    return {"fp32_bytes": fp32, "payload_bytes": packed.payload_bytes, "file_bytes": packed.file_bytes,
            "top1_before": before.value, "top1_after": after.value,
            "layers": [dataclasses.asdict(r) for r in result.reports()], "out": str(out)}
