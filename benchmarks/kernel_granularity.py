"""k×k-kernel granularity on SR nets: grouped pattern (MACs, ORT latency, PSNR) and free pattern (file size).

Run: ``.venv/bin/python benchmarks/kernel_granularity.py [--threads 2] [--runs 40] [--ft-steps-vdsr 100]
[--ft-steps-fsrcnn 300] [--limit 5] [--quick]``. Writes ``benchmarks/results/kernel_granularity.{md,json}``.

(a) grouped pattern: every middle conv (VDSR ``residual_layer.*``; FSRCNN ``mid_part`` convs) becomes a
``G``-group conv (G = 2, 4) with :func:`slimcnn.prune.kernel.group_kernels_` (criterion l1). MACs
from :func:`slimcnn.measure.profile`; ONNX Runtime latency of dense/G2/G4 interleaved in one process
by :func:`slimcnn.measure.compare_latency` at a fixed input (VDSR 1×1×256×256, FSRCNN ×3 LR
1×1×128×128). PSNR on Set5 (Y, MATLAB bicubic degradation) without retraining and after a short
fine-tune on T91 (the SR task's recipe; steps recorded).

(b) free pattern: :func:`kernel_masks` with Liu et al.'s sparsity criterion per kernel at prune ratios
0.25/0.5/0.75 on every ``groups=1`` conv with >1 in and out channels; compact file size vs the dense
``torch.save(state_dict)`` (``model.pt``) and vs the same format with nothing removed; index overhead;
PSNR drop (no retraining); channels that became removable.
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import onnxruntime
import torch
from torch import nn

from slimcnn.measure import compare_latency, cpu_model, profile
from slimcnn.models import load_model
from slimcnn.paths import shared_path
from slimcnn.prune.kernel import (
    apply_kernel_masks_,
    group_kernels_,
    kernel_masks,
    removable_channels,
    save_kernel_compact,
)

RESULTS = Path(__file__).resolve().parent / "results"
MODELS = {
    "vdsr": dict(source="slimcnn:vdsr", scale=2, shape=(1, 1, 256, 256),
                 layers=[f"residual_layer.{i}.conv" for i in range(18)]),
    "fsrcnn": dict(source="slimcnn:fsrcnn", scale=3, shape=(1, 1, 128, 128),
                   layers=[f"mid_part.{i}" for i in (0, 2, 4, 6, 8, 10)]),
}


def _state_bytes(model: nn.Module) -> int:
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return len(buf.getvalue())


def _task(loaded: Any, scale: int, subset: int | None) -> Any:
    from slimcnn.tasks import make_task

    return make_task("sr", shared_path("sr", "T91"), val_data=shared_path("sr", "Set5"), info=loaded.info,
                     scale=scale, subset=subset)


def run_model(name: str, args: argparse.Namespace) -> dict[str, Any]:
    cfg = MODELS[name]
    loaded = load_model(cfg["source"], scale=cfg["scale"])
    dense = loaded.model.eval()
    x = torch.rand(cfg["shape"])
    task = _task(loaded, cfg["scale"], args.limit)
    ft_steps = args.ft_steps_vdsr if name == "vdsr" else args.ft_steps_fsrcnn
    t0 = time.time()
    base = task.evaluate(dense).value
    base_macs = profile(dense, x).macs
    res: dict[str, Any] = {"source": cfg["source"], "scale": cfg["scale"], "input": list(cfg["shape"]),
                           "pretrained": loaded.info.pretrained, "psnr_dense": base, "macs_dense": base_macs,
                           "grouped": [], "free": []}
    models: dict[str, nn.Module] = {"dense": dense}
    for g in (2, 4):
        m = copy.deepcopy(dense)
        t = time.time()
        rep = group_kernels_(m, {layer: g for layer in cfg["layers"]}, "l1", example_input=x[..., :32, :32])
        plan_s = time.time() - t
        models[f"G{g}"] = m
        row: dict[str, Any] = {
            "groups": g, "plan_seconds": plan_s, "max_abs_error_vs_masked": rep.max_abs_error,
            "pinned": list(rep.pinned), "macs": profile(m, x).macs,
            "kept_importance_mean": sum(gl.kept_importance for gl in rep.layers) / len(rep.layers),
            "psnr": task.evaluate(m).value,
        }
        row["macs_ratio"] = row["macs"] / base_macs
        row["psnr_drop"] = base - row["psnr"]
        if ft_steps > 0:
            ft = copy.deepcopy(m).train()
            task.finetune(ft, ft_steps, progress=False)
            row["finetune_steps"] = ft_steps
            row["psnr_finetuned"] = task.evaluate(ft.eval()).value
            row["psnr_drop_finetuned"] = base - row["psnr_finetuned"]
            # the dense model fine-tuned the same way, so the recovery is not confused with plain extra training
            if "psnr_dense_finetuned" not in res:
                dft = copy.deepcopy(dense).train()
                task.finetune(dft, ft_steps, progress=False)
                res["psnr_dense_finetuned"] = task.evaluate(dft.eval()).value
        res["grouped"].append(row)
    lat = compare_latency(models, x, runtime="onnxruntime", threads=args.threads, warmup=5, runs=args.runs)
    res["latency"] = {k: {"median_ms": v.median_ms, "p10_ms": v.p10_ms, "p90_ms": v.p90_ms, "n": v.n}
                      for k, v in lat.items()}
    for row in res["grouped"]:
        k = f"G{row['groups']}"
        row["latency_ratio"] = lat[k].median_ms / lat["dense"].median_ms
    dense_pt = _state_bytes(dense)
    res["model_pt_bytes"] = dense_pt
    with tempfile.TemporaryDirectory() as d:
        for criterion in ("sparsity", "l1"):
            none = save_kernel_compact(dense, kernel_masks(dense, 0.0, criterion), Path(d) / "0.slimk")
            res["compact_unpruned_bytes"] = none.file_bytes
            for r in (0.25, 0.5, 0.75):
                masks = kernel_masks(dense, r, criterion)
                st = save_kernel_compact(dense, masks, Path(d) / "k.slimk", source=cfg["source"], scale=cfg["scale"])
                m = copy.deepcopy(dense)
                apply_kernel_masks_(m, masks)
                params = sum(p.numel() for p in dense.parameters())
                convs = dict(dense.named_modules())
                removed_w = sum(int((~mk).sum()) * convs[f].weight[0, 0].numel() for f, mk in masks.items())
                rem = removable_channels(m, x[..., :32, :32])
                res["free"].append({
                    "criterion": criterion, "prune_ratio": r, "kernels_removed": st.kernels_total - st.kernels_kept,
                    "kernels_total": st.kernels_total, "weights_removed_fraction": removed_w / params,
                    "file_bytes": st.file_bytes, "index_bytes": st.index_bytes, "header_bytes": st.header_bytes,
                    "size_vs_model_pt": st.file_bytes / dense_pt, "size_vs_compact_unpruned": st.file_bytes / none.file_bytes,
                    "expected_vs_compact_unpruned": 1 - (none.kernel_value_bytes - st.kernel_value_bytes) / none.file_bytes,
                    "removable_channels": sum(map(len, rem.values())),
                    "psnr": task.evaluate(m).value if criterion == "sparsity" or args.l1_psnr else None,
                })
                if res["free"][-1]["psnr"] is not None:
                    res["free"][-1]["psnr_drop"] = base - res["free"][-1]["psnr"]
    res["seconds"] = time.time() - t0
    return res


def rerun_latency(name: str, res: dict[str, Any], args: argparse.Namespace) -> None:
    """Re-time dense/G2/G4 only (``--latency-only``), replacing the latency fields of ``res``."""
    cfg = MODELS[name]
    dense = load_model(cfg["source"], scale=cfg["scale"]).model.eval()
    x = torch.rand(cfg["shape"])
    models: dict[str, nn.Module] = {"dense": dense}
    for g in (2, 4):
        models[f"G{g}"] = copy.deepcopy(dense)
        group_kernels_(models[f"G{g}"], {layer: g for layer in cfg["layers"]}, "l1", example_input=x[..., :32, :32])
    lat = compare_latency(models, x, runtime="onnxruntime", threads=args.threads, warmup=5, runs=args.runs)
    res["latency"] = {k: {"median_ms": v.median_ms, "p10_ms": v.p10_ms, "p90_ms": v.p90_ms, "n": v.n}
                      for k, v in lat.items()}
    for row in res["grouped"]:
        row["latency_ratio"] = lat[f"G{row['groups']}"].median_ms / lat["dense"].median_ms
    res.setdefault("settings", {})["latency_runs"] = args.runs
    res["settings"]["latency_date"] = time.strftime("%Y-%m-%d %H:%M:%S")


def _md(out: dict[str, Any]) -> str:
    env = out["env"]
    lines = [
        "# k×k-kernel granularity (grouped and free pattern)",
        "",
        f"Machine: {env['cpu']}, ORT {env['onnxruntime']}, torch {env['torch']}. Latency: dense/G2/G4 interleaved "
        "in one process (`compare_latency`, ONNX Runtime, fixed intra-op threads), median and p10–p90. PSNR: Set5 "
        f"(Y, MATLAB bicubic, shave=scale); fine-tune on T91 with the SR task's recipe. {env['note']}",
        "",
        *[f"- {n}: {r.get('settings', {}).get('threads')} threads, "
          f"{r.get('settings', {}).get('latency_runs', r.get('settings', {}).get('runs'))} timed runs "
          f"per model, {r.get('settings', {}).get('limit') or 5} Set5 images, pretrained={r['pretrained']}, "
          f"run {r.get('settings', {}).get('date')}" for n, r in out["models"].items()],
        "",
        "## (a) grouped pattern (all middle convs, criterion l1)",
        "",
        "| model | input | G | MACs ratio | ORT median ms (p10–p90) | latency ratio | kept imp. | PSNR drop | "
        "PSNR drop after FT (steps) | max err vs masked |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in out["models"].items():
        d = r["latency"]["dense"]
        shape = "×".join(map(str, r["input"]))
        lines.append(f"| {name} ×{r['scale']} | {shape} | dense | 1.000 | {d['median_ms']:.1f} ({d['p10_ms']:.1f}–"
                     f"{d['p90_ms']:.1f}) | 1.000 | 1.000 | 0 (PSNR {r['psnr_dense']:.2f}) | "
                     + (f"{r['psnr_dense'] - r['psnr_dense_finetuned']:+.2f} (dense, same FT)" if "psnr_dense_finetuned" in r
                        else "–") + " | – |")
        for g in r["grouped"]:
            lt = r["latency"][f"G{g['groups']}"]
            ft = (f"{g['psnr_drop_finetuned']:.2f} ({g['finetune_steps']})" if "finetune_steps" in g else "–")
            lines.append(f"| {name} ×{r['scale']} | {shape} | {g['groups']} | {g['macs_ratio']:.3f} | "
                         f"{lt['median_ms']:.1f} ({lt['p10_ms']:.1f}–{lt['p90_ms']:.1f}) | {g['latency_ratio']:.3f} | "
                         f"{g['kept_importance_mean']:.3f} | {g['psnr_drop']:.2f} | {ft} | {g['max_abs_error_vs_masked']:.1e} |")
    lines += [
        "",
        "## (b) free pattern (compact file)",
        "",
        "| model | criterion | prune ratio | kernels removed | weights removed | file bytes | vs model.pt | "
        "vs compact unpruned (expected) | index bytes | removable ch. | PSNR drop |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in out["models"].items():
        for f in r["free"]:
            pd = f"{f['psnr_drop']:.2f}" if f.get("psnr_drop") is not None else "–"
            lines.append(
                f"| {name} | {f['criterion']} | {f['prune_ratio']} | {f['kernels_removed']}/{f['kernels_total']} | "
                f"{f['weights_removed_fraction']:.3f} | {f['file_bytes']:,} | {f['size_vs_model_pt']:.3f} | "
                f"{f['size_vs_compact_unpruned']:.3f} ({f['expected_vs_compact_unpruned']:.3f}) | {f['index_bytes']:,} | "
                f"{f['removable_channels']} | {pd} |")
        lines.append(f"| {name} | dense | 0 | – | – | model.pt {r['model_pt_bytes']:,}; compact unpruned "
                     f"{r['compact_unpruned_bytes']:,} | 1.000 | – | – | – | 0 |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=40)
    ap.add_argument("--limit", type=int, default=None, help="Set5 images (default all 5)")
    ap.add_argument("--ft-steps-vdsr", type=int, default=100)
    ap.add_argument("--ft-steps-fsrcnn", type=int, default=300)
    ap.add_argument("--models", default="vdsr,fsrcnn")
    ap.add_argument("--latency-only", action="store_true", help="re-time dense/G2/G4 of --models into the JSON")
    ap.add_argument("--render", action="store_true", help="only rewrite the Markdown from the JSON")
    ap.add_argument("--merge", action="store_true", help="keep other models' results already in the JSON")
    ap.add_argument("--l1-psnr", action="store_true", help="also evaluate PSNR for the l1 free pattern")
    ap.add_argument("--note", default="Machine heavily loaded by other jobs during this run; re-run on a quiet "
                    "machine for final latency numbers.")
    args = ap.parse_args()
    if args.render:
        (RESULTS / "kernel_granularity.md").write_text(_md(json.loads((RESULTS / "kernel_granularity.json").read_text())))
        return
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    out: dict[str, Any] = {"env": {
        "cpu": cpu_model(), "python": platform.python_version(), "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__, "threads": args.threads, "runs": args.runs, "limit": args.limit,
        "note": args.note, "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }, "models": {}}
    path = RESULTS / "kernel_granularity.json"
    if (args.merge or args.latency_only) and path.exists():
        out["models"] = json.loads(path.read_text())["models"]
    for name in args.models.split(","):
        if args.latency_only:
            rerun_latency(name, out["models"][name], args)
            continue
        out["models"][name] = run_model(name, args)
        out["models"][name]["settings"] = {"threads": args.threads, "runs": args.runs, "limit": args.limit,
                                           "date": time.strftime("%Y-%m-%d %H:%M:%S")}
        print(name, json.dumps({k: v for k, v in out["models"][name].items() if k != "free"}, default=str)[:2000])
    RESULTS.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    (RESULTS / "kernel_granularity.md").write_text(_md(out))
    print(_md(out))


if __name__ == "__main__":
    main()
