"""Deployable artifacts measured: int8 ResNet-20/56 in ONNX Runtime, AlexNet k-means ONNX, LeNet-5 C arrays.

Run: ``.venv/bin/python benchmarks/export_deploy.py [--data PATH] [--limit N] [--calibrations minmax percentile entropy]``;
``--acceptance [VARIANT ...] [--rounds 5] [--batches 1 16] [--runs N] [--pruned MACS --pruned-steps N]``: the
ResNet-56 acceptance table only; ``--pruned 0.7`` adds a pruned model (L1 channels to 0.7x MACs,
``--pruned-steps`` plain fine-tune steps) as fp32 and int8 to the same scoring and interleaved timing.
Writes ``benchmarks/results/export_deploy.{md,json}``.

- **int8**: ``slimcnn:resnet20`` / ``slimcnn:resnet56`` (shared akamaster weights) exported fp32 (batch norm
  folded), quantised by ONNX Runtime's static QDQ quantization (per-channel int8 weights, uint8
  activations) with 512 calibration images from the training tar beside ``--data``; both files are
  scored through ONNX Runtime on all 10,000 CIFAR-10 JPEG test images and timed side by side
  (interleaved round-robin, batch 1, ``--runs`` rounds) at 1 and 2 threads.
- **k-means ONNX**: ``slimcnn:alexnet_bvlc`` (random init: no AlexNet weights ship) with Tomè et al.'s
  Table I settings (bits ``conv1=9,conv*=8,fc*=1``, prune ``conv3=2,conv4=2,fc*=3``) -> ``.slim`` ->
  ONNX with the codes decoded in-graph; file sizes vs the fp32 ONNX and the ``.slim``; ORT parity
  vs the decoded model exported to fp32 ONNX and vs torch.
- **C**: ``slimcnn:lenet5`` k-means (``conv*=8,fc*=4``, prune ``fc*=3``) as C arrays; bytes of the
  ``const`` arrays and, when a C compiler is present, the compiled object's sections.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from slimcnn.export import (
    Int8Spec,
    OrtModule,
    compare_onnx_latency,
    decoded_weights,
    kmeans_onnx,
    pack_layers,
    quantize_int8,
    slim_layers,
    torch_to_onnx,
    write_c,
)
from slimcnn.measure import cpu_model
from slimcnn.measure._onnx import ort_session
from slimcnn.models import load_model
from slimcnn.paths import shared_path
from slimcnn.quantize import KMeansQuantSpec, quantize_model, save_packed
from slimcnn.tasks import make_task

RESULTS = Path(__file__).resolve().parent / "results"
TOME_BITS, TOME_PRUNE = "conv1=9,conv*=8,fc*=1", "conv3=2,conv4=2,fc*=3"


def _int8_rows(data: str, limit: int | None, calibrations: list[str], runs: int, samples: int) -> list[dict[str, Any]]:
    rows = []
    for name in ("resnet20", "resnet56"):
        net = load_model(f"slimcnn:{name}")
        task = make_task("classification", data, info=net.info)
        x = task.example_input(1)
        fp32 = torch_to_onnx(net.model, x).SerializeToString()
        with tempfile.TemporaryDirectory() as tmp:
            fpath = Path(tmp) / "fp32.onnx"
            fpath.write_bytes(fp32)
            t0 = time.perf_counter()
            s_fp = task.evaluate(OrtModule(fpath, threads=2), limit=limit)
            eval_s = time.perf_counter() - t0
            batches = task.calibration_batches(-(-samples // task.batch_size))
            for cal in calibrations if name == "resnet56" else calibrations[:1]:
                t0 = time.perf_counter()
                q = quantize_int8(fp32, batches, Int8Spec(calibration=cal, samples=samples))  # type: ignore[arg-type]
                q_s = time.perf_counter() - t0
                qpath = Path(tmp) / f"int8_{cal}.onnx"
                qpath.write_bytes(q)
                s_q = task.evaluate(OrtModule(qpath, threads=2), limit=limit)
                lat = {t: compare_onnx_latency({"fp32": fp32, "int8": q}, x, threads=t, runs=runs, warmup=20)
                       for t in (1, 2)}
                rows.append({
                    "model": name, "calibration": cal, "calibration_images": samples, "n": s_q.n, "dataset": s_q.dataset,
                    "top1_fp32": s_fp.value, "top1_int8": s_q.value, "drop": s_fp.value - s_q.value,
                    "fp32_bytes": len(fp32), "int8_bytes": len(q), "quantize_s": round(q_s, 1),
                    "eval_fp32_s": round(eval_s, 1),
                    "latency": {str(t): {k: {"median_ms": v.median_ms, "p10_ms": v.p10_ms, "p90_ms": v.p90_ms, "n": v.n}
                                         for k, v in lat[t].items()} for t in lat},
                    "ratio_1t": lat[1]["int8"].median_ms / lat[1]["fp32"].median_ms,
                    "ratio_2t": lat[2]["int8"].median_ms / lat[2]["fp32"].median_ms,
                })
                print(json.dumps({k: v for k, v in rows[-1].items() if k != "latency"}), flush=True)
    return rows


def _fallback_row(data: str, runs: int, samples: int, max_drop: str, sweep: int) -> dict[str, Any]:
    """ResNet-56 int8 with ``--float-fallback auto --max-drop``: the sweep, the greedy, all 10,000 images; latency of
    fp32, all-int8 and fallback int8 interleaved in one run."""
    from slimcnn.export._fallback import _score, float_fallback
    from slimcnn.export._int8 import Int8Quantizer

    net = load_model("slimcnn:resnet56")
    task = make_task("classification", data, info=net.info)
    x = task.example_input(1)
    fp32 = torch_to_onnx(net.model, x).SerializeToString()
    t0 = time.perf_counter()
    s_fp, _ = _score(task, fp32, 2, None)
    spec = Int8Spec(samples=samples, float_fallback="auto", max_drop=max_drop, sweep_limit=sweep)
    with Int8Quantizer(fp32, task.calibration_batches(-(-samples // task.batch_size)), spec) as qz:
        q_all = qz.quantize()
        fb = float_fallback(qz, fp32, task, baseline=s_fp, limit=None, threads=2)
    search_s = time.perf_counter() - t0
    final = fb.details["steps"][-1]
    lat = {t: compare_onnx_latency({"fp32": fp32, "int8": fb.data, "int8_all": q_all}, x, threads=t, runs=runs,
                                   warmup=20) for t in (1, 2)}
    return {
        "model": "resnet56", "calibration": f"minmax, --float-fallback auto --max-drop {max_drop} "
        f"(float: {', '.join(fb.float_layers) or 'none'})", "calibration_images": samples, "n": final["n"],
        "top1_fp32": s_fp.value, "top1_int8": final["score"], "drop": s_fp.value - final["score"],
        "fp32_bytes": len(fp32), "int8_bytes": len(fb.data), "search_s": round(search_s, 1),
        "float_fallback": fb.details,
        "latency": {str(t): {k: {"median_ms": v.median_ms, "p10_ms": v.p10_ms, "p90_ms": v.p90_ms, "n": v.n}
                             for k, v in lat[t].items()} for t in lat},
        "ratio_1t": lat[1]["int8"].median_ms / lat[1]["fp32"].median_ms,
        "ratio_2t": lat[2]["int8"].median_ms / lat[2]["fp32"].median_ms,
        "ratio_all_int8_1t": lat[1]["int8_all"].median_ms / lat[1]["fp32"].median_ms,
        "load_avg": [round(v, 2) for v in os.getloadavg()],
    }


ACCEPTANCE_VARIANTS: dict[str, tuple[dict[str, Any], list[str]]] = {
    "all int8, 8-bit weights": ({"reduce_range": False}, []),
    "all int8, 7-bit weights (reduce range: the default on a CPU without VNNI)": ({"reduce_range": True}, []),
    "conv1 float, 8-bit weights": ({"reduce_range": False}, ["conv1"]),
    "all int8, 7-bit weights, entropy": ({"reduce_range": True, "calibration": "entropy"}, []),
}


def _acceptance_row(data: str, runs: int, rounds: int, batches: list[int], names: list[str],
                    pruned: float | None = None, pruned_steps: int = 0) -> dict[str, Any]:
    """ResNet-56 acceptance: each variant scored by ORT on all test images; fp32 and every variant timed
    interleaved round-robin in one process (1 thread), ``rounds`` times per input batch; medians of the rounds.
    ``pruned``: also a channel-pruned copy (L1 to that MACs ratio, ``pruned_steps`` plain fine-tune steps), fp32
    and int8 (the default spec), scored and timed in the same run against the original."""
    net = load_model("slimcnn:resnet56")
    task = make_task("classification", data, info=net.info)
    x = task.example_input(1)
    fp32 = torch_to_onnx(net.model, x).SerializeToString()
    from slimcnn.export._fallback import _score
    from slimcnn.export._int8 import Int8Quantizer

    s_fp, _ = _score(task, fp32, 2, None)
    files, rows = {"fp32": fp32}, {}
    variants = {n: ACCEPTANCE_VARIANTS[n] for n in names}
    if pruned is not None:
        import copy

        from slimcnn.prune import prune_model_

        small = copy.deepcopy(net.model)
        # channels at any width: rounding to 8 halves the 16-channel stage (measured 34 % top-1 after 150 steps)
        pruned_macs = prune_model_(small, x, criterion="l1", macs=pruned)
        pruned_macs_ratio = pruned_macs.macs_after / pruned_macs.macs_before
        if pruned_steps:
            task.finetune(small, pruned_steps, seed=0, progress=False)
        name = f"pruned to {pruned}x MACs (L1, {pruned_steps} fine-tune steps), fp32"
        files[name] = torch_to_onnx(small.eval(), x).SerializeToString()
        s_p, _ = _score(task, files[name], 2, None)
        rows[name] = {"top1": s_p.value, "drop": s_fp.value - s_p.value, "n": s_p.n, "bytes": len(files[name]),
                      "macs_ratio": pruned_macs_ratio}
        print(name, rows[name], flush=True)
        variants[name.replace("fp32", "int8 (default spec)")] = ({}, [], files[name])
    for name, (kw, float_layers, *source) in variants.items():
        spec = Int8Spec(**kw)
        base = source[0] if source else fp32
        with Int8Quantizer(base, task.calibration_batches(-(-spec.samples // task.batch_size)), spec) as qz:
            files[name] = qz.quantize(float_layers)
        s_q, _ = _score(task, files[name], 2, None)
        rows[name] = {"top1": s_q.value, "drop": s_fp.value - s_q.value, "n": s_q.n, "bytes": len(files[name])}
        print(name, rows[name], flush=True)
    load0 = os.getloadavg()
    latency: dict[str, dict[str, list[float]]] = {}
    for b in batches:
        xb = torch.cat([x] * b)
        per: dict[str, list[float]] = {n: [] for n in files}
        for _ in range(rounds):
            lat = compare_onnx_latency(files, xb, threads=1, runs=runs, warmup=10)
            for n, v in lat.items():
                per[n].append(v.median_ms)
        latency[str(b)] = per
        for n in rows:
            rows[n][f"ratio_b{b}"] = float(np.median(per[n])) / float(np.median(per["fp32"]))
            rows[n][f"ratio_b{b}_rounds"] = [a / f for a, f in zip(per[n], per["fp32"], strict=True)]
        print(b, {n: round(rows[n][f"ratio_b{b}"], 3) for n in rows}, flush=True)
    import onnxruntime

    from slimcnn.export._int8 import needs_reduce_range

    return {"cpu": cpu_model(), "vnni": not needs_reduce_range(), "onnxruntime": onnxruntime.__version__,
            "top1_fp32": s_fp.value, "n": s_fp.n, "variants": rows, "latency_ms": latency, "rounds": rounds,
            "runs_per_round": runs, "batches": batches, "threads": 1,
            "load_avg": [round(v, 2) for v in load0] + [round(v, 2) for v in os.getloadavg()]}


def _acceptance_markdown(a: dict[str, Any]) -> list[str]:
    bs = a["batches"]
    lines = ["", "## ResNet-56 acceptance: drop and ORT latency ratio of each int8 variant, measured side by side", "",
             f"Machine: {a.get('cpu', 'AMD EPYC')} ({'with' if a.get('vnni') else 'without'} VNNI), ONNX Runtime "
             f"{a.get('onnxruntime', '?')}. "
             f"top-1 fp32 {a['top1_fp32']:.2f} on all {a['n']:,} test images (ONNX Runtime). Latency: fp32 and every "
             f"variant interleaved round-robin in one process, 1 thread, {a['runs_per_round']} runs x {a['rounds']} "
             f"rounds per input batch. Ratio = median over the rounds of (variant median / fp32 median in that "
             f"round; the two interleaved), [min–max over rounds], then the ratio of the medians over all rounds; "
             f"load average {a['load_avg'][:3]} before timing, {a['load_avg'][3:]} after.", "",
             "| variant | top-1 int8 | drop (pt) | " + " | ".join(f"ratio batch {b}" for b in bs) + " | meets 0.5 pt and 0.6x |",
             "|---|---|---|" + "---|" * len(bs) + "---|"]
    for name, r in a["variants"].items():
        per_round = {b: r[f"ratio_b{b}_rounds"] for b in bs}
        ok = r["drop"] <= 0.5 and min(float(np.median(per_round[b])) for b in bs) <= 0.6
        cells = [f"{np.median(per_round[b]):.3f}x [{min(per_round[b]):.2f}–{max(per_round[b]):.2f}]; "
                 f"{r[f'ratio_b{b}']:.3f}x" for b in bs]
        shown = f"{name} ({r['macs_ratio']:.3f}x MACs)" if "macs_ratio" in r else name
        lines.append(f"| {shown} | {r['top1']:.2f} | {r['drop']:.2f} | " + " | ".join(cells) + f" | {'yes' if ok else 'no'} |")
    return lines


def _alexnet_row(tmp: Path) -> dict[str, Any]:
    net = load_model("slimcnn:alexnet_bvlc", seed=0)
    t0 = time.perf_counter()
    res = quantize_model(net.model, KMeansQuantSpec.parse(TOME_BITS, TOME_PRUNE))
    q_s = time.perf_counter() - t0
    rep = save_packed(tmp / "alexnet.slim", res, source=net.source, info=net.info)
    layers = slim_layers(tmp / "alexnet.slim")
    decoded = load_model(f"file:{tmp / 'alexnet.slim'}").model.eval()
    x = torch.randn(2, 3, 227, 227, generator=torch.Generator().manual_seed(0))
    t0 = time.perf_counter()
    data = kmeans_onnx(decoded, layers, x[:1])
    export_s = time.perf_counter() - t0
    fp32_orig = torch_to_onnx(net.model, x[:1]).SerializeToString()
    reference = torch_to_onnx(decoded, x[:1], keep_batchnorm=True).SerializeToString()
    got = decoded_weights(data, [f"{n}.weight" for n in layers])
    exact = all(np.array_equal(got[f"{n}.weight"], p.decode().numpy()) for n, p in layers.items())
    t0 = time.perf_counter()
    sess = ort_session(data, threads=2)
    session_s = time.perf_counter() - t0
    out_k = sess.run(None, {"input": x.numpy()})[0]
    out_r = ort_session(reference, threads=2).run(None, {"input": x.numpy()})[0]
    with torch.no_grad():
        out_t = decoded(x).numpy()
    lat = compare_onnx_latency({"fp32": reference, "kmeans": data}, x[:1], threads=2, runs=20, warmup=3)
    return {
        "model": "alexnet_bvlc (random init)", "bits": TOME_BITS, "prune": TOME_PRUNE, "quantize_s": round(q_s, 1),
        "onnx_kmeans_bytes": len(data), "fp32_onnx_bytes": len(fp32_orig), "slim_bytes": rep.file_bytes,
        "payload_bytes": rep.payload_bytes, "paper_payload_bytes": rep.paper_payload_bytes,
        "onnx_vs_slim": len(data) / rep.file_bytes, "onnx_vs_fp32": len(data) / len(fp32_orig),
        "decoders_bit_exact": exact, "parity_vs_decoded_onnx": float(np.abs(out_k - out_r).max()),
        "parity_vs_torch": float(np.abs(out_k - out_t).max()), "max_abs_output": float(np.abs(out_t).max()),
        "export_s": round(export_s, 1), "session_create_s": round(session_s, 2),
        "latency_ms": {k: v.median_ms for k, v in lat.items()},
        "layers": [{"layer": p.layer, "width": p.width, "kept": p.count, "mask": p.mask_kind,
                    "bytes": p.payload_bytes} for p in layers.values()],
    }


def _lenet_c_row(tmp: Path) -> dict[str, Any]:
    net = load_model("slimcnn:lenet5", seed=0)
    res = quantize_model(net.model, KMeansQuantSpec.parse("conv*=8,fc*=4", "fc*=3"))
    layers = pack_layers(res.layers)
    info = write_c(tmp / "c", layers, res.model.state_dict())
    row: dict[str, Any] = {"model": "lenet5", "bits": "conv*=8,fc*=4", "prune": "fc*=3",
                           "fp32_param_bytes": 4 * sum(p.numel() for p in net.model.parameters()),
                           "array_bytes": info.array_bytes, "kmeans_bytes": info.kmeans_bytes, "raw_bytes": info.raw_bytes,
                           "c_source_bytes": sum((tmp / "c" / f).stat().st_size for f in info.files)}
    cc = shutil.which("cc")
    if cc and shutil.which("size"):
        objs = []
        for f in ("slim_model.c", "slimcnn_decode.c"):
            o = tmp / "c" / f.replace(".c", ".o")
            subprocess.run([cc, "-std=c99", "-Os", "-c", "-o", str(o), str(tmp / "c" / f)], check=True)
            objs.append(str(o))
        out = subprocess.run(["size", *objs], check=True, capture_output=True, text=True).stdout.splitlines()
        row["size_cmd"] = out
        row["object_bytes"] = {Path(line.split()[-1]).name: int(line.split()[3]) for line in out[1:]}
    return row


def _markdown(res: dict[str, Any]) -> str:
    env = res["environment"]
    lines = ["# Export / deploy benchmark", "",
             f"Machine: {env['cpu']} ({env['cpu_count']} logical CPUs, a VM shared with other jobs; load "
             f"{env['load_avg']}), ONNX Runtime {env['onnxruntime']}, torch {env['torch']}. Latency: batch 1, "
             "fp32 and int8 files interleaved round-robin in one process, median ms (p10/p90 in the JSON).", "",
             "## int8 static PTQ (ONNX Runtime QDQ, per-channel int8 weights, uint8 activations)", "",
             "| model | calibration | top-1 fp32 | top-1 int8 | drop (pt) | n | file fp32 -> int8 | "
             "1 thread fp32 / int8 ms | ratio | 2 threads fp32 / int8 ms | ratio |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in res["int8"]:
        la = r["latency"]
        cell = {t: f"{la[t]['fp32']['median_ms']:.3f} / {la[t]['int8']['median_ms']:.3f}" for t in ("1", "2")}
        lines.append(f"| {r['model']} | {r['calibration']} ({r['calibration_images']} img) | {r['top1_fp32']:.2f} | "
                     f"{r['top1_int8']:.2f} | {r['drop']:.2f} | {r['n']} | {r['fp32_bytes']:,} -> {r['int8_bytes']:,} | "
                     f"{cell['1']} | {r['ratio_1t']:.2f}x | {cell['2']} | {r['ratio_2t']:.2f}x |")
    for r in res["int8"]:
        if "float_fallback" not in r:
            continue
        from slimcnn.export._fallback import sensitivity_table

        fb, la = r["float_fallback"], r["latency"]
        lines += ["", f"### Float fallback, ResNet-56 (`--float-fallback auto --max-drop {fb['max_drop']}`)", "",
                  f"{fb['method']}; {fb['sweep_images']} sweep images, {len(fb['sensitivity'])} layers; greedy steps "
                  "(float layers: drop in points on n images): "
                  + ", ".join(f"{st['float_layers']}: {st['drop']:.2f} (n={st['n']})" for st in fb["steps"])
                  + f". Kept in float: {', '.join(fb['chosen']) or 'none'}; sweep + greedy + verification "
                  f"{r['search_s']} s (fp32 score included). Latency interleaved in one run (fp32 / all-int8 / fallback "
                  f"int8, 1 thread): {la['1']['fp32']['median_ms']:.3f} / {la['1']['int8_all']['median_ms']:.3f} / "
                  f"{la['1']['int8']['median_ms']:.3f} ms; load at the end {r['load_avg']}.", "",
                  "Most sensitive layers:", "", sensitivity_table(fb)]
    a = res["alexnet"]
    lines += ["", "## k-means weights inside standard ONNX (AlexNet, Tomè et al. Table I settings)", "",
              f"`{a['model']}`, bits `{a['bits']}`, prune `{a['prune']}`.", "",
              "| file | bytes | vs fp32 ONNX | vs .slim |", "|---|---|---|---|",
              f"| fp32 ONNX | {a['fp32_onnx_bytes']:,} | 1.000x | {a['fp32_onnx_bytes'] / a['slim_bytes']:.2f}x |",
              f"| .slim | {a['slim_bytes']:,} | {a['slim_bytes'] / a['fp32_onnx_bytes']:.4f}x | 1.000x |",
              f"| k-means ONNX | {a['onnx_kmeans_bytes']:,} | {a['onnx_vs_fp32']:.4f}x | {a['onnx_vs_slim']:.3f}x |", "",
              f"ORT parity: max |k-means ONNX - decoded model as fp32 ONNX| = {a['parity_vs_decoded_onnx']:.3g}, "
              f"vs torch {a['parity_vs_torch']:.3g} (max |output| {a['max_abs_output']:.3g}); in-graph decoders bit-exact: "
              f"{a['decoders_bit_exact']}. Session creation (decoders folded) {a['session_create_s']} s; latency "
              f"fp32 {a['latency_ms']['fp32']:.1f} ms vs k-means {a['latency_ms']['kmeans']:.1f} ms (2 threads).", ""]
    if "acceptance" in res:
        lines += _acceptance_markdown(res["acceptance"]) + [""]
    c = res["lenet_c"]
    lines += ["## C arrays for microcontrollers (LeNet-5)", "",
              f"bits `{c['bits']}`, prune `{c['prune']}`: const arrays {c['array_bytes']:,} bytes (k-means "
              f"{c['kmeans_bytes']:,} + float tensors {c['raw_bytes']:,}) vs {c['fp32_param_bytes']:,} bytes of fp32 "
              f"parameters; C source {c['c_source_bytes']:,} bytes."]
    if "object_bytes" in c:
        lines.append(f"Compiled with `cc -Os` (x86-64 objects, total section bytes): {c['object_bytes']}.")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    default = shared_path("cifar10-jpeg75", "test-10k.tar")
    ap.add_argument("--data", default=str(default) if default else None)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--calibrations", nargs="+", default=["minmax", "percentile", "entropy"])
    ap.add_argument("--samples", type=int, default=512)
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--skip-int8", action="store_true")
    ap.add_argument("--fallback-only", action="store_true",
                    help="only the ResNet-56 --float-fallback auto row, merged into the existing results")
    ap.add_argument("--max-drop", default="0.5")
    ap.add_argument("--sweep-limit", type=int, default=1000)
    ap.add_argument("--acceptance", nargs="*", default=None, choices=list(ACCEPTANCE_VARIANTS),
                    help="only the ResNet-56 acceptance table (these variants; none given: all), merged into the results")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--pruned", type=float, default=None, help="also a pruned model at this MACs ratio (fp32 + int8)")
    ap.add_argument("--pruned-steps", type=int, default=200)
    args = ap.parse_args()
    if args.acceptance is not None:
        res = json.loads((RESULTS / "export_deploy.json").read_text())
        res["acceptance"] = _acceptance_row(args.data, args.runs, args.rounds, args.batches,
                                            args.acceptance or list(ACCEPTANCE_VARIANTS), args.pruned, args.pruned_steps)
        (RESULTS / "export_deploy.json").write_text(json.dumps(res, indent=1))
        (RESULTS / "export_deploy.md").write_text(_markdown(res))
        return
    if args.fallback_only:
        res = json.loads((RESULTS / "export_deploy.json").read_text())
        row = _fallback_row(args.data, args.runs, args.samples, args.max_drop, args.sweep_limit)
        res["int8"] = [r for r in res["int8"] if "float_fallback" not in r] + [row]
        (RESULTS / "export_deploy.json").write_text(json.dumps(res, indent=1))
        (RESULTS / "export_deploy.md").write_text(_markdown(res))
        print(json.dumps({k: v for k, v in row.items() if k not in ("latency", "float_fallback")}))
        return
    import onnxruntime

    env = {"cpu": cpu_model(), "cpu_count": os.cpu_count(), "onnxruntime": onnxruntime.__version__,
           "torch": torch.__version__, "platform": platform.platform(), "load_avg": [round(v, 2) for v in os.getloadavg()]}
    out: dict[str, Any] = {"environment": env}
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        out["lenet_c"] = _lenet_c_row(tmp)
        print(json.dumps(out["lenet_c"]), flush=True)
        out["alexnet"] = _alexnet_row(tmp)
        print(json.dumps({k: v for k, v in out["alexnet"].items() if k != "layers"}), flush=True)
    if not args.skip_int8:
        if args.data is None:
            raise SystemExit("needs --data (the CIFAR-10 test tar)")
        out["int8"] = _int8_rows(args.data, args.limit, args.calibrations, args.runs, args.samples)
    env["load_avg_end"] = [round(v, 2) for v in os.getloadavg()]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "export_deploy.json").write_text(json.dumps(out, indent=1))
    if "int8" in out:
        (RESULTS / "export_deploy.md").write_text(_markdown(out))
    print((RESULTS / "export_deploy.md").read_text() if "int8" in out else "")


if __name__ == "__main__":
    main()
