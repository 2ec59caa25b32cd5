"""``slimcnn compress`` against the best single method at the same budgets (issue 13, item 7).

Cases (each a ``compress --recipe auto`` run next to ``compress --recipe M`` for every single method M, a
one-stage run with the same recovery and measurement, all at the same budget; exit 2 = the method cannot
move one of the targets):

- ``a``: ``slimcnn:resnet56`` on CIFAR-10 JPEG, ``--max-drop 1 --macs 0.5x --weight-bytes 0.1x``
- ``b``: ``slimcnn:resnet56``, ``--max-drop 1 --latency 0.6x --weight-bytes 256KB`` (auto: prune, then int8)
- ``fsrcnn``: ``slimcnn:fsrcnn`` x3 (shared weights), ``--max-drop 0.2 --weight-bytes 0.25x --macs 0.8x``
- ``kd``: case ``a`` with ``--recovery plain`` next to ``--recovery kd`` at the same ``--steps``

ResNet-56 fine-tunes on ``train-subset-10k.tar`` and is judged on ``test-10k.tar`` (``--val-data``: the
drop against the original on all 10,000 test images; searches use the first ``--limit``); FSRCNN
fine-tunes on the built-in photos, is judged on Set5 and reported on Set14 (``--test-data``).

Usage: ``python benchmarks/compress_vs_single.py [--case a b fsrcnn kd] [--steps 20] [--limit 500]
[--device cpu]``. Writes ``benchmarks/results/compress_vs_single.{json,md}`` (cases merge into the files).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

from slimcnn.cli import main as cli
from slimcnn.paths import shared_path

RESULTS = Path(__file__).resolve().parent / "results"
SINGLES = ("prune", "kernel", "lowrank", "kmeans", "int8")


def _cases() -> dict[str, dict[str, Any]]:
    cifar = shared_path("cifar10-jpeg75")
    sr = shared_path("sr")
    resnet = {"model": "slimcnn:resnet56", "task": "classification",
              "data": str(cifar / "train-subset-10k.tar") if cifar else None,
              "val": str(cifar / "test-10k.tar") if cifar else None, "extra": []}
    return {
        "a": {**resnet, "budget": ["--max-drop", "1", "--macs", "0.5x", "--weight-bytes", "0.1x"]},
        "b": {**resnet, "budget": ["--max-drop", "1", "--latency", "0.6x", "--weight-bytes", "256KB"]},
        "fsrcnn": {"model": "slimcnn:fsrcnn", "task": "sr", "data": "photos", "val": str(sr / "Set5") if sr else None,
                   "test": str(sr / "Set14") if sr else None, "extra": ["--scale", "3"],
                   "budget": ["--max-drop", "0.2", "--weight-bytes", "0.25x", "--macs", "0.8x"]},
    }


def _run(argv: list[str], out: Path) -> dict[str, Any]:
    t0 = time.perf_counter()
    rc = cli([*argv, "--out", str(out), "--force"])
    row: dict[str, Any] = {"rc": rc, "seconds": round(time.perf_counter() - t0, 1), "command": "slimcnn " + " ".join(argv)}
    if rc == 2 or not (out / "result.json").is_file():
        row["error"] = "refused (exit 2): the method cannot take these targets"
        return row
    res = json.loads((out / "result.json").read_text())
    b, a = res["before"], res["after"]
    row |= {"met": res.get("met"), "checks": res.get("checks", []),
            "score_before": b["score"]["value"] if b.get("score") else None,
            "score_after": a["score"]["value"] if a.get("score") else None, "n": (a.get("score") or {}).get("n"),
            "macs_ratio": a["cost"]["macs"] / b["cost"]["macs"],
            "weight_bytes": a["cost"]["weight_bytes"], "weight_bytes_ratio": a["cost"]["weight_bytes"] / b["cost"]["weight_bytes"]}
    if row["score_before"] is not None and row["score_after"] is not None:
        row["drop"] = row["score_before"] - row["score_after"]
    lb, la = b["cost"].get("latency"), a["cost"].get("latency")
    if lb and la:
        row["latency_ratio"] = la["median_ms"] / lb["median_ms"]
    d = res.get("details", {})
    row["recipe"] = d.get("recipe")
    row["stages"] = [{k: s[k] for k in ("name", "drop", "met", "seconds")} for s in d.get("stages", [])]
    if "test" in d:
        row["test"] = {"before": d["test"]["before"]["value"], "after": d["test"]["after"]["value"]}
    return row


def run_case(name: str, case: dict[str, Any], args: argparse.Namespace, work: Path) -> dict[str, Any]:
    common = [case["model"], *case["extra"], "--task", case["task"], "--data", case["data"], "--val-data", case["val"]]
    tune = ["--finetune-steps", str(args.steps), "--limit", str(args.limit), "--device", args.device]
    if args.amounts:
        tune += ["--amounts", args.amounts]
    out: dict[str, Any] = {"budget": " ".join(case["budget"]), "steps": args.steps, "limit": args.limit}
    test = ["--test-data", case["test"]] if case.get("test") else []
    if name == "kd":
        for recovery in ("plain", "kd"):
            out[f"compress_{recovery}"] = _run(["compress", *common, *case["budget"], *tune, *test, "--recovery", recovery],
                                               work / f"{name}-{recovery}")
            print(json.dumps(out[f"compress_{recovery}"], default=str), flush=True)
        return out
    out["compress"] = _run(["compress", *common, *case["budget"], *tune, *test], work / f"{name}-compress")
    print(json.dumps(out["compress"], default=str), flush=True)
    singles: dict[str, Any] = {}
    for method in args.singles:  # one stage, same machinery and recovery: the single method at the same budget
        row = _run(["compress", *common, *case["budget"], *tune, *test, "--recipe", method], work / f"{name}-{method}")
        singles[method] = row
        print(method, json.dumps(row, default=str), flush=True)
    out["singles"] = singles
    return out


def _fmt(v: Any, spec: str = ".3f") -> str:
    return "–" if v is None else format(v, spec)


def _markdown(res: dict[str, Any]) -> str:
    lines = ["# compress vs the best single method at the same budgets", "",
             f"Machine: {res['machine']}; {res['load']}.", ""]
    for name, case in res["cases"].items():
        lines += [f"## case {name}: `{case['budget']}`", "",
                  f"Fine-tune steps per measured point: {case['steps']}; searches score the first {case['limit']} "
                  "validation images; every final number is on the whole validation set against the original.", "",
                  "| run | met | drop | MACs | weight bytes | latency (ORT) | stages | s |", "|---|---|---|---|---|---|---|---|"]
        rows = {k: v for k, v in case.items() if k.startswith("compress")}
        rows |= {f"single: {k}": v for k, v in case.get("singles", {}).items()}
        for label, r in rows.items():
            if "error" in r:
                lines.append(f"| {label} | cannot | – | – | – | – | {r['error']} | {r['seconds']} |")
                continue
            failed = [c["name"] for c in r.get("checks", []) if not c["met"]]
            met = "yes" if r.get("met") else f"no ({', '.join(failed)})"
            stages = ", ".join(f"{s['name']} {s['drop']:.2f}" for s in r.get("stages", [])) or "–"
            lines.append(f"| {label} | {met} | {_fmt(r.get('drop'), '.2f')} | {_fmt(r.get('macs_ratio'))}x | "
                         f"{r['weight_bytes']:,} B ({r['weight_bytes_ratio']:.3f}x) | {_fmt(r.get('latency_ratio'))}x | "
                         f"{stages} | {r['seconds']} |")
        for label, r in rows.items():
            if "test" in r:
                lines.append(f"\n{label}: on the test data {r['test']['before']:.3f} -> {r['test']['after']:.3f}.")
        if case.get("note"):
            lines.append(f"\nNote: {case['note']}.")
        lines.append("")
    lines += ["Regenerate: `python benchmarks/compress_vs_single.py --case a b fsrcnn kd --steps N`."]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--case", nargs="+", default=["a", "b", "fsrcnn", "kd"], choices=["a", "b", "fsrcnn", "kd"])
    ap.add_argument("--steps", type=int, default=20, help="fine-tune steps per measured point (a GPU run can use more)")
    ap.add_argument("--limit", type=int, default=500, help="validation images while searching")
    ap.add_argument("--amounts", default="0.25,0.5,0.75", help="structural sweep fractions")
    ap.add_argument("--singles", nargs="*", default=list(SINGLES), choices=list(SINGLES))
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    cases = _cases()
    cases["kd"] = cases["a"]
    path = RESULTS / "compress_vs_single.json"
    load0 = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.case:
            if cases[name]["data"] is None or cases[name]["val"] is None:
                raise SystemExit(f"case {name} needs ../shared/data (see its README)")
            row = run_case(name, cases[name], args, Path(tmp))
            res = json.loads(path.read_text()) if path.is_file() else {"cases": {}}  # other cases' runs merge
            res["cases"][name] = row
            res["machine"] = f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs"
            res["load"] = f"load average {load0[0]:.2f} at start, {os.getloadavg()[0]:.2f} at the end"
            path.write_text(json.dumps(res, indent=1, default=str) + "\n")
            (RESULTS / "compress_vs_single.md").write_text(_markdown(res))


if __name__ == "__main__":
    main()
