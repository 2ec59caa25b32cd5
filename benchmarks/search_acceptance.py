"""``slimcnn search`` acceptance runs: budgets re-checked on the final model and on held-out data.

(a) digits: ``slimcnn:lenet5`` trained on the built-in ``digits`` (300 steps, lr 0.05), then
    ``search --max-drop 1 --macs 0.5x --latency 0.8x --runtime onnxruntime --finetune-steps 40``.
    The accuracy drop is re-measured on the digits validation split (360 images) and compared with
    the binomial standard deviation of top-1 there; MACs are recounted and latency re-measured on the
    final model side by side with the baseline (interleaved rounds, onnxruntime, 1 thread).
(b) FSRCNN ×3 (shared weights): search driven by Set5 with fine-tuning on the built-in ``photos``:
    ``--max-drop 0.2 --macs M --latency L --runtime onnxruntime --criterion C [--compensate mean]
    --finetune-steps N``; the drop is also measured on Set14 (held out), MACs recounted and latency
    re-measured on the final model side by side with the baseline.

Usage: ``python benchmarks/search_acceptance.py [--part digits|fsrcnn] [--sr-steps N] [--sr-macs 0.7x]
[--sr-latency 0.9x] [--sr-criterion taylor] [--no-sr-compensate]``
Writes ``benchmarks/results/search_acceptance.{json,md}`` (parts merge into the same files).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import tempfile
from pathlib import Path
from typing import Any

import torch

from slimcnn.cli import main as cli
from slimcnn.measure import measure_latency, profile
from slimcnn.models import load_model, save_model
from slimcnn.paths import shared_path
from slimcnn.tasks import make_task

OUT = Path(__file__).parent / "results"


def _search(args: list[str], out: Path) -> tuple[int, dict[str, Any]]:
    rc = cli(["search", *args, "--out", str(out)])
    return rc, json.loads((out / "result.json").read_text())


def _latency_pair(base: torch.nn.Module, final: torch.nn.Module, x: torch.Tensor, rounds: int = 5) -> dict[str, Any]:
    """Median-of-rounds onnxruntime latency, baseline and final interleaved (shared, noisy CPU)."""
    tb, tf = [], []
    for _ in range(rounds):
        tb.append(measure_latency(base, x, runtime="onnxruntime", threads=1, runs=50, warmup=5).median_ms)
        tf.append(measure_latency(final, x, runtime="onnxruntime", threads=1, runs=50, warmup=5).median_ms)
    b, f = statistics.median(tb), statistics.median(tf)
    return {"base_ms": b, "final_ms": f, "ratio": f / b, "rounds": rounds}


def part_digits(work: Path) -> dict[str, Any]:
    torch.manual_seed(0)
    loaded = load_model("slimcnn:lenet5")
    task = make_task("classification", "digits", info=loaded.info)
    task.finetune(loaded.model, 300, lr=0.05, batch_size=64, progress=False)
    path = work / "lenet5.pt"
    save_model(loaded, path)
    out = work / "digits"
    opts = ["--max-drop", "1", "--macs", "0.5x", "--latency", "0.8x", "--runtime", "onnxruntime",
            "--finetune-steps", "40", "--round-to", "1"]  # the committed run's (the default with --latency: the block)
    rc, res = _search([f"file:{path}", "--task", "classification", "--data", "digits", *opts], out)
    final = load_model(f"file:{out / 'model.pt'}").model.eval()
    base = loaded.model.eval()
    b, a = task.evaluate(base), task.evaluate(final)
    p = b.value / 100.0
    std = 100.0 * math.sqrt(p * (1 - p) / b.n)
    x = task.example_input()
    macs_b, macs_a = profile(base, x).macs, profile(final, x).macs
    lat = _latency_pair(base, final, x)
    return {
        "part": "digits", "command": "slimcnn search file:lenet5.pt --task classification --data digits " + " ".join(opts),
        "rc": rc, "met_in_search": res["met"], "checks_in_search": res["checks"],
        "n_val": b.n, "top1_before": b.value, "top1_after": a.value, "drop": b.value - a.value,
        "binomial_std_points": std, "drop_ok_within_noise": (b.value - a.value) <= 1.0 + 2 * std,
        "drop_ok_strict": (b.value - a.value) <= 1.0,
        "macs_before": macs_b, "macs_after": macs_a, "macs_ratio": macs_a / macs_b, "macs_ok": macs_a <= 0.5 * macs_b,
        "latency": lat, "latency_ok": lat["ratio"] <= 0.8,
        "params_before": res["before"]["cost"]["params"], "params_after": res["after"]["cost"]["params"],
        "seconds": res["seconds"], "loadavg": os.getloadavg(),
    }


def per_image_drops(base: torch.nn.Module, final: torch.nn.Module, folder: Path, info: Any) -> list[float]:
    """PSNR drop of every image of ``folder`` on its own (for the noise margin of the mean drop)."""
    drops = []
    with tempfile.TemporaryDirectory() as tmp:
        for f in sorted(p for p in folder.iterdir() if p.is_file()):
            one = Path(tmp) / f.stem
            one.mkdir()
            (one / f.name).symlink_to(f.resolve())
            t = make_task("sr", "photos", info=info, scale=3, val_data=str(one))
            drops.append(t.evaluate(base).value - t.evaluate(final).value)
    return drops


def part_fsrcnn(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    set5, set14 = shared_path("sr", "Set5"), shared_path("sr", "Set14")
    if set5 is None or set14 is None:
        raise SystemExit("needs ../shared/data/sr/Set5 and Set14")
    torch.manual_seed(0)
    out = work / "fsrcnn"
    opts = ["--max-drop", "0.2", "--macs", args.sr_macs, "--finetune-steps", str(args.sr_steps),
            "--criterion", args.sr_criterion]
    if args.sr_latency:
        opts += ["--latency", args.sr_latency, "--runtime", "onnxruntime", "--round-to", "1"]  # the committed run's
    if args.sr_compensate:
        opts += ["--compensate", "mean"]
    if args.sr_amounts:
        opts += ["--amounts", args.sr_amounts]
    if args.sr_input:
        opts += ["--input", args.sr_input]
    if args.sr_limit is not None:
        opts += ["--limit", str(args.sr_limit)]
    rc, res = _search(["slimcnn:fsrcnn", "--scale", "3", "--task", "sr", "--data", "photos", "--val-data", str(set5),
                       *opts], out)
    loaded = load_model("slimcnn:fsrcnn", scale=3)
    final = load_model(f"file:{out / 'model.pt'}").model.eval()
    t14 = make_task("sr", "photos", info=loaded.info, scale=3, val_data=set14)
    t5 = make_task("sr", "photos", info=loaded.info, scale=3, val_data=set5)
    b5, a5 = t5.evaluate(loaded.model), t5.evaluate(final)
    b14, a14 = t14.evaluate(loaded.model), t14.evaluate(final)
    x = torch.randn(tuple(int(v) for v in args.sr_input.split("x"))) if args.sr_input else t5.example_input()
    lat = _latency_pair(loaded.model.eval(), final, x) if args.sr_latency else None
    d14 = per_image_drops(loaded.model.eval(), final, Path(set14), loaded.info)
    sem14 = statistics.stdev(d14) / math.sqrt(len(d14))
    return {
        "set14_per_image_drops": d14, "set14_drop_sem": sem14,
        "part": "fsrcnn", "macs_limit": args.sr_macs, "latency_limit": args.sr_latency, "latency": lat, "command": "slimcnn search slimcnn:fsrcnn --scale 3 --task sr --data photos "
        f"--val-data sr/Set5 {' '.join(opts)}", "rc": rc, "met_in_search": res["met"],
        "checks_in_search": res["checks"],
        "set5_before": b5.value, "set5_after": a5.value, "set5_drop": b5.value - a5.value,
        "set14_before": b14.value, "set14_after": a14.value, "set14_drop": b14.value - a14.value,
        "macs_before": profile(loaded.model, x).macs, "macs_after": profile(final, x).macs,
        "params_before": res["before"]["cost"]["params"], "params_after": res["after"]["cost"]["params"],
        "assignment": res["details"]["assignment"], "seconds": res["seconds"], "loadavg": os.getloadavg(),
        "tried": [{k: p[k] for k in ("metric", "drop", "macs", "feasible")}
                  for p in json.loads((out / "pareto.json").read_text())["points"]],
    }


def _markdown(rows: dict[str, Any]) -> str:
    lines = ["# `slimcnn search` acceptance", ""]
    d = rows.get("digits")
    if d:
        lat = d["latency"]
        lines += [
            "## (a) LeNet-5 on digits", "", f"`{d['command']}` (search exit code {d['rc']}, met={d['met_in_search']}).",
            "", "| quantity | before | after | limit | holds |", "|---|---|---|---|---|",
            f"| top-1 % (val, {d['n_val']} imgs) | {d['top1_before']:.2f} | {d['top1_after']:.2f} | drop ≤ 1.00 "
            f"(noise: binomial σ = {d['binomial_std_points']:.2f} pts) | drop {d['drop']:.2f}: "
            f"{'yes' if d['drop_ok_strict'] else ('within 2σ' if d['drop_ok_within_noise'] else 'NO')} |",
            f"| MACs | {d['macs_before']:,} | {d['macs_after']:,} | ≤ 0.5× | {d['macs_ratio']:.3f}× "
            f"{'yes' if d['macs_ok'] else 'NO'} |",
            f"| latency ms (onnxruntime, 1 thread, median of {lat['rounds']} interleaved rounds) | "
            f"{lat['base_ms']:.4f} | {lat['final_ms']:.4f} | ≤ 0.8× | {lat['ratio']:.3f}× "
            f"{'yes' if d['latency_ok'] else 'NO'} |",
            f"| params | {d['params_before']:,} | {d['params_after']:,} | | |", "",
            f"Search wall time {d['seconds']:.0f} s; load average {'/'.join(f'{x:.1f}' for x in d['loadavg'])}.", "",
        ]
    f = rows.get("fsrcnn")
    if f:
        lines += [
            "## (b) FSRCNN ×3 (shared weights), fine-tuned on built-in photos", "",
            f"`{f['command']}` (search exit code {f['rc']}, met={f['met_in_search']}).", "",
            "| quantity | before | after | drop / ratio |", "|---|---|---|---|",
            f"| PSNR Set5 (search data) dB | {f['set5_before']:.3f} | {f['set5_after']:.3f} | {f['set5_drop']:.3f} "
            "(limit 0.2) |",
            f"| PSNR Set14 (held out) dB | {f['set14_before']:.3f} | {f['set14_after']:.3f} | {f['set14_drop']:.3f}"
            + (f" (noise: ±{2 * f['set14_drop_sem']:.3f} = 2 standard errors of the per-image drops; limit 0.2 "
               f"{'holds' if f['set14_drop'] <= 0.2 + 2 * f['set14_drop_sem'] else 'does NOT hold'} within it)"
               if "set14_drop_sem" in f else "") + " |",
            f"| MACs | {f['macs_before']:,} | {f['macs_after']:,} | {f['macs_after'] / f['macs_before']:.3f}× "
            f"(limit {f.get('macs_limit', '0.7x')}) |",
            *([f"| latency ms (onnxruntime, 1 thread, median of {f['latency']['rounds']} interleaved rounds) | "
               f"{f['latency']['base_ms']:.4f} | {f['latency']['final_ms']:.4f} | {f['latency']['ratio']:.3f}× "
               f"(limit {f['latency_limit']}) |"] if f.get("latency") else []),
            f"| params | {f['params_before']:,} | {f['params_after']:,} | |", "",
            "Points the search measured (each fine-tuned): " + ", ".join(
                f"{p['macs'] / f['macs_before']:.2f}× MACs → drop {p['drop']:.3f} dB" for p in f.get("tried", [])) + ".", "",
            f"Assignment (group → fraction pruned): `{json.dumps(f['assignment'])}`. Search wall time "
            f"{f['seconds']:.0f} s; load average {'/'.join(f'{x:.1f}' for x in f['loadavg'])}.", "",
        ]
    lines += ["Regenerate: `python benchmarks/search_acceptance.py [--part digits|fsrcnn]`."]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", choices=("digits", "fsrcnn"), default=None)
    ap.add_argument("--sr-steps", type=int, default=100, help="fine-tuning steps per measured point (FSRCNN)")
    ap.add_argument("--sr-limit", type=int, default=None, help="Set5 images used while searching")
    ap.add_argument("--sr-macs", default="0.7x", help="FSRCNN MACs budget")
    ap.add_argument("--sr-latency", default="0.9x", help="FSRCNN ONNX Runtime latency budget ('' for none)")
    ap.add_argument("--sr-criterion", default="taylor",
                    help="FSRCNN channel criterion (weight norms pick its few high-variance channels: see README)")
    ap.add_argument("--sr-amounts", default="0.125,0.25,0.375,0.5,0.625,0.75",
                    help="fractions per group the sweep tries (finer steps on FSRCNN's 12-channel layers)")
    ap.add_argument("--sr-input", default="1x1x128x128",
                    help="FSRCNN input shape for MACs/latency (a 32x32 forward takes 0.6 ms, mostly overhead)")
    ap.add_argument("--no-sr-compensate", dest="sr_compensate", action="store_false", help="no mean compensation")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    OUT.mkdir(exist_ok=True)
    new: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        if args.part in (None, "digits"):
            new["digits"] = part_digits(Path(tmp))
            print(json.dumps(new["digits"], default=str))
        if args.part in (None, "fsrcnn"):
            new["fsrcnn"] = part_fsrcnn(Path(tmp), args)
            print(json.dumps(new["fsrcnn"], default=str))
    path = OUT / "search_acceptance.json"  # read late: parts may run concurrently
    rows: dict[str, Any] = (json.loads(path.read_text()) if path.exists() else {}) | new
    path.write_text(json.dumps(rows, indent=2, default=str))
    (OUT / "search_acceptance.md").write_text(_markdown(rows))


if __name__ == "__main__":
    main()
