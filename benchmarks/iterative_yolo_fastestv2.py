"""Pavlitska et al.'s iterative pruning end to end on Yolo-FastestV2 fine-tuned on raccoon.

``slimcnn:yolo_fastestv2`` (shared COCO weights, ``num_classes=1``: new class conv) is fine-tuned
``--pre-steps`` steps on the raccoon train split (160 images), then

    slimcnn search file:yolo.pt --task detection --data raccoon --metric map50 --strategy iterative
        --iterations K --finetune-steps N --runtime onnxruntime --max-drop 1

runs K rounds of: one-group-at-a-time sensitivity at 25/50/75 % (no fine-tuning) → the paper's
score Δcost·mAP^α (α = 20) → top groups for params and for FLOPs → prune their union → fine-tune.
The per-iteration table (params, MACs, onnxruntime latency, mAP@.5 on the 40 test images before and
after fine-tuning) comes from ``result.json``. ``--max-drop 1`` only satisfies the CLI's "give a
target" rule: the iterative strategy runs its fixed number of rounds.

Usage: ``python benchmarks/iterative_yolo_fastestv2.py [--pre-steps 30] [--iterations 2] [--steps 40] [--limit N] [--workers W]``
Writes ``benchmarks/results/iterative_yolo_fastestv2.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from slimcnn.cli import main as cli
from slimcnn.measure import compare_latency
from slimcnn.models import load_model, save_model
from slimcnn.paths import shared_path
from slimcnn.tasks import make_task

OUT = Path(__file__).parent / "results"


def run(pre_steps: int, iterations: int, steps: int, work: Path, limit: int | None, workers: int,
        round_to: int = 1) -> dict[str, Any]:
    data = shared_path("detection", "raccoon")
    if data is None:
        raise SystemExit("needs ../shared/data/detection/raccoon")
    torch.manual_seed(0)
    loaded = load_model("slimcnn:yolo_fastestv2", num_classes=1)
    task = make_task("detection", data, info=loaded.info, metric="map50")
    before_pre = task.evaluate(loaded.model)
    task.finetune(loaded.model, pre_steps, lr=1e-3, progress=False)
    path = work / "yolo.pt"
    save_model(loaded, path)
    out = work / "search"
    args = ["search", f"file:{path}", "--task", "detection", "--data", str(data), "--metric", "map50",
            "--strategy", "iterative", "--iterations", str(iterations), "--finetune-steps", str(steps),
            "--lr", "1e-3", "--runtime", "onnxruntime", "--max-drop", "1", "--workers", str(workers),
            "--round-to", str(round_to)]
    if limit is not None:
        args += ["--limit", str(limit)]
    args += ["--out", str(out)]
    rc = cli(args)
    res = json.loads((out / "result.json").read_text())
    b = res["before"]["cost"]
    rows = [{"iteration": 0, "params": b["params"], "macs": b["macs"],
             "latency_ms": b["latency"]["median_ms"] if b["latency"] else None, "latency_ratio": 1.0,
             "metric_before_ft": res["before"]["score"]["value"],
             "metric_after_ft": res["before"]["score"]["value"], "selected": []}]
    rows += res["details"]["strategy"]["iterations"]
    # each iteration was timed against the original in-search; time the start and the final model again here
    start, final = load_model(f"file:{path}").model.eval(), load_model(f"file:{out / 'model.pt'}").model.eval()
    lat = compare_latency({"start": start, "final": final}, task.example_input(), runtime="onnxruntime",
                          threads=torch.get_num_threads(), runs=100)
    return {
        "interleaved_latency_ms": {k: v.median_ms for k, v in lat.items()},
        "command": "slimcnn " + " ".join(a if not a.startswith(str(work)) else "…" for a in args[:-2]),
        "rc": rc, "pre_steps": pre_steps, "map50_coco_head_before_pre": before_pre.value,
        "final": {"metric": res["after"]["score"]["value"], "metrics": res["after"]["score"].get("metrics"),
                  "params": res["after"]["cost"]["params"], "macs": res["after"]["cost"]["macs"]},
        "rows": rows, "limit": limit, "workers": workers, "seconds": res["seconds"], "loadavg": os.getloadavg(), "threads": torch.get_num_threads(),
    }


def iteration_table(rows: list[dict[str, Any]]) -> list[str]:
    """The per-iteration table and the groups each iteration pruned (shared with iterative_yolov8n.py)."""
    lines = ["| iteration | groups pruned | params | MACs | latency ms | latency vs start | mAP@.5 before FT | mAP@.5 after FT |",
             "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        lat = f"{row['latency_ms']:.2f}" if row.get("latency_ms") is not None else "–"
        ratio = f"{row['latency_ratio']:.2f}×" if row.get("latency_ratio") is not None else "–"
        lines.append(f"| {row['iteration']} | {len(row['selected'])} | {row['params']:,} | {row['macs']:,} | {lat} | "
                     f"{ratio} | {row['metric_before_ft']:.3f} | {row['metric_after_ft']:.3f} |")
    lines += ["", "Selected groups (layer @ fraction pruned, reason):", ""]
    for row in rows[1:]:
        sel = ", ".join(f"`{s['layer']}`@{s['rate']:g} ({s['reason']})" for s in row["selected"])
        lines.append(f"- iteration {row['iteration']}: {sel}")
    return lines


def markdown(r: dict[str, Any]) -> str:
    lines = [
        "# Iterative pruning (Pavlitska et al.) on Yolo-FastestV2 / raccoon", "",
        f"`slimcnn:yolo_fastestv2` (shared COCO weights, `num_classes=1`), fine-tuned {r['pre_steps']} steps "
        "(batch 8, Adam 1e-3, cosine) on the raccoon train split (160 images), then:", "",
        f"`{r['command']}` (exit code {r['rc']})", "",
        "Sensitivity points are scored on the first "
        f"{r['limit'] or 40} test images ({r['workers']} worker processes); the table's mAP@.5 is on all 40 raccoon "
        "test images; latency = onnxruntime CPU median (load average "
        f"{'/'.join(f'{x:.1f}' for x in r['loadavg'])}). Iteration 0 = the fine-tuned start.", "",
    ]
    lines += iteration_table(r["rows"])
    il = r.get("interleaved_latency_ms")
    if il:
        lines += ["", f"Start vs final model timed side by side (`compare_latency`, onnxruntime, interleaved, 100 runs): "
                  f"{il['start']:.2f} ms → {il['final']:.2f} ms ({il['final'] / il['start']:.2f}×). Each iteration's "
                  "row was timed in the search interleaved with the start model (50 runs each), hence the ratio "
                  "column; absolute milliseconds differ between the two timings."]
    lines += ["", f"Search wall time {r['seconds']:.0f} s on {r['threads']} threads. "
              "Regenerate: `python benchmarks/iterative_yolo_fastestv2.py`."]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pre-steps", type=int, default=30)
    ap.add_argument("--iterations", type=int, default=2)
    ap.add_argument("--steps", type=int, default=40, help="fine-tuning steps per iteration")
    ap.add_argument("--limit", type=int, default=None, help="test images per sensitivity point (table: all 40)")
    ap.add_argument("--workers", type=int, default=1, help="sensitivity sweep worker processes")
    ap.add_argument("--round-to", type=int, default=1, help="kept widths rounded to a multiple of N")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        r = run(args.pre_steps, args.iterations, args.steps, Path(tmp), args.limit, args.workers, args.round_to)
    OUT.mkdir(exist_ok=True)
    (OUT / "iterative_yolo_fastestv2.json").write_text(json.dumps(r, indent=2, default=str))
    (OUT / "iterative_yolo_fastestv2.md").write_text(markdown(r))
    print(markdown(r))


if __name__ == "__main__":
    main()
