"""SR evaluation read image by image (bounded cache of triples) against the set decoded up front.

Set14 x3 (shared data; without it the built-in ``photos``) scored with ``slimcnn:fsrcnn``, three ways,
interleaved, ``--repeats`` times: *whole* decodes and degrades every image first, then scores (how
every SR set was held before); *streamed* reads each image when evaluation reaches it into the
process-wide cache (``slimcnn.data.sr.SR_CACHE_BYTES``); *no cache* scores with the cache bound at 0
bytes (what every evaluation of a set larger than the bound costs). Each way is timed on its first
evaluation (cold) and on a second one (what a search's later evaluations cost), in CPU seconds of this
process (one thread: on a shared, loaded machine wall time mostly measures the other processes); a
warm-up evaluation runs first. The load average is recorded.

Usage: ``python benchmarks/sr_eval_stream.py [--repeats 2]``
Writes ``benchmarks/results/sr_eval_stream.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

import slimcnn.data.sr as sr
from slimcnn.models import load_model
from slimcnn.paths import shared_path
from slimcnn.tasks import make_task

OUT = Path(__file__).parent / "results"
WAYS = ("whole", "streamed", "no cache")
LABELS = {"whole": "whole (before)", "streamed": "streamed (now)", "no cache": "no cache"}


def _whole(source: str | Path, scale: int) -> sr.SRDataset:
    name, files = sr.sr_files(source)
    return sr.SRDataset(name, scale, tuple(sr.make_sr_image(stem, sr.read_y(f), scale) for stem, f in files))


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """CPU seconds of ``fn`` (one thread: the work done, whatever share of a loaded CPU it got) and its result."""
    t0 = time.process_time()
    out = fn()
    return time.process_time() - t0, out


def _one_way(way: str, source: str | Path, loaded: Any, scale: int) -> tuple[float, float, dict[str, float]]:
    """(first evaluation s, second evaluation s, scores) of one way; the first includes reading the set."""
    sr._triples.clear()
    sr.SR_CACHE_BYTES = 0 if way == "no cache" else 1 << 30

    def first() -> Any:
        task = make_task("sr", _whole(source, scale) if way == "whole" else source, info=loaded.info, scale=scale)
        return task, task.evaluate(loaded.model)

    cold, (task, score) = _timed(first)
    warm, _ = _timed(lambda: task.evaluate(loaded.model))
    return cold, warm, score.metrics


def main() -> None:
    """Run the interleaved evaluations and write the results."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(1)
    source: str | Path = shared_path("sr", "Set14") or "photos"
    scale = 3
    loaded = load_model("slimcnn:fsrcnn", scale=scale, seed=0)
    bound = sr.SR_CACHE_BYTES
    _one_way("streamed", source, loaded, scale)  # warm-up: first-call costs of torch and the kernels
    load0 = os.getloadavg()
    wall0 = time.perf_counter()
    times: dict[str, dict[str, list[float]]] = {w: {"first": [], "second": []} for w in WAYS}
    scores: dict[str, dict[str, float]] = {}
    for _ in range(args.repeats):
        for way in WAYS:
            cold, warm, scores[way] = _one_way(way, source, loaded, scale)
            times[way]["first"].append(cold)
            times[way]["second"].append(warm)
            print(f"{way}: first {cold:.2f} s, second {warm:.2f} s CPU (load {os.getloadavg()[0]:.1f})", flush=True)
    wall = time.perf_counter() - wall0
    sr.SR_CACHE_BYTES = bound
    triples_mb = sum(sr._nbytes(im) for im in _whole(source, scale).images) / 2**20
    same = all(scores[w] == scores["whole"] for w in WAYS)
    med = {w: {k: statistics.median(v) for k, v in times[w].items()} for w in WAYS}
    row: dict[str, Any] = {
        "data": str(source), "scale": scale, "model": "slimcnn:fsrcnn", "images": len(sr.sr_files(source)[1]),
        "triples_mb": round(triples_mb, 1), "seconds": times, "median": med, "same_scores": same,
        "psnr": scores["whole"]["psnr"], "cpus": os.cpu_count(), "wall_s": round(wall, 1),
        "cpu_share": round(sum(sum(v["first"]) + sum(v["second"]) for v in times.values()) / wall, 2),
        "load_before": [round(v, 2) for v in load0], "load_after": [round(v, 2) for v in os.getloadavg()],
    }
    OUT.mkdir(exist_ok=True)
    (OUT / "sr_eval_stream.json").write_text(json.dumps(row, indent=2) + "\n")
    md = [
        "# SR evaluation: image by image vs the set decoded up front",
        "",
        f"`benchmarks/sr_eval_stream.py`: {Path(str(source)).name} x{scale} ({row['images']} images, triples "
        f"{triples_mb:.0f} MB as float64), slimcnn:fsrcnn, one thread, {args.repeats} interleaved repeats; "
        f"{os.cpu_count()} CPUs, load average {load0[0]:.1f} before / {os.getloadavg()[0]:.1f} after (shared machine; "
        f"this process got {row['cpu_share']:.0%} of a CPU). Times are CPU seconds of the one thread.",
        "",
        "| way | first evaluation, incl. reading the set (CPU s) | median | second evaluation (CPU s) | median |",
        "|---|---|---|---|---|",
        *(f"| {LABELS[w]} | {', '.join(f'{s:.2f}' for s in times[w]['first'])} | {med[w]['first']:.2f} | "
          f"{', '.join(f'{s:.2f}' for s in times[w]['second'])} | {med[w]['second']:.2f} |" for w in WAYS),
        "",
        f"Same PSNR/SSIM all three ways: **{same}** (PSNR {row['psnr']:.4f} dB).",
        "",
    ]
    (OUT / "sr_eval_stream.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
