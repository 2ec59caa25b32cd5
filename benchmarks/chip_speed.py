"""Speed and exactness of :func:`slimcnn.prune.chip.chip_scores` on ResNet-56-sized layers.

Run: ``.venv/bin/python benchmarks/chip_speed.py [--threads 1 2] [--images 640] [--subset 16]``.
Writes ``benchmarks/results/chip_speed.{md,json}``. The committed results come from
``OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/chip_speed.py --threads 1 --clock cpu``
(about 5 minutes at load 7 on the 2-CPU machine).

Layers: C=16 at 32x32, C=32 at 16x16, C=64 at 8x8, ``--images`` feature maps each (CHIP uses
640). Features are real post-ReLU block outputs of the pretrained ``slimcnn:resnet56``
(``layer{1,2,3}[4]``) on Gaussian-noise inputs when the model and its weights load; otherwise
synthetic correlated post-ReLU maps (recorded in the output as ``features``).

Baselines: ``official_loop`` is what the CHIP code does (one ``torch.linalg.matrix_norm(..., "nuc")``
per image and per channel, on a clone with that row zeroed, in float32); ``direct`` is this
library's batched float64 reference. Both are timed on the first ``--subset`` images (the loop:
median of ``--repeats``) and extrapolated linearly per image to the full count (marked in the
table). ``gram`` and ``secular``
run on all images. Errors are ``max |CI - CI_direct| / mean_n ||A_n||_*`` on the subset.

``eigh`` times only the float64 ``torch.linalg.eigh`` (with eigenvectors) of every image's
``C x C`` Gram matrix, in chunks of 32: the part of ``secular`` no quadrature change can remove, so
``loop / eigh`` is the speed-up ``secular`` could reach at most on this machine. ``eigvalsh`` is the
same without eigenvectors (the reduction to tridiagonal form plus its eigenvalues): what is left
when the eigenvectors are free.

The loop, ``secular``, ``eigh`` and ``eigvalsh`` are timed **interleaved** (one of each per repeat)
and every ``x`` column is the median of the per-repeat ratios, so a load change between repeats
moves both sides of a ratio.

``published code*`` is the CHIP repository's loop as written: it passes ``conv_reshape.clone()``
(all ``N`` images) to ``reduced_1_row_norm`` for every (image, channel), so each nuclear norm also
copies the whole ``N x C x HW`` tensor. It is timed on ``--published-images`` images with the full
640-image tensor and extrapolated per image; it is context only, the speed-ups above are against
the cheaper ``official loop`` (one image cloned).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from slimcnn.measure import cpu_model
from slimcnn.prune.chip import ChipMethod, chip_scores

LAYERS = [(16, 32), (32, 16), (64, 8)]
METHODS: tuple[ChipMethod, ...] = ("gram", "secular")
RESULTS = Path(__file__).resolve().parent / "results"
EIGH_CHUNK = 32


def _real_features(n: int, seed: int) -> tuple[dict[int, torch.Tensor], str] | None:
    try:
        from slimcnn.models import load_model

        loaded = load_model("slimcnn:resnet56")
    except Exception as e:  # optional: any failure falls back to synthetic features  # noqa: BLE001
        print(f"resnet56 unavailable ({type(e).__name__}: {e}); using synthetic features")
        return None
    if not getattr(loaded.info, "pretrained", False):
        return None
    model = loaded.model.eval()
    feats: dict[int, list[torch.Tensor]] = {16: [], 32: [], 64: []}
    hooks = [
        stage[4].register_forward_hook(lambda _m, _i, out, c=c: feats[c].append(out.detach().clone()))
        for stage, c in ((model.layer1, 16), (model.layer2, 32), (model.layer3, 64))
    ]
    g = torch.Generator().manual_seed(seed)
    try:
        with torch.inference_mode():
            for start in range(0, n, 128):
                model(torch.randn(min(128, n - start), 3, 32, 32, generator=g))
    finally:
        for h in hooks:
            h.remove()
    return {
        c: torch.cat(v) for c, v in feats.items()
    }, "real: slimcnn:resnet56 layer{1,2,3}[4] outputs (post-add ReLU), Gaussian-noise inputs"


def _synthetic_features(n: int, c: int, side: int, seed: int) -> torch.Tensor:
    """Correlated, spatially smooth, post-ReLU-like maps (about half zeros)."""
    g = torch.Generator().manual_seed(seed + c)
    z = torch.randn(n, c, side, side, generator=g)
    z = torch.nn.functional.avg_pool2d(z, 3, stride=1, padding=1)
    mix = torch.randn(c, c, generator=g) * (torch.arange(1, c + 1).float() ** -0.7)
    x = torch.einsum("dc,nchw->ndhw", mix, z) + 0.1 * torch.randn(n, c, side, side, generator=g)
    return torch.relu(x)


def _official_loop(features: torch.Tensor) -> torch.Tensor:
    """The CHIP reference code's loop (without its np.round): C+1 nuclear norms per image."""
    n, c = features.shape[:2]
    out = torch.zeros(c, dtype=torch.float64)
    for k in range(n):
        a = features[k].reshape(c, -1)
        full = torch.linalg.matrix_norm(a, "nuc")
        for i in range(c):
            b = a.clone()
            b[i] = 0
            out[i] += float(full - torch.linalg.matrix_norm(b, "nuc"))
    return out / n


