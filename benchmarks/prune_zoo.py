"""Zoo-wide pruning sweep (issue 3 acceptance): every model prunes at ``--ratio 0.5`` and ``--macs 0.5x``.

Run: ``nice -n 19 .venv/bin/python benchmarks/prune_zoo.py [--models tv:resnet18 det:... ...] [--missing]``.
Writes/updates ``benchmarks/results/prune_zoo.{md,json}``; entries are merged by model, so the sweep
can be resumed (``--missing`` runs only the cases not yet recorded) or extended.

Models (random weights, nothing downloaded):
- every CNN classifier of ``torchvision.models.list_models(module=torchvision.models)``: alexnet, vgg*,
  resnet*, resnext*, wide_resnet*, squeezenet*, densenet*, googlenet, inception_v3, mobilenet_v2/v3*,
  mnasnet*, shufflenet_v2*, efficientnet_b0..b7, efficientnet_v2_*, regnet_*, convnext_*. The vision
  transformers (vit_*, swin_*, maxvit_t) are skipped: slimcnn prunes conv channels and the issue
  lists CNNs only;
- the torchvision detectors fasterrcnn_mobilenet_v3_large_fpn, ssdlite320_mobilenet_v3_large,
  retinanet_resnet50_fpn and fcos_resnet50_fpn;
- ultralytics ``yolov8n.yaml`` and ``yolo11n.yaml``;
- every slimcnn zoo model (``slimcnn.models.ZOO``);
- 41 timm CNNs and conv-heavy hybrids of distinct block designs (``test_zoo.TIMM``: ghost, mixed-kernel, SK,
  split-attention, Res2Net, dual-path, CSP, HRNet, RepVGG, MobileOne, FastViT, EfficientViT, ...).

Models and inputs are built by ``tests/prune/test_zoo.py``'s ``_build`` (one place): 64x64 for
classifiers (80 for inception_v3), 128x128 for detectors and ultralytics, 96x96 for timm, the zoo entry's own
input shape otherwise. Each case (model x amount) runs in a fresh subprocess with a timeout, so a huge
model cannot take the sweep down, and does:
``prune_model_(m, x, criterion="l1", prune_ratio=0.5)`` or ``macs=0.5``, then checks that the pruned
model runs, every output keeps its shape (detectors: every dimension but the detection count, which
depends on the weights after NMS), MACs drop by ``slimcnn.measure.profile`` (and, for ``macs``, the
traced conv/linear MACs are <= 0.505x, as in the test), and ``slimcnn.measure.export_onnx`` runs
(with its ONNX Runtime parity check; detectors are exported with the image batch as one tensor, and
where the *unpruned* random-weight detector already fails parity, because tied scores let the runtimes keep
different boxes, the pruned export must run and its parity is recorded as not checkable).
Models that ``test_zoo.py`` lists in ``MACS_FLOOR`` (protected channels keep them above 0.5x) are
pruned with ``best_effort=True`` and must reach that documented floor instead.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
JSON_PATH = RESULTS / "prune_zoo.json"
MD_PATH = RESULTS / "prune_zoo.md"
MODES = ("ratio", "macs")
AMOUNT = 0.5
MACS_SLACK = 1.01  # same tolerance as test_zoo: traced MACs <= 0.5 * 1.01 of the original

sys.path.insert(0, str(ROOT / "tests" / "prune"))
import test_zoo  # noqa: E402  (the shared model builder, lists and MACs floors)

CNN_FAMILIES = re.compile(
    r"^(alexnet|vgg\d+(_bn)?|resnet\d+|resnext\d+_\w+|wide_resnet\d+_2|squeezenet1_[01]|densenet\d+|googlenet"
    r"|inception_v3|mobilenet_v2|mobilenet_v3_\w+|mnasnet\d_\d+|shufflenet_v2_x\d_\d|efficientnet_b[0-7]"
    r"|efficientnet_v2_[sml]|regnet_[xy]_\w+|convnext_\w+)$"
)
SKIPPED_FAMILIES = ("vit_", "swin_", "maxvit_")
# Run last, roughly by size, so that the bulk of the sweep is recorded first.
HEAVY = [
    "tv:densenet161", "tv:densenet201", "tv:resnet152", "tv:convnext_base", "tv:efficientnet_b5",
    "tv:efficientnet_v2_m", "tv:wide_resnet101_2", "tv:resnext101_64x4d", "tv:resnext101_32x8d",
    "tv:vgg11", "tv:vgg11_bn", "tv:vgg13", "tv:vgg13_bn", "tv:vgg16", "tv:vgg16_bn", "tv:vgg19", "tv:vgg19_bn",
    "tv:efficientnet_b6", "tv:efficientnet_v2_l", "tv:efficientnet_b7", "tv:convnext_large", "tv:regnet_x_16gf",
    "tv:regnet_y_16gf", "tv:regnet_x_32gf", "tv:regnet_y_32gf", "tv:regnet_y_128gf",
]


def tv_classifiers() -> tuple[list[str], list[str]]:
    """(CNN classifiers kept, names skipped) from torchvision's registry."""
    import torchvision

    kept, skipped = [], []
    for name in torchvision.models.list_models(module=torchvision.models):
        if CNN_FAMILIES.match(name):
            kept.append(name)
        elif name.startswith(SKIPPED_FAMILIES):
            skipped.append(name)
        else:
            raise SystemExit(f"torchvision model {name!r} is in no known family: add it to CNN_FAMILIES or skip it")
    return kept, skipped


