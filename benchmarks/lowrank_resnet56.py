"""Low-rank CIFAR ResNet-56 (shared trained weights): accuracy, MACs, ORT latency, training throughput.

``slimcnn:resnet56`` with the shared weights, CIFAR-10 JPEG-q75 (relative numbers only, see the data
README): test on ``test-10k.tar``, fine-tune on ``train-subset-10k.tar``.

1. Decompose at alpha = 2, ranks rounded to 8, timed on ONNX Runtime at 1x3x32x32: only-faster (the
   default) and ``--all`` (CIFAR layers are tiny — 16 to 64 channels — and may not speed up alone).
2. Top-1 of the original and of each decomposition, MACs, params, and end-to-end ORT latency of
   all three interleaved in one process (median/p10/p90).
3. Fine-tune the ``--all`` model (the one with the largest accuracy drop) for ``--steps`` SGD steps
   (batch ``--batch-size``, lr ``--lr`` cosine, random crop+flip) from the same starting weights
   with ``freeze outer`` / ``none`` / ``sequential`` (2 phases), then top-1 again.
4. Training-step throughput (forward+backward, img/s) with nothing / the outer factors / the inner
   factors frozen, interleaved on the same batches and device (torch CPU).

Usage: ``python benchmarks/lowrank_resnet56.py --out benchmarks/results [--steps 300] [--limit N]``
Writes ``lowrank_resnet56.{json,md}`` in ``--out``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else []


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    ap.add_argument("--data", default=None, help="CIFAR-10 test .tar/ImageFolder (default: shared test-10k.tar)")
    ap.add_argument("--train-data", default=None, help="training .tar/ImageFolder (default: shared train-subset-10k.tar)")
    ap.add_argument("--limit", type=int, default=None, help="evaluate on the first N test images (default: all)")
    ap.add_argument("--steps", type=int, default=300, help="fine-tuning SGD steps per freezing mode")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--threads", type=int, default=None, help="ORT / torch threads (default: physical cores)")
    ap.add_argument("--runs", type=int, default=100, help="interleaved end-to-end latency rounds")
    ap.add_argument("--throughput-steps", type=int, default=6)
    args = ap.parse_args()
    os.environ["SLIMCNN_CACHE_DIR"] = tempfile.mkdtemp(prefix="slimcnn-lowrank-cache-")

    import onnxruntime

    from slimcnn.lowrank import LowRankSpec, decompose, runtime_comparer, runtime_timer
    from slimcnn.lowrank.finetune import finetune_frozen, training_throughput
    from slimcnn.measure import compare_latency, cpu_model, physical_cores, profile
    from slimcnn.models import load_model
    from slimcnn.paths import shared_path
    from slimcnn.tasks import make_task

    threads = args.threads or physical_cores()
    torch.set_num_threads(threads)
    test = args.data or shared_path("cifar10-jpeg75", "test-10k.tar")
    train = args.train_data or shared_path("cifar10-jpeg75", "train-subset-10k.tar")
    if test is None or train is None:
        raise SystemExit("needs ../shared/data/cifar10-jpeg75/{test-10k,train-subset-10k}.tar or --data/--train-data")
    load_before = _load()
    loaded = load_model("slimcnn:resnet56")
    model = loaded.model.eval()
    task = make_task("classification", test, info=loaded.info, train_data=train, batch_size=args.batch_size)
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    t_start = time.perf_counter()
    variants: dict[str, Any] = {}
    timing = {"timer": runtime_timer("onnxruntime", threads), "compare": runtime_comparer("onnxruntime", threads)}
    for name, only in (("only_faster", True), ("all", False)):
        variants[name] = decompose(model, x, LowRankSpec(ratio=2.0, only_faster=only), runtime="onnxruntime",
                                   threads=threads, **timing)
        print(f"{name}: replaced {len(variants[name][1].replaced)} / {len(variants[name][1].layers)}", flush=True)
    models = {"original": model, "only_faster": variants["only_faster"][0], "all": variants["all"][0]}
    lat = compare_latency(models, x, runtime="onnxruntime", threads=threads, runs=args.runs, warmup=10)
    rows: list[dict[str, Any]] = []
    base = None
    for name, m in models.items():
        score = task.evaluate(m, limit=args.limit)
        base = base or score
        prof = profile(m, x)
        res = variants[name][1] if name in variants else None
        rows.append({"model": name, "top1": score.value, "n": score.n, "macs": prof.macs, "params": prof.params,
                     "median_ms": lat[name].median_ms, "p10_ms": lat[name].p10_ms, "p90_ms": lat[name].p90_ms,
                     "replaced": len(res.replaced) if res else 0, "slower_layers": len(res.slower) if res else 0})
        print(rows[-1], flush=True)
    dec, result = variants["all"]
    throughput = training_throughput(dec, result, task, steps=args.throughput_steps, modes=("none", "outer", "inner"))
    print(throughput, flush=True)
    tuned: list[dict[str, Any]] = []
    for freeze in ("outer", "none", "sequential"):
        m = copy.deepcopy(dec)
        t0 = time.perf_counter()
        stats = finetune_frozen(m, result, task, args.steps, freeze=freeze, lr=args.lr, progress=False)
        secs = time.perf_counter() - t0
        score = task.evaluate(m, limit=args.limit)
        tuned.append({"freeze": freeze, "top1": score.value, "n": score.n, "steps": args.steps, "train_s": secs,
                      "train_samples_per_s": sum(s.steps for s in stats) * args.batch_size / secs,
                      "final_loss": stats[-1].final_loss})
        print(tuned[-1], flush=True)
    env = {"cpu": cpu_model(), "cpu_count": os.cpu_count(), "threads": threads, "torch": torch.__version__,
           "onnxruntime": onnxruntime.__version__, "load_avg_before": load_before, "load_avg_after": _load(),
           "test": str(test), "train": str(train), "limit": args.limit, "steps": args.steps,
           "batch_size": args.batch_size, "lr": args.lr, "weights": loaded.info.weights,
           "seconds": round(time.perf_counter() - t_start, 1)}
    args.out.mkdir(parents=True, exist_ok=True)
    out = {"rows": rows, "finetune": tuned, "training_throughput": throughput, "environment": env,
           "layers": [{"layer": r.layer, "rank": r.rank, "ms_before": r.ms_before, "ms_after": r.ms_after,
                       "only_faster_replaced": r.replaced, "reason": r.reason} for r in variants["only_faster"][1].layers]}
    (args.out / "lowrank_resnet56.json").write_text(json.dumps(out, indent=2) + "\n")
    (args.out / "lowrank_resnet56.md").write_text(_markdown(rows, tuned, throughput, env))
    print((args.out / "lowrank_resnet56.md").read_text())


def _markdown(rows: list[dict[str, Any]], tuned: list[dict[str, Any]], tp: dict[str, float], env: dict[str, Any]) -> str:
    n = rows[0]["n"]
    lines = [
        "# Low-rank CIFAR ResNet-56: accuracy, MACs, ORT latency, training throughput",
        "",
        f"`slimcnn:resnet56`, shared trained weights; top-1 on {n:,} images of the JPEG-q75 CIFAR-10 test copy "
        "(relative numbers only). alpha = 2, ranks rounded to 8, decisions timed on ORT CPU at 1x3x32x32. "
        f"{env['threads']} threads, {env['cpu']}; torch {env['torch']}, onnxruntime {env['onnxruntime']}; "
        f"load average before {env['load_avg_before']}, after {env['load_avg_after']}. "
        "Latency: the three models interleaved in one process.",
        "",
        "| model | top-1 % | MACs (M) | params (K) | ORT median ms | p10 | p90 | replaced | replaced but slower alone |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['model']} | {r['top1']:.2f} | {r['macs'] / 1e6:.1f} | {r['params'] / 1e3:.1f} | {r['median_ms']:.3f} | "
                     f"{r['p10_ms']:.3f} | {r['p90_ms']:.3f} | {r['replaced']} | {r['slower_layers']} |")
    lines += ["", f"Fine-tuning the `--all` model: {env['steps']} SGD steps each (batch {env['batch_size']}, lr {env['lr']} "
              "cosine, crop+flip, on `train-subset-10k`), same start for every mode; sequential = 2 phases "
              "(outer frozen, then inner frozen).", "",
              "| freeze | top-1 % after fine-tune | train s | train img/s (incl. optimiser, data) |", "|---|---|---|---|"]
    for t in tuned:
        lines.append(f"| {t['freeze']} | {t['top1']:.2f} | {t['train_s']:.0f} | {t['train_samples_per_s']:.0f} |")
    lines += ["", f"Training-step throughput of the `--all` model (forward+backward only, batch {tp['batch_size']:.0f}, "
              f"median of {tp['steps']:.0f} interleaved steps, torch CPU {env['threads']} threads):", "",
              "| frozen | img/s | vs nothing frozen |", "|---|---|---|",
              f"| nothing | {tp['samples_per_s_no_freeze']:.0f} | 1.00x |",
              f"| outer 1x1 factors | {tp['samples_per_s_outer_frozen']:.0f} | {tp['speedup_outer_frozen']:.2f}x |",
              f"| inner factors (cores, SVD second) | {tp['samples_per_s_inner_frozen']:.0f} | {tp['speedup_inner_frozen']:.2f}x |"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