def _eigh_only(features: torch.Tensor) -> None:
    """The float64 eigendecomposition ``secular`` needs, alone (its floor)."""
    x = features.reshape(features.shape[0], features.shape[1], -1)
    for block in x.split(EIGH_CHUNK):
        block = block.double()
        torch.linalg.eigh(block @ block.mT)


def _eigvalsh_only(features: torch.Tensor) -> None:
    """The same Gram matrices' eigenvalues alone: ``eigh`` minus the eigenvectors."""
    x = features.reshape(features.shape[0], features.shape[1], -1)
    for block in x.split(EIGH_CHUNK):
        block = block.double()
        torch.linalg.eigvalsh(block @ block.mT)


def _published_code(features: torch.Tensor, images: int) -> torch.Tensor:
    """CHIP's published ``ci_score`` loop (without its ``np.round``) on the first ``images`` images.

    As in the repository, every call gets a clone of *all* images, zeroes one row of one image and
    takes that image's nuclear norm (``torch.norm(..., p="nuc")``).
    """
    conv_reshape = features.reshape(features.shape[0], features.shape[1], -1)
    c = conv_reshape.shape[1]
    r1_norm = torch.zeros(images, c)
    for i in range(images):
        for j in range(c):
            data = conv_reshape.clone()
            data[i, j, :] = torch.zeros(data.shape[-1])
            r1_norm[i, j] = torch.norm(data[i, :, :], p="nuc").item()
    original = torch.stack([torch.norm(conv_reshape[i], p="nuc") for i in range(images)])
    return (original[:, None] - r1_norm).double().mean(0)


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def _time(fn: Any, repeats: int, clock: str) -> tuple[float, Any]:
    times, out = [], None
    for _ in range(repeats):
        t0 = CLOCKS[clock]()
        out = fn()
        times.append(CLOCKS[clock]() - t0)
    return statistics.median(times), out


