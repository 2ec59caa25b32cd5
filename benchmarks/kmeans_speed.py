"""Speed and quality of slimcnn's k-means on AlexNet at Tomè et al.'s Table I settings.

Quantises every conv1..fc7 weight of ``slimcnn:alexnet_bvlc`` (56.9 M weights; fc8 is not part of
the paper's model) with conv1 9 bits, conv2-5 8 bits, conv3/conv4 pruned 2x, fc6/fc7 pruned to 1/3
and 1 bit, then packs the .slim file. Next to it, per layer, scikit-learn's KMeans (Lloyd,
k-means++, n_init=1) on a random subsample of the same kept weights (full layers are too slow for
it at k=256), and our solvers on that same subsample: exact DP, our large-layer fallback and
Deep Compression's linear-init Lloyd, so objectives are compared on identical data.

Usage: ``python benchmarks/kmeans_speed.py [--weights W] [--subsample 20000] [--threads 2]``
Writes ``benchmarks/results/kmeans_speed.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from slimcnn.models import load_model
from slimcnn.quantize import KMeansQuantSpec, magnitude_mask, quantize_model, save_packed, solve_1d
from slimcnn.quantize._kmeans1d import objective

BITS, PRUNE = "conv1=9,conv*=8,fc*=1", "conv3=2,conv4=2,fc*=3"
MIB = 2**20
OUT = Path(__file__).parent / "results"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", default=None)
    ap.add_argument("--subsample", type=int, default=20000)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    loaded = load_model("slimcnn:alexnet_bvlc", weights=args.weights)
    spec = KMeansQuantSpec.parse(BITS, PRUNE)
    t0 = time.perf_counter()
    res = quantize_model(loaded.model, spec)
    t_quant = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        pack = save_packed(Path(d) / "a.slim", res, source=loaded.source, info=loaded.info)
        t_pack = time.perf_counter() - t0
    from sklearn.cluster import KMeans

    rng = np.random.default_rng(0)
    modules = dict(loaded.model.named_modules())
    rows = []
    for rep in res.reports():
        w = modules[rep.name].weight.detach()
        mask = magnitude_mask(w, rep.params / rep.kept if rep.kept < rep.params else 1.0)
        vals = (w.reshape(-1) if mask is None else w.reshape(-1)[mask.reshape(-1)]).numpy().astype(np.float64)
        sub = vals[rng.choice(vals.size, min(args.subsample, vals.size), replace=False)]
        k = 2**rep.bits
        row = {"layer": rep.name, "bits": rep.bits, "kept": rep.kept, "solver": rep.solver, "seconds": rep.seconds,
               "subsample": int(sub.size)}
        t = time.perf_counter()
        exact, s_exact = solve_1d(sub, k, max_exact_work=10**12)
        row["sub_exact_s"], row["sub_exact_solver"] = time.perf_counter() - t, s_exact
        t = time.perf_counter()
        fb, s_fb = solve_1d(sub, k, max_exact_work=0)
        row["sub_fallback_s"], row["sub_fallback_solver"] = time.perf_counter() - t, s_fb
        lloyd, _ = solve_1d(sub, k, method="lloyd")
        t = time.perf_counter()
        km = KMeans(n_clusters=min(k, np.unique(sub).size), n_init=1, random_state=0).fit(sub[:, None])
        row["sub_sklearn_s"] = time.perf_counter() - t
        e = objective(sub, None, exact)
        row["sse_ratio_fallback"] = objective(sub, None, fb) / e
        row["sse_ratio_lloyd_linear"] = objective(sub, None, lloyd) / e
        row["sse_ratio_sklearn"] = objective(sub, None, km.cluster_centers_.ravel()) / e
        rows.append(row)
        print(row, flush=True)
    out = {
        "settings": {"bits": BITS, "prune": PRUNE, "model": "slimcnn:alexnet_bvlc", "weights": args.weights or "random init"},
        "weights_quantized": int(sum(r.params for r in res.reports())),
        "quantize_seconds": t_quant,
        "pack_seconds": t_pack,
        "payload_bytes": res.payload_bytes,
        "file_bytes": pack.file_bytes,
        "original_bytes": res.original_bytes,
        "layers": rows,
        "environment": {"threads": args.threads, "torch": torch.__version__, "numpy": np.__version__,
                        "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
                        "loadavg_1m_at_end": os.getloadavg()[0]},
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "kmeans_speed.json").write_text(json.dumps(out, indent=2) + "\n")
    lines = [
        "# k-means speed: AlexNet (conv1..fc7) at Tomè et al. Table I settings",
        "",
        f"`{BITS}` with pruning `{PRUNE}`; {out['weights_quantized']:,} weights; {args.threads} torch threads "
        f"({out['environment']['cpu_count']} CPUs visible, 1-min load average {out['environment']['loadavg_1m_at_end']:.1f} at the end: "
        "the machine was shared, so wall times are pessimistic).",
        "",
        f"**Quantise all layers: {t_quant:.1f} s; pack .slim: {t_pack:.1f} s.** Payload {res.payload_bytes / MIB:.3f} MiB "
        f"(bits x kept / 8), file {pack.file_bytes / MIB:.3f} MiB, original {res.original_bytes / MIB:.2f} MiB.",
        "",
        "| layer | bits | kept | solver (full layer) | time s | subsample | exact s | fallback s | sklearn s "
        "| SSE fallback/exact | SSE lloyd-linear/exact | SSE sklearn/exact |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['layer']} | {r['bits']} | {r['kept']:,} | {r['solver']} | {r['seconds']:.2f} | {r['subsample']:,} | "
            f"{r['sub_exact_s']:.2f} | {r['sub_fallback_s']:.2f} | {r['sub_sklearn_s']:.2f} | {r['sse_ratio_fallback']:.5f} | "
            f"{r['sse_ratio_lloyd_linear']:.4f} | {r['sse_ratio_sklearn']:.4f} |"
        )
    lines += [
        "",
        "Subsample columns: the same random subsample of the layer's kept weights for every solver, so the SSE ratios "
        "compare like with like (1.0 = the global optimum). scikit-learn: `KMeans(n_init=1, random_state=0)` "
        "(Lloyd, k-means++ init) on the subsample only; on full 8-bit layers it is too slow to include. "
        "`binned_dp+lloyd` is the documented fallback for layers above `max_exact_work` "
        "(exact DP on <= 8192 weighted runs, then Lloyd on all values).",
        "",
    ]
    (OUT / "kmeans_speed.md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
