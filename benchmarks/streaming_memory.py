"""Streaming a synthetic image folder of 200,000 small JPEGs: peak resident memory and images/s.

A temporary ImageFolder (10 classes, ``--images`` JPEGs of ``--side`` px, written once) is indexed
(:func:`slimcnn.data._stream.index_images`) and one pass of training batches is read through the
DataLoader (:func:`slimcnn.data._stream.stream_batches`: decode + pad-crop + flip) with 0 and 2
worker processes. Peak memory is the largest PSS sum over this process and its workers (and the RSS sum,
an upper bound), sampled every 100 ms (psutil). Target: under 2 GB. The machine is shared: the load average is recorded.

Usage: ``python benchmarks/streaming_memory.py [--images 200000] [--side 32] [--batch 256] [--workers 0 2]``
Writes ``benchmarks/results/streaming_memory.{json,md}``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil
from PIL import Image

from slimcnn.data._stream import index_images, stream_batches

OUT = Path(__file__).parent / "results"


def _write_folder(root: Path, n: int, side: int) -> None:
    """``n`` JPEGs in 10 class folders (a few distinct encodings, so writing stays fast)."""
    rng = np.random.default_rng(0)
    blobs = []
    for _ in range(64):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8)).save(buf, format="JPEG", quality=75)
        blobs.append(buf.getvalue())
    for c in range(10):
        (root / f"class{c}").mkdir(parents=True)
    for i in range(n):
        (root / f"class{i % 10}" / f"{i:07d}.jpg").write_bytes(blobs[i % len(blobs)])


class _PeakRSS:
    """Largest memory of this process plus its children, sampled in a thread.

    Forked workers share the parent's pages, so summing RSS counts them several times; the sum of
    PSS (each shared page split between its sharers) is the memory the group really holds. Both are kept.
    """

    def __init__(self) -> None:
        self.peak = 0
        self.peak_rss_sum = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            pss = rss = 0
            for proc in (me, *me.children(recursive=True)):
                try:
                    info = proc.memory_full_info()
                except psutil.Error:  # a worker that just exited
                    continue
                pss, rss = pss + info.pss, rss + info.rss
            self.peak, self.peak_rss_sum = max(self.peak, pss), max(self.peak_rss_sum, rss)
            time.sleep(0.1)

    def __enter__(self) -> _PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _one_pass(root: Path, workers: int, batch: int, side: int) -> dict[str, Any]:
    with _PeakRSS() as rss:
        t0 = time.perf_counter()
        index = index_images(root, "train")
        t_index = time.perf_counter() - t0
        seen = 0
        t1 = time.perf_counter()
        batches = stream_batches(index, size=(side, side), channels=3, batch_size=batch, train=True, workers=workers)
        for _ in range(len(index) // batch):
            x, _ = next(batches)
            seen += len(x)
        batches.close()
        seconds = time.perf_counter() - t1
    return {"workers": workers, "images": seen, "index_seconds": round(t_index, 1), "seconds": round(seconds, 1),
            "images_per_s": round(seen / seconds), "peak_pss_mb": round(rss.peak / 2**20),
            "peak_rss_sum_mb": round(rss.peak_rss_sum / 2**20)}


def main() -> None:
    """Write the folder, stream it with each worker count, write the results."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=200_000)
    ap.add_argument("--side", type=int, default=32)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="slimcnn-stream-"))
    try:
        t0 = time.perf_counter()
        _write_folder(tmp / "set", args.images, args.side)
        print(f"wrote {args.images:,} JPEGs in {time.perf_counter() - t0:.0f} s", flush=True)
        load0 = os.getloadavg()
        rows = []
        for w in args.workers:
            rows.append(_one_pass(tmp / "set", w, args.batch, args.side))
            print(rows[-1], flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    decoded_mb = args.images * 3 * args.side**2 / 2**20
    result = {"images": args.images, "side": args.side, "batch": args.batch, "cpus": os.cpu_count(),
              "decoded_set_mb": round(decoded_mb), "load_before": [round(v, 2) for v in load0],
              "load_after": [round(v, 2) for v in os.getloadavg()], "rows": rows}
    OUT.mkdir(exist_ok=True)
    (OUT / "streaming_memory.json").write_text(json.dumps(result, indent=2) + "\n")
    md = [
        "# Streaming 200,000 small JPEGs",
        "",
        f"`benchmarks/streaming_memory.py`: an ImageFolder of {args.images:,} {args.side}x{args.side} JPEGs "
        f"(10 classes) indexed and read for one pass of training batches of {args.batch} (decode, pad-crop, flip). "
        f"Memory is this process plus its DataLoader workers. {os.cpu_count()} CPUs, load average "
        f"{load0[0]:.1f} before / {os.getloadavg()[0]:.1f} after (shared machine).",
        "",
        "| workers | images | index (s) | pass (s) | images/s | peak resident, PSS sum (MB) | peak RSS sum (MB) |",
        "|---|---|---|---|---|---|---|",
        *(f"| {r['workers']} | {r['images']:,} | {r['index_seconds']} | {r['seconds']} | {r['images_per_s']:,} | "
          f"{r['peak_pss_mb']:,} | {r['peak_rss_sum_mb']:,} |" for r in rows),
        "",
        "PSS splits pages a forked worker shares with its parent; the RSS sum counts them once per process "
        "(an upper bound).",
        "",
        f"Target: peak resident memory < 2,048 MB. Decoded in memory, the set alone would take {decoded_mb:,.0f} MB.",
        "",
    ]
    (OUT / "streaming_memory.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
