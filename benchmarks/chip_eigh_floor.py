"""How fast can an exact CHIP score of the 64-channel @ 8x8 layer be on this machine? The eigensolver floor.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/chip_eigh_floor.py`` (about 2 minutes idle).
Writes ``benchmarks/results/chip_eigh_floor.{md,json}``.

``chip_scores(method="secular")`` needs one symmetric eigendecomposition (eigenvalues *and* eigenvectors) of each
image's ``C x C`` Gram matrix; everything else it does is a few batched products. So the time of the fastest
eigensolver available here bounds its speed-up over the CHIP code's per-channel loop (``chip_speed.py``'s
``official loop``, timed on ``--subset`` images and extrapolated per image). This benchmark times every
eigensolver route on the same 640 Gram matrices (real ResNet-56 ``layer3[4]`` features, as ``chip_speed.py``),
interleaved with the loop, on one thread, and reports ``loop / route`` as the ceiling each route allows:

* ``torch eigh f64`` (MKL ``syevd``, what ``secular`` uses), ``torch eigvalsh f64`` (no eigenvectors: not
  enough for CHIP, shown as the tridiagonal reduction's cost);
* ``torch eigh f32``: the single-precision solve alone, before any refinement back to float64 exactness;
* ``numpy eigh f64`` and scipy's LAPACK drivers ``evd``/``evr``/``ev`` (OpenBLAS, one call per matrix);
* ``bmm f64``: one batched float64 ``64x64`` product, the unit of any refinement of float32 eigenvectors
  (a Rayleigh-Ritz step needs two or three).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import scipy.linalg
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from chip_speed import _official_loop, _real_features, _synthetic_features  # noqa: E402

from slimcnn.measure import cpu_model  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
CHANNELS, SIDE = 64, 8


def _routes(gram: torch.Tensor) -> dict[str, Any]:
    gram32, gram_np = gram.float(), gram.numpy()

    def scipy_driver(driver: str) -> Any:
        return lambda: [scipy.linalg.eigh(m, driver=driver, check_finite=False) for m in gram_np]

    return {
        "torch eigh f64": lambda: torch.linalg.eigh(gram),
        "torch eigvalsh f64 (no eigenvectors)": lambda: torch.linalg.eigvalsh(gram),
        "torch eigh f32 (before refinement)": lambda: torch.linalg.eigh(gram32),
        "numpy eigh f64": lambda: np.linalg.eigh(gram_np),
        "scipy eigh f64 evd": scipy_driver("evd"),
        "scipy eigh f64 evr": scipy_driver("evr"),
        "scipy eigh f64 ev": scipy_driver("ev"),
        "bmm f64 (one refinement product)": lambda: torch.bmm(gram, gram),
    }


def main() -> None:
    """Time the routes interleaved with the official loop and write the tables."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=640)
    ap.add_argument("--subset", type=int, default=16, help="images the official loop is timed on")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--synthetic", action="store_true", help="skip the pretrained ResNet-56")
    args = ap.parse_args()
    torch.set_num_threads(1)
    real = None if args.synthetic else _real_features(args.images, 0)
    feats = real[0][CHANNELS] if real else _synthetic_features(args.images, CHANNELS, SIDE, 0)
    source = real[1] if real else "synthetic post-ReLU maps"
    x = feats.reshape(args.images, CHANNELS, -1).double()
    gram = x @ x.mT
    sub = feats[: args.subset]
    routes = {"official loop": lambda: _official_loop(sub), **_routes(gram)}
    load_before = os.getloadavg()
    for fn in routes.values():  # warm-up: first calls load libraries and allocate workspaces
        fn()
    times: dict[str, list[float]] = {name: [] for name in routes}
    for _ in range(args.repeats):
        for name, fn in routes.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    per_image = args.images / args.subset
    loop = [t * per_image for t in times.pop("official loop")]
    rows = [
        {
            "route": name,
            "seconds": statistics.median(ts),
            "loop_over_route": statistics.median(a / b for a, b in zip(loop, ts, strict=True)),
        }
        for name, ts in times.items()
    ]
    meta = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "threads": 1,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "python": platform.python_version(),
        "load_before_after": [load_before[0], os.getloadavg()[0]],
        "features": source,
        "images": args.images,
        "official_loop_s": statistics.median(loop),
        "official_loop_subset_images": args.subset,
        "repeats": args.repeats,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "chip_eigh_floor.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    lines = [
        "# CHIP at C=64 @ 8x8: the eigensolver floor",
        "",
        f"Machine: {meta['cpu']}, {meta['logical_cpus']} logical CPUs, one thread; torch {meta['torch']}, numpy "
        f"{meta['numpy']}, scipy {meta['scipy']}, Python {meta['python']}; load average before/after "
        f"{load_before[0]:.1f}/{meta['load_before_after'][1]:.1f}. {meta['date']}. Features: {source}.",
        "",
        f"The {args.images} float64 Gram matrices `A A^T` ({CHANNELS}x{CHANNELS}) of the layer. Every route and the "
        f"CHIP code's per-channel loop (timed on {args.subset} images, extrapolated per image: "
        f"{meta['official_loop_s']:.2f} s for {args.images}) ran interleaved, {args.repeats} repeats; seconds are "
        "medians, `loop / route` the median of the per-repeat ratios: the most an exact CHIP score built on that "
        "route could gain over the loop here, before any other work.",
        "",
        "| route | seconds | loop / route × |",
        "|---|---:|---:|",
        *(f"| {r['route']} | {r['seconds']:.3f} | {r['loop_over_route']:.0f}× |" for r in rows),
        "",
    ]
    text = "\n".join(lines)
    (RESULTS / "chip_eigh_floor.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