def _time_interleaved(fns: dict[str, Any], repeats: int, clock: str) -> dict[str, list[float]]:
    """Seconds of each callable per repeat, one call of each in turn per repeat."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = CLOCKS[clock]()
            fn()
            times[name].append(CLOCKS[clock]() - t0)
    return times


def _median_ratio(num: list[float], den: list[float], scale: float = 1.0) -> float:
    """Median over repeats of ``scale * num / den`` (both timed in the same repeat)."""
    return statistics.median(scale * a / b for a, b in zip(num, den, strict=True))


def main() -> None:
    """Run the benchmark and write the Markdown and JSON tables."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="one run per thread count")
    ap.add_argument("--images", type=int, default=640)
    ap.add_argument("--subset", type=int, default=16, help="images timed for the slow baselines")
    ap.add_argument("--repeats", type=int, default=5, help="interleaved repeats (median)")
    ap.add_argument(
        "--published-images", type=int, default=2, help="images timed for the published code's loop (0: skip)"
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--synthetic", action="store_true", help="skip the pretrained ResNet-56")
    ap.add_argument("--tag", default="", help="suffix for the result file names")
    ap.add_argument(
        "--clock",
        choices=sorted(CLOCKS),
        default="wall",
        help="wall: elapsed seconds; cpu: this process's CPU seconds (all threads), steadier on a busy "
        "machine but at --threads > 1 it sums the threads instead of measuring elapsed time",
    )
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    real = None if args.synthetic else _real_features(args.images, args.seed)
    source = real[1] if real else "synthetic: relu(channel-mixed, 3x3-smoothed Gaussian), seed-fixed"
    runs = [_run(args, threads, real[0] if real else None, source) for threads in args.threads]
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = f"chip_speed{args.tag}"
    (RESULTS / f"{stem}.json").write_text(json.dumps({"runs": runs}, indent=2) + "\n")
    text = "# CHIP channel independence: speed and exactness\n\n" + "\n".join(
        _markdown(r["meta"], r["rows"]) for r in runs
    )
    (RESULTS / f"{stem}.md").write_text(text)
    print(text)


def _run(
    args: argparse.Namespace, threads: int, real: dict[int, torch.Tensor] | None, source: str
) -> dict[str, Any]:
    torch.set_num_threads(threads)
    load_before = os.getloadavg()
    rows: list[dict[str, Any]] = []
    for c, side in LAYERS:
        feats = real[c] if real is not None else _synthetic_features(args.images, c, side, args.seed)
        assert feats.shape == (args.images, c, side, side), feats.shape
        n, sub = feats.shape[0], feats[: args.subset]
        scale = float(torch.linalg.svdvals(sub.reshape(len(sub), c, -1).double()).sum(-1).mean())
        chip_scores(sub[:2], method="secular")  # warm-up
        ci_loop = _official_loop(sub)
        t_direct, ci_ref = _time(lambda sub=sub: chip_scores(sub, method="direct"), 1, args.clock)
        times = _time_interleaved(
            {
                "loop": lambda sub=sub: _official_loop(sub),
                "secular": lambda f=feats: chip_scores(f, method="secular"),
                "eigh": lambda f=feats: _eigh_only(f),
                "eigvalsh": lambda f=feats: _eigvalsh_only(f),
            },
            args.repeats,
            args.clock,
        )
        per_image = n / len(sub)
        t_loop, t_eigh = statistics.median(times["loop"]), statistics.median(times["eigh"])
        row: dict[str, Any] = {
            "layer": f"C={c} @ {side}x{side}",
            "C": c,
            "HW": side * side,
            "images": n,
            "subset_images": len(sub),
            "scale_mean_nuclear_norm": scale,
            "official_loop_s": t_loop * n / len(sub),
            "direct_s": t_direct * n / len(sub),
            "official_loop_max_err": float((ci_loop - ci_ref).abs().max()) / scale,
            "eigh_s": t_eigh,
            "eigvalsh_s": statistics.median(times["eigvalsh"]),
            "loop_s_per_repeat": [t * per_image for t in times["loop"]],
            "secular_s_per_repeat": times["secular"],
            "eigh_s_per_repeat": times["eigh"],
        }
        for method in METHODS:
            if method == "secular":
                t = statistics.median(times["secular"])
                row["secular_speedup_vs_official_loop"] = _median_ratio(
                    times["loop"], times["secular"], per_image
                )
            else:
                t, _ = _time(lambda m=method, f=feats: chip_scores(f, method=m), 1, args.clock)
                row[f"{method}_speedup_vs_official_loop"] = row["official_loop_s"] / t
            err = float((chip_scores(sub, method=method) - ci_ref).abs().max()) / scale
            row[f"{method}_s"] = t
            row[f"{method}_max_err"] = err
            row[f"{method}_speedup_vs_direct"] = row["direct_s"] / t
        row["eigh_ceiling_vs_official_loop"] = _median_ratio(times["loop"], times["eigh"], per_image)
        row["eigvalsh_ceiling_vs_official_loop"] = _median_ratio(times["loop"], times["eigvalsh"], per_image)
        row["eigh_share_of_secular"] = _median_ratio(times["eigh"], times["secular"])
        if args.published_images > 0:
            t_pub, ci_pub = _time(lambda f=feats: _published_code(f, args.published_images), 1, args.clock)
            row["published_code_s"] = t_pub * n / args.published_images
            row["published_code_max_err"] = (
                float((ci_pub - chip_scores(feats[: args.published_images], method="direct")).abs().max())
                / scale
            )
            row["secular_speedup_vs_published_code"] = row["published_code_s"] / row["secular_s"]
        rows.append(row)
        print(json.dumps(row))
    meta = {
        "cpu": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        "features": source,
        "seed": args.seed,
        "dtype": "float64 compute (features float32); official_loop in float32",
        "clock": args.clock,
        "repeats": args.repeats,
        "published_images": args.published_images,
        "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
    }
    return {"meta": meta, "rows": rows}


_CLOCK_WORDS = {
    "wall": "wall time",
    "cpu": "CPU time of the benchmark process (`--clock cpu`), not wall time",
}


def _busy(meta: dict[str, Any]) -> str:
    """Say the CPUs were shared when the 1-minute load average exceeded this process's threads."""
    load = max(meta["loadavg_before"][0], meta["loadavg_after"][0])
    return " (other jobs shared the CPUs)" if load > meta["torch_threads"] + 0.5 else " (idle otherwise)"


def _markdown(meta: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    published = all("published_code_s" in r for r in rows)
    lines = [
        f"## torch.set_num_threads({meta['torch_threads']})",
        "",
        f"Machine: {meta['cpu']}, {meta['logical_cpus']} logical CPUs, torch.set_num_threads({meta['torch_threads']}), "
        f"torch {meta['torch']}, Python {meta['python']}; load average before/after "
        f"{meta['loadavg_before'][0]:.1f}/{meta['loadavg_after'][0]:.1f}{_busy(meta)}. {meta['date_utc']} UTC. "
        f"Clock: {_CLOCK_WORDS[meta.get('clock', 'wall')]}.",
        f"Features: {meta['features']}.",
        "",
        "Seconds for all images of one layer. `official loop` (C+1 float32 `matrix_norm(nuc)` per image, one image "
        "cloned per call) and `direct` (batched float64 `svdvals`, this library's reference) were timed on the "
        f"first {rows[0]['subset_images']} images and **extrapolated per image** (marked *); `gram`, `secular`, "
        "`eigh` and `eigvalsh` ran on all images. The loop, `secular`, `eigh` and `eigvalsh` were timed interleaved "
        f"({meta.get('repeats', '?')} repeats; seconds are medians, every × is the median of the per-repeat ratios); "
        "`gram` once. Error = max |CI − CI_direct| / mean‖A_n‖_* on the subset. "
        "`eigh` is only the float64 `eigh` of every image's Gram matrix inside `secular`, so `loop / eigh` is the "
        "most `secular` could gain over the loop here; `eigvalsh` is the same without eigenvectors.",
        "",
        "| layer | images | official loop* s | direct* s | gram s | secular s | secular × vs loop | secular × vs direct "
        "| gram × vs loop | eigh s (share of secular) | loop / eigh × | eigvalsh s | loop / eigvalsh × "
        "| err secular | err gram | err official loop (fp32) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['layer']} | {r['images']} | {r['official_loop_s']:.2f} | {r['direct_s']:.2f} | {r['gram_s']:.3f} "
            f"| {r['secular_s']:.3f} | **{r['secular_speedup_vs_official_loop']:.0f}×** | {r['secular_speedup_vs_direct']:.0f}× "
            f"| {r['gram_speedup_vs_official_loop']:.0f}× | {r['eigh_s']:.3f} ({r['eigh_share_of_secular']:.0%}) "
            f"| {r['eigh_ceiling_vs_official_loop']:.0f}× | {r['eigvalsh_s']:.3f} "
            f"| {r['eigvalsh_ceiling_vs_official_loop']:.0f}× | {r['secular_max_err']:.1e} | {r['gram_max_err']:.1e} "
            f"| {r['official_loop_max_err']:.1e} |"
        )
    if published:
        lines += [
            "",
            "Context: the CHIP repository's loop as published clones all images for every (image, channel) "
            f"(`published code*`, timed on {meta.get('published_images', '?')} images with the full tensor, "
            "extrapolated per image; not the baseline of the × columns above).",
            "",
            "| layer | published code* s | secular × vs published code | err published code (fp32) |",
            "|---|---:|---:|---:|",
        ]
        lines += [
            f"| {r['layer']} | {r['published_code_s']:.1f} | {r['secular_speedup_vs_published_code']:.0f}× "
            f"| {r['published_code_max_err']:.1e} |"
            for r in rows
        ]
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