def all_keys() -> list[str]:
    from slimcnn.models import ZOO

    keys = [f"tv:{n}" for n in tv_classifiers()[0]]
    keys += [f"det:{n}" for n in test_zoo.TV_DETECTORS]
    keys += [f"ultralytics:{n}" for n in test_zoo.ULTRA]
    keys += [f"slimcnn:{n}" for n in sorted(ZOO)]
    keys += [f"timm:{n}" for n in test_zoo.TIMM]
    light = [k for k in keys if k not in HEAVY]
    return light + [k for k in HEAVY if k in keys]


# ---------------------------------------------------------------- one case (child process)


def _err(e: BaseException) -> str:
    msg = f"{type(e).__name__}: {e}".replace("\n", " ").strip()
    return msg if len(msg) <= 400 else msg[:397] + "..."


def _cmp_shapes(key: str, shapes: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
    # after NMS the number of detections depends on the weights: compare every other dimension
    return [s[1:] for s in shapes] if key.startswith("det:") else shapes


def _export_detector(key: str, model: Any, x: Any, path: Path, row: dict[str, Any]) -> None:
    """Export a detector; ONNX Runtime parity is judged against the unpruned model's.

    With random weights a detector's scores can tie exactly (SSDLite: every score 1/91), and which of
    the tied boxes survive top-k/NMS is then up to the runtime, so parity can fail for the unpruned
    model already. Then the export must still run and the pruned model may diverge too; if the
    unpruned model has parity, the pruned one must have it as well.
    """
    import torch

    from slimcnn.measure import ExportError, export_onnx

    try:
        export_onnx(model, x, path)
        row["onnx_parity"] = "ok"
        return
    except ExportError as e:
        if "diverges" not in str(e):
            raise
        pruned_err = str(e)
    torch.manual_seed(0)
    base = test_zoo._build(key)[0]
    try:
        export_onnx(base, x, path.with_name("base.onnx"))
    except ExportError as e:
        if "diverges" not in str(e):
            raise
        export_onnx(model, x, path, check=False)
        row["onnx_parity"] = f"n/a: the unpruned model diverges too ({_err(e)})"
        return
    raise ExportError(f"the unpruned model has ONNX Runtime parity, the pruned one not: {pruned_err}")


def run_case(key: str, mode: str, tmp: Path) -> dict[str, Any]:
    """Build, prune, check and export one model at one amount; never raises."""
    import torch

    from slimcnn.measure import export_onnx, profile
    from slimcnn.prune import prune_model_

    row: dict[str, Any] = {"status": "fail", "stage": "build", "error": None}
    t_start = time.perf_counter()
    stage = "build"
    try:
        torch.manual_seed(0)
        model, x = test_zoo._build(key)
        row["input"] = [list(t.shape) for t in x] if isinstance(x, list) else list(x.shape)
        stage = "forward (original)"
        with torch.no_grad():
            before = test_zoo._shapes(model(x))
        c0 = profile(model, x)
        row.update(out_shapes=before, macs_before=c0.macs, params_before=c0.params)
        stage = "prune"
        kw: dict[str, Any] = {"prune_ratio": AMOUNT} if mode == "ratio" else {"macs": AMOUNT, "best_effort": True}
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = prune_model_(model, x, criterion="l1", **kw)  # in place: the original is not needed again
        row["prune_s"] = time.perf_counter() - t0
        row.update(prune_ratio_used=out.prune_ratio, traced_macs_x=out.macs_after / max(out.macs_before, 1))
        stage = "forward (pruned)"
        with torch.no_grad():
            after = test_zoo._shapes(model(x))
        row["out_shapes_after"] = after
        stage = "profile"
        c1 = profile(model, x)
        row.update(macs_after=c1.macs, params_after=c1.params, macs_x=c1.macs / max(c0.macs, 1),
                   params_x=c1.params / max(c0.params, 1))
        stage = "shape"
        if _cmp_shapes(key, after) != _cmp_shapes(key, before):
            raise AssertionError(f"output shapes changed: {before} -> {after}")
        stage = "macs"
        if not (c1.macs < c0.macs and out.macs_after < out.macs_before):
            raise AssertionError(f"MACs not reduced: profile {c0.macs} -> {c1.macs}, "
                                 f"traced {out.macs_before} -> {out.macs_after}")
        floor = test_zoo.macs_target(key) if mode == "macs" else AMOUNT
        if mode == "macs" and floor != AMOUNT:
            row["macs_floor"] = {"x": floor, "why": test_zoo.MACS_FLOOR[key][1]}
        if mode == "macs" and out.macs_after > floor * out.macs_before * MACS_SLACK:
            raise AssertionError(f"MACs target missed: traced {row['traced_macs_x']:.4f}x > {floor}x")
        stage = "onnx"
        xe = torch.stack(x) if isinstance(x, list) else x
        path = tmp / "m.onnx"
        t0 = time.perf_counter()
        if key.startswith("det:"):
            _export_detector(key, model, xe, path, row)
        else:
            export_onnx(model, xe, path)
        row["export_s"] = time.perf_counter() - t0
        row["onnx_mb"] = path.stat().st_size / 2**20
        row.update(status="ok", stage=None)
    except Exception as e:  # noqa: BLE001 - the error is the result
        row.update(stage=stage, error=_err(e))
        row["traceback_tail"] = traceback.format_exc().strip().splitlines()[-6:]
    row["total_s"] = time.perf_counter() - t_start
    row["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return row


# ---------------------------------------------------------------- sweep (parent process)


def run_isolated(key: str, mode: str, timeout: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="prune_zoo_") as d:
        out = Path(d) / "row.json"
        cmd = [sys.executable, __file__, "--one", key, "--mode", mode, "--out", str(out)]
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            return {"status": "timeout", "stage": "?", "error": f"no result within {timeout:.0f} s",
                    "total_s": time.perf_counter() - t0}
        if out.exists():
            return dict(json.loads(out.read_text()))
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"status": "fail", "stage": "process", "error": f"child exited with {proc.returncode}: {' | '.join(tail)}",
                "total_s": time.perf_counter() - t0}


def env() -> dict[str, Any]:
    import torch

    from slimcnn.measure import cpu_model, package_versions

    return {
        "versions": package_versions(("slimcnn", "torch", "torchvision", "onnx", "onnxruntime", "ultralytics", "timm")),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


# ---------------------------------------------------------------- report


def _group(key: str) -> str:
    return {"tv": "torchvision classifiers", "det": "torchvision detectors", "ultralytics": "ultralytics",
            "slimcnn": "slimcnn zoo", "timm": "timm"}[key.split(":", 1)[0]]


def _ok(r: dict[str, Any] | None) -> bool:
    return r is not None and r["status"] == "ok"


def _cell(r: dict[str, Any] | None) -> str:
    if r is None:
        return "– | – | – | – | –"
    if r["status"] == "ok":
        st = "ok"
    else:
        st = f"**{r['status']}** ({r.get('stage')})"
    mx = f"{r['macs_x']:.2f}x" if "macs_x" in r else "–"
    px = f"{r['params_x']:.2f}x" if "params_x" in r else "–"
    ps = f"{r['prune_s']:.1f}" if "prune_s" in r else "–"
    es = f"{r['export_s']:.1f}" if "export_s" in r else "–"
    return f"{st} | {mx} | {px} | {ps} | {es}"


def summary(cases: dict[str, Any]) -> list[str]:
    groups: dict[str, list[str]] = {}
    for key in cases:
        groups.setdefault(_group(key), []).append(key)

    def count(rows: list[dict[str, Any] | None]) -> str:
        return f"{sum(_ok(r) for r in rows)}/{len(rows)} pass"

    everything = [r for k in cases for r in cases[k].values()]
    floors = sorted({f"{k} ({r['macs_floor']['x']}x: {r['macs_floor']['why']})" for k in cases
                     for r in cases[k].values() if r.get("macs_floor")})
    out = [f"- **all cases: {count(everything)}** ({len(cases)} models x ratio 0.5 / macs 0.5x"
           + (f"; `--macs 0.5x` is out of reach, and pruned as far as possible, for {', '.join(floors)}" if floors else "")
           + ")."]
    for g, keys in groups.items():
        rows = [cases[k].get(m) for k in keys for m in MODES]
        per_mode = ", ".join(f"{m} {count([cases[k].get(m) for k in keys])}" for m in MODES)
        out.append(f"- {g}: {count(rows)} ({per_mode}).")
    return out


def render(data: dict[str, Any]) -> str:
    e = data.get("env", {})
    cases = data.get("cases", {})
    parts = [
        "# Pruning zoo sweep",
        "",
        "Generated by `benchmarks/prune_zoo.py`. Random weights, `prune_model_(m, x, criterion=\"l1\", "
        "prune_ratio=0.5)` and `macs=0.5`, one subprocess per case. A case passes when the pruned model "
        "runs, every output keeps its shape (detectors: all but the detection count), MACs drop "
        "(`slimcnn.measure.profile`; for `macs` the traced conv/linear MACs are <= 0.505x) and "
        "`slimcnn.measure.export_onnx` runs with its ONNX Runtime parity check. MACs x / params x are "
        "profile after / before. Inputs: 64x64 (inception_v3 80x80), detectors and ultralytics 128x128, "
        "timm 96x96, slimcnn zoo models their own input shape.",
        "",
    ]
    if e:
        parts.append(
            f"- last run: {e['date']}, CPU {e['cpu']} ({e['cpu_count']} cores, {e['torch_threads']} torch threads), "
            f"python {e['python']}, " + ", ".join(f"{k} {v}" for k, v in e["versions"].items())
        )
    if data.get("wall_s"):
        parts.append(f"- wall time of the last sweep: {data['wall_s'] / 60:.1f} min "
                     f"({data.get('last_run_cases', '?')} cases)")
    if data.get("skipped"):
        parts.append("- skipped (vision transformers, no conv channels to prune in their blocks): "
                     + ", ".join(data["skipped"]))
    parts += ["", "## Summary", "", *summary(cases), ""]
    fails = [(k, m, r) for k, rs in cases.items() for m, r in rs.items() if r["status"] not in ("ok",)]
    if fails:
        parts += ["## Failures", "", "| model | amount | status | stage | error |", "|---|---|---|---|---|"]
        for k, m, r in fails:
            err = (r.get("error") or "").replace("|", "\\|")
            parts.append(f"| {k} | {m} | {r['status']} | {r.get('stage')} | {err} |")
        parts.append("")
    empty = sorted({k for k, rs in cases.items() for r in rs.values()
                    if k.startswith("det:") and r.get("out_shapes") and all(0 in s for s in r["out_shapes"])})
    if empty:
        parts += ["Detectors with no detection above the score threshold on the random-weight input (the whole "
                  "network still runs; only the post-NMS outputs are empty, so their shape and ONNX parity checks "
                  "compare empty tensors): " + ", ".join(empty) + ".", ""]
    notes = [(k, m, r["onnx_parity"]) for k, rs in cases.items() for m, r in rs.items()
             if r.get("onnx_parity", "ok") != "ok"]
    if notes:
        parts += ["## ONNX Runtime parity not checkable", "",
                  "Detectors whose *unpruned* random-weight model already fails the parity check (tied scores, so "
                  "ONNX Runtime and torch keep different boxes after top-k/NMS); the export of the pruned model "
                  "runs and is counted as passing.", ""]
        parts += [f"- {k} {m}: {note}" for k, m, note in notes]
        parts.append("")
    parts += [
        "## All cases",
        "",
        "| model | MACs orig | params orig | ratio 0.5 | MACs x | params x | prune s | export s |"
        " macs 0.5x | MACs x | params x | prune s | export s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for k, rs in cases.items():
        first = rs.get("ratio") or rs.get("macs") or {}
        m0 = f"{first['macs_before'] / 1e6:,.1f} M" if "macs_before" in first else "–"
        p0 = f"{first['params_before'] / 1e6:,.2f} M" if "params_before" in first else "–"
        parts.append(f"| {k} | {m0} | {p0} | {_cell(rs.get('ratio'))} | {_cell(rs.get('macs'))} |")
    parts.append("")
    return "\n".join(parts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="*", default=None, help="keys such as tv:resnet18, det:NAME, "
                    "ultralytics:yolov8n.yaml, slimcnn:espcn (default: all)")
    ap.add_argument("--modes", nargs="*", choices=MODES, default=list(MODES))
    ap.add_argument("--missing", action="store_true", help="run only cases not yet in the JSON")
    ap.add_argument("--timeout", type=float, default=1200, help="seconds per case")
    ap.add_argument("--list", action="store_true", help="print the model keys and exit")
    ap.add_argument("--render", action="store_true", help="rewrite the .md from the JSON and exit")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.one:  # child: one case, result to --out
        with tempfile.TemporaryDirectory(prefix="prune_zoo_onnx_") as d:
            row = run_case(args.one, args.mode, Path(d))
        Path(args.out).write_text(json.dumps(row, default=str))
        return

    if args.render:
        MD_PATH.write_text(render(json.loads(JSON_PATH.read_text())))
        return
    keys = all_keys()
    if args.list:
        print("\n".join(keys))
        return
    if args.models:
        unknown = [k for k in args.models if k not in keys]
        if unknown:
            raise SystemExit(f"unknown model keys {unknown}; see --list")
        keys = [k for k in keys if k in args.models]
    data: dict[str, Any] = json.loads(JSON_PATH.read_text()) if JSON_PATH.exists() else {}
    data["skipped"] = tv_classifiers()[1]
    cases: dict[str, Any] = data.setdefault("cases", {})
    RESULTS.mkdir(exist_ok=True)

    def save() -> None:
        order = all_keys()
        data["cases"] = {k: cases[k] for k in sorted(cases, key=lambda k: order.index(k) if k in order else 1e9)}
        JSON_PATH.write_text(json.dumps(data, indent=1, default=str) + "\n")
        MD_PATH.write_text(render(data))

    t_sweep = time.perf_counter()
    n = 0
    todo = [(k, m) for k in keys for m in args.modes if not (args.missing and m in cases.get(k, {}))]
    for i, (key, mode) in enumerate(todo):
        row = run_isolated(key, mode, args.timeout)
        row["load_avg"] = os.getloadavg()[0]
        cases.setdefault(key, {})[mode] = row
        n += 1
        data["env"] = env()
        data["wall_s"], data["last_run_cases"] = time.perf_counter() - t_sweep, n
        save()
        extra = f"{row.get('macs_x', float('nan')):.2f}x MACs" if row["status"] == "ok" else row.get("error")
        print(f"[{i + 1}/{len(todo)}] {key} {mode}: {row['status']} ({row.get('total_s', 0):.0f} s) {extra}",
              flush=True)
    save()
    print("\n".join(summary(cases)))


if __name__ == "__main__":
    main()
