"""slimcnn's traced channel graph vs Torch-Pruning (issue 3 acceptance).

Run: ``.venv/bin/python benchmarks/graph_vs_torch_pruning.py [--models resnet50 ...] [--part coverage|equal|both]``.
Needs the benchmark-only extra: ``pip install 'slimcnn[bench]'`` (Torch-Pruning); slimcnn itself never
imports it. Writes/updates ``benchmarks/results/graph_vs_torch_pruning.{md,json}`` (entries are merged
by model, so the model list can be grown over several runs).

**Coverage** (``--part coverage``): every model is pruned, from the same random-weight copy, by
- slimcnn ``prune_model_(m, x, criterion="l1", prune_ratio=R)``;
- Torch-Pruning as a user would by default: ``MagnitudePruner(m, x, GroupMagnitudeImportance(p=1),
  pruning_ratio=R, ignored_layers=None).step()`` (``MagnitudePruner`` is ``BasePruner`` in 1.6);
- Torch-Pruning with the last layer protected by hand (``ignored_layers=[...]`` naming the final
  classifier/reconstruction conv or, for YOLO, the whole ``Detect`` head), i.e. what a user must know
  and write per model.
"Covered" means the call ran without error, the pruned model runs on the example input, every
output keeps its shape, MACs went down, and it exports to ONNX (ONNX Runtime parity checked).
MACs are ``slimcnn.measure.profile`` for all; latency is ``compare_latency`` of original, slimcnn,
TP and TP-protected, interleaved in one process.

**Equal MACs** (``--part equal``, resnet50 and mobilenet_v2 at 1x3x224x224): slimcnn
``macs=0.5`` (``round_to`` 1 and 8); Torch-Pruning (last layer protected, otherwise the classifier
loses classes; same ``round_to``) with its ``pruning_ratio`` bisected for the largest profile MACs
at or under the same 0.5x (within 0.003x of it): both tools meet the same budget; then ``--repeats`` ``compare_latency`` runs (ONNX Runtime CPU, 2
threads) of the original and the four pruned models, interleaved.

**Pruning speed** (``--part speed``, every model of the coverage table): wall time of one pruning call at
ratio 0.5 (L1) from a fresh copy of the model: slimcnn ``prune_model_`` (trace + score + select + slice +
the pruned model's shape check), slimcnn with the trace given (a sweep's trial: ``graph=``, the trace is
cached between trials), Torch-Pruning default and last-layer protected (dependency graph + prune step;
where TP raises, its time is the time to the error, marked). ``--speed-repeats`` rounds, the order of the
calls rotating per round, ``gc.collect()`` before each call, one warm-up round untimed; torch runs on
``--speed-threads`` intra-op threads (1 by default: on a shared, loaded machine two threads stall on each
other and the timings scatter by 10x; both libraries get the same).
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import platform
import statistics
import time
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from slimcnn.measure import compare_latency, cpu_model, export_onnx, package_versions, profile
from slimcnn.models import load_model
from slimcnn.prune import prune_model_

RESULTS = Path(__file__).resolve().parent / "results"
JSON_PATH = RESULTS / "graph_vs_torch_pruning.json"
MD_PATH = RESULTS / "graph_vs_torch_pruning.md"
RATIO = 0.5

# name -> (source, input shape, hand-protected layers: model -> modules)
Spec = tuple[str, tuple[int, ...], Callable[[nn.Module], list[nn.Module]]]


def _last_leaf(types: tuple[type, ...]) -> Callable[[nn.Module], list[nn.Module]]:
    def pick(m: nn.Module) -> list[nn.Module]:
        return [[x for x in m.modules() if isinstance(x, types)][-1]]

    return pick


LAST_LINEAR = _last_leaf((nn.Linear,))
LAST_CONV = _last_leaf((nn.Conv2d,))

MODELS: dict[str, Spec] = {
    "espcn": ("slimcnn:espcn", (1, 1, 32, 32), LAST_CONV),
    "squeezenet1_0": ("torchvision:squeezenet1_0", (1, 3, 224, 224), LAST_CONV),
    "shufflenet_v2_x1_0": ("torchvision:shufflenet_v2_x1_0", (1, 3, 224, 224), LAST_LINEAR),
    "mobilenet_v2": ("torchvision:mobilenet_v2", (1, 3, 224, 224), LAST_LINEAR),
    "resnet50": ("torchvision:resnet50", (1, 3, 224, 224), LAST_LINEAR),
    "yolov8n": ("ultralytics:yolov8n.yaml", (1, 3, 320, 320), lambda m: [m.model[-1]]),
    "resnet18": ("torchvision:resnet18", (1, 3, 224, 224), LAST_LINEAR),
    "mobilenet_v3_small": ("torchvision:mobilenet_v3_small", (1, 3, 224, 224), LAST_LINEAR),
    "efficientnet_b0": ("torchvision:efficientnet_b0", (1, 3, 224, 224), LAST_LINEAR),
    "densenet121": ("torchvision:densenet121", (1, 3, 224, 224), LAST_LINEAR),
    "regnet_x_400mf": ("torchvision:regnet_x_400mf", (1, 3, 224, 224), LAST_LINEAR),
    "googlenet": ("torchvision:googlenet", (1, 3, 224, 224), LAST_LINEAR),
}
DEFAULT_COVERAGE = ["espcn", "squeezenet1_0", "shufflenet_v2_x1_0", "mobilenet_v2", "resnet50", "yolov8n"]
EQUAL_MODELS = ["resnet50", "mobilenet_v2"]
ROUND_TO = (1, 8, 16)  # 16 = ONNX Runtime's channel block on AVX-512 (`--round-to auto` there)


def build(name: str) -> nn.Module:
    source = MODELS[name][0]
    if source.startswith("torchvision:"):
        import torchvision

        model = torchvision.models.get_model(source.split(":", 1)[1], weights=None)
    else:
        model = load_model(source).model
    torch.manual_seed(0)
    return model.eval()


def shapes(out: Any) -> Any:
    if isinstance(out, torch.Tensor):
        return list(out.shape)
    if isinstance(out, (list, tuple)):
        return [shapes(o) for o in out]
    if isinstance(out, dict):
        return {k: shapes(v) for k, v in out.items()}
    return None


def _err(e: BaseException) -> str:
    msg = f"{type(e).__name__}: {e}".replace("\n", " ").strip()
    return msg if len(msg) <= 300 else msg[:297] + "..."


def tp_prune(
    model: nn.Module,
    x: torch.Tensor,
    ratio: float,
    ignored: list[nn.Module] | None,
    round_to: int | None = None,
) -> None:
    import torch_pruning as tp

    pruner = tp.pruner.MagnitudePruner(
        model,
        x,
        importance=tp.importance.GroupMagnitudeImportance(p=1),
        pruning_ratio=ratio,
        ignored_layers=ignored,
        round_to=round_to,
    )
    pruner.step()


def attempt(
    name: str,
    model: nn.Module,
    x: torch.Tensor,
    fn: Callable[[], Any],
    ref_shapes: Any,
    macs0: int,
    tmp: Path,
) -> dict[str, Any]:
    """Run one pruning call and check the result; never raises."""
    row: dict[str, Any] = {"covered": False, "error": None}
    t0 = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fn()
    except Exception as e:  # noqa: BLE001 - the error is the result
        row.update(time_s=time.perf_counter() - t0, error=_err(e), stage="prune")
        row["traceback_tail"] = traceback.format_exc().strip().splitlines()[-4:]
        return row
    row["time_s"] = time.perf_counter() - t0
    try:
        with torch.no_grad():
            got = shapes(model.eval()(x))
    except Exception as e:  # noqa: BLE001
        row.update(error=_err(e), stage="forward")
        return row
    row["out_shapes"] = got
    try:
        cost = profile(model, x)
        row["macs"], row["params"] = cost.macs, cost.params
        row["macs_x"] = cost.macs / macs0
    except Exception as e:  # noqa: BLE001
        row.update(error=_err(e), stage="profile")
        return row
    if got != ref_shapes:
        row.update(error=f"output shape changed: {ref_shapes} -> {got}", stage="shape")
        return row
    if row["macs"] >= macs0:
        row.update(error="nothing pruned (MACs unchanged)", stage="macs")
        return row
    try:
        export_onnx(model, x, tmp / f"{name}.onnx")
    except Exception as e:  # noqa: BLE001
        row.update(error=_err(e), stage="onnx")
        return row
    row["covered"] = True
    return row


def lat_row(s: Any) -> dict[str, float]:
    return {"median_ms": s.median_ms, "p10_ms": s.p10_ms, "p90_ms": s.p90_ms, "n": s.n}


def coverage(name: str, runs: int, threads: int, tmp: Path) -> dict[str, Any]:
    _, shape, protect = MODELS[name]
    torch.manual_seed(0)
    x = torch.randn(*shape)
    base = build(name)
    with torch.no_grad():
        ref = shapes(base(x))
    macs0 = profile(base, x).macs
    entry: dict[str, Any] = {
        "input": list(shape),
        "macs_orig": macs0,
        "out_shapes": ref,
        "ratio": RATIO,
        "load_avg": os.getloadavg(),
    }
    models: dict[str, nn.Module] = {"original": base}

    m = copy.deepcopy(base)
    entry["slimcnn"] = attempt(
        name, m, x, lambda: prune_model_(m, x, criterion="l1", prune_ratio=RATIO), ref, macs0, tmp
    )
    if entry["slimcnn"]["covered"]:
        models["slimcnn"] = m
    m2 = copy.deepcopy(base)
    entry["tp"] = attempt(name, m2, x, lambda: tp_prune(m2, x, RATIO, None), ref, macs0, tmp)
    if "macs" in entry["tp"] and entry["tp"].get("stage") not in ("forward", "onnx"):
        try:
            export_onnx(m2, x, tmp / f"{name}_tpd.onnx")
            models["tp_default"] = m2  # timed even if the output shape changed (marked in the table)
        except Exception:  # noqa: BLE001
            pass
    m3 = copy.deepcopy(base)
    protected = protect(m3)
    entry["tp_protected_layers"] = [n for n, mod in m3.named_modules() if any(mod is p for p in protected)]
    entry["tp_protected"] = attempt(name, m3, x, lambda: tp_prune(m3, x, RATIO, protected), ref, macs0, tmp)
    if entry["tp_protected"]["covered"]:
        models["tp_protected"] = m3
    print(
        f"[{name}] slimcnn={entry['slimcnn'].get('error') or 'ok'} | tp={entry['tp'].get('error') or 'ok'}"
        f" | tp_protected={entry['tp_protected'].get('error') or 'ok'}",
        flush=True,
    )
    try:
        stats = compare_latency(models, x, threads=threads, runs=runs, warmup=5)
        entry["latency"] = {k: lat_row(v) for k, v in stats.items()}
    except Exception as e:  # noqa: BLE001
        entry["latency_error"] = _err(e)
    entry["load_avg_after"] = os.getloadavg()
    return entry


def tp_at_macs(
    name: str,
    base: nn.Module,
    x: torch.Tensor,
    budget: float,
    macs0: int,
    protect: Callable[[nn.Module], list[nn.Module]],
    round_to: int | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """Bisect Torch-Pruning's pruning_ratio for the largest profile MACs at or under ``budget`` (the
    fraction slimcnn was asked for), stopping within 0.003x of it: both tools meet the same budget.
    If no ratio tried meets it, the closest model found is returned."""
    lo, hi = 0.0, 0.9
    best: tuple[nn.Module, float, float] | None = None
    steps = []
    t_total = 0.0

    def better(frac: float) -> bool:
        if best is None:
            return True
        if (frac <= budget) != (best[2] <= budget):
            return frac <= budget
        return abs(frac - budget) < abs(best[2] - budget)

    for _ in range(16):
        r = (lo + hi) / 2
        m = copy.deepcopy(base)
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tp_prune(m, x, r, protect(m), round_to)
        t_total += time.perf_counter() - t0
        frac = profile(m, x).macs / macs0
        steps.append({"ratio": r, "macs_x": frac})
        if better(frac):
            best = (m, r, frac)
        if frac > budget:
            lo = r
        elif budget - frac <= 0.003:
            break
        else:
            hi = r
    assert best is not None
    m, r, frac = best
    return m, {"ratio": r, "macs_x": frac, "bisection": steps, "time_s_total": t_total}


def equal_macs(name: str, runs: int, threads: int, repeats: int) -> dict[str, Any]:
    _, shape, protect = MODELS[name]
    torch.manual_seed(0)
    x = torch.randn(*shape)
    base = build(name)
    c0 = profile(base, x)
    entry: dict[str, Any] = {
        "input": list(shape),
        "macs_orig": c0.macs,
        "params_orig": c0.params,
        "target_macs_x": 0.5,
        "load_avg": os.getloadavg(),
    }
    models: dict[str, nn.Module] = {"original": base}
    for rt in ROUND_TO:
        s = copy.deepcopy(base)
        t0 = time.perf_counter()
        out = prune_model_(s, x, criterion="l1", macs=0.5, round_to=rt)
        cs = profile(s, x)
        sk, tk = f"slimcnn_r{rt}", f"tp_protected_r{rt}"
        entry[sk] = {
            "time_s": time.perf_counter() - t0,
            "ratio": out.prune_ratio,
            "macs": cs.macs,
            "params": cs.params,
            "macs_x": cs.macs / c0.macs,
            "round_to": rt,
            "own_estimate_macs_x": out.macs_after / out.macs_before,
        }
        t, info = tp_at_macs(name, base, x, entry["target_macs_x"], c0.macs, protect, rt if rt > 1 else None)
        ct = profile(t, x)
        entry[tk] = {**info, "macs": ct.macs, "params": ct.params, "round_to": rt}
        models[sk], models[tk] = s, t
        print(
            f"[{name}] round_to={rt}: slimcnn {entry[sk]['macs_x']:.4f}x (ratio {out.prune_ratio:.3f}),"
            f" TP {info['macs_x']:.4f}x (ratio {info['ratio']:.3f})",
            flush=True,
        )
    rounds = []
    for i in range(repeats):
        stats = compare_latency(models, x, threads=threads, runs=runs, warmup=10)
        rounds.append({k: lat_row(v) for k, v in stats.items()})
        print(f"  round {i}: " + ", ".join(f"{k} {v.median_ms:.2f} ms" for k, v in stats.items()), flush=True)
    entry["latency_rounds"] = rounds
    entry["load_avg_after"] = os.getloadavg()
    return entry




def _timed(fn: Callable[[], Any]) -> tuple[float, str | None]:
    """Seconds one call takes after a full collection, and its error (None when it returned)."""
    gc.collect()
    t0 = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fn()
    except Exception as e:  # noqa: BLE001 - the error is part of the result
        return time.perf_counter() - t0, _err(e)
    return time.perf_counter() - t0, None


def speed(name: str, repeats: int) -> dict[str, Any]:
    """Median pruning time of slimcnn (fresh trace / trace given) and Torch-Pruning, interleaved."""
    from slimcnn.graph import trace

    _, shape, protect = MODELS[name]
    torch.manual_seed(0)
    x = torch.randn(*shape)
    base = build(name)
    graph = trace(copy.deepcopy(base), x)

    def slim() -> None:
        prune_model_(copy.deepcopy(base), x, criterion="l1", prune_ratio=RATIO)

    def slim_cached() -> None:
        prune_model_(copy.deepcopy(base), x, criterion="l1", prune_ratio=RATIO, graph=graph)

    def tp(protected: bool) -> Callable[[], None]:
        def run() -> None:
            m = copy.deepcopy(base)
            tp_prune(m, x, RATIO, protect(m) if protected else None)
        return run

    calls = {"slimcnn": slim, "slimcnn_cached_trace": slim_cached, "tp": tp(False), "tp_protected": tp(True)}
    keys = list(calls)
    times: dict[str, list[float]] = {k: [] for k in keys}
    errors: dict[str, str | None] = dict.fromkeys(keys)
    entry: dict[str, Any] = {"input": list(shape), "ratio": RATIO, "load_avg": os.getloadavg()}
    for k in keys:  # warm-up: first-call costs (allocator, oneDNN primitives) are no one's
        _timed(calls[k])
    for i in range(repeats):
        for k in keys[i % len(keys):] + keys[: i % len(keys)]:
            t, err = _timed(calls[k])
            times[k].append(t)
            errors[k] = errors[k] or err
    entry["times_s"] = times
    entry["median_s"] = {k: statistics.median(v) for k, v in times.items()}
    entry["errors"] = errors
    entry["load_avg_after"] = os.getloadavg()
    med = entry["median_s"]
    print(f"[{name}] " + ", ".join(f"{k} {v:.3f}s" for k, v in med.items()), flush=True)
    return entry


def env(threads: int) -> dict[str, Any]:
    return {
        "versions": package_versions(("slimcnn", "torch", "torchvision", "torch-pruning", "onnxruntime", "onnx", "ultralytics")),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "threads": threads,
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


# ---------------------------------------------------------------- report


def _m(v: float | None) -> str:
    return "–" if v is None else f"{v / 1e6:,.1f} M"


def _lat(lat: dict[str, Any] | None, key: str) -> str:
    if not lat or key not in lat:
        return "–"
    r = lat[key]
    return f"{r['median_ms']:.2f} ({r['p10_ms']:.2f}–{r['p90_ms']:.2f})"


def _cov(r: dict[str, Any]) -> str:
    if r.get("covered"):
        return "yes"
    return "no (" + (r.get("stage") or "?") + ")"


def coverage_table(data: dict[str, Any]) -> str:
    lines = [
        "| model | MACs orig | slimcnn covered? | TP covered? | TP error | TP + last layer protected by hand |"
        " prune time s (slimcnn / TP) | MACs after (slimcnn / TP / TP-prot.) |"
        " ORT ms median (p10–p90): original / slimcnn / TP / TP-prot. |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name in [n for n in MODELS if n in data]:
        e = data[name]
        s, t, p = e["slimcnn"], e["tp"], e["tp_protected"]
        terr = (t.get("error") or "").replace("|", "\\|")
        if not s["covered"]:
            terr += f" — slimcnn error: {(s.get('error') or '').replace('|', '/')}"
        prot = _cov(p) + f" (`{', '.join(e['tp_protected_layers'])}`)"
        if p.get("error"):
            prot += ": " + p["error"].replace("|", "\\|")[:160]
        times = f"{s.get('time_s', 0):.2f} / {t.get('time_s', 0):.2f}"
        macs = " / ".join(_m(r.get("macs")) for r in (s, t, p))
        lat = e.get("latency")
        lats = " / ".join(_lat(lat, k) for k in ("original", "slimcnn", "tp_default", "tp_protected"))
        if e.get("latency_error"):
            lats = "error: " + e["latency_error"][:120]
        lines.append(
            f"| {name} | {_m(e['macs_orig'])} | {_cov(s)} | {_cov(t)} | {terr or '–'} | {prot} |"
            f" {times} | {macs} | {lats} |"
        )
    return "\n".join(lines)


def equal_table(data: dict[str, Any]) -> str:
    lines = [
        "| model | round_to | MACs (slimcnn / TP-prot.) | params (slimcnn / TP-prot.) | ratio (slimcnn / TP) |"
        " ORT ms original | ORT ms slimcnn | ORT ms TP-prot. | slimcnn / TP per round | median |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in [n for n in EQUAL_MODELS if n in data]:
        e = data[name]
        rnds = e["latency_rounds"]
        for rt in ROUND_TO:
            sk, tk = f"slimcnn_r{rt}", f"tp_protected_r{rt}"
            if sk not in e:
                continue
            s, t = e[sk], e[tk]
            ratios = [r[sk]["median_ms"] / r[tk]["median_ms"] for r in rnds]
            lat = {k: " · ".join(_lat(r, k) for r in rnds) for k in ("original", sk, tk)}
            lines.append(
                f"| {name} | {rt} | {s['macs_x']:.4f}x / {t['macs_x']:.4f}x | {_m(s['params'])} / {_m(t['params'])} |"
                f" {s['ratio']:.3f} / {t['ratio']:.3f} | {lat['original']} | {lat[sk]} | {lat[tk]} |"
                f" {', '.join(f'{r:.3f}' for r in ratios)} | {statistics.median(ratios):.3f} |"
            )
    return "\n".join(lines)


def speed_table(data: dict[str, Any]) -> str:
    lines = [
        "| model | slimcnn s | slimcnn, trace given s | TP s | TP-prot. s | slimcnn / fastest TP that finished |",
        "|---|---|---|---|---|---|",
    ]
    for name in [n for n in MODELS if n in data]:
        e = data[name]
        med, err = e["median_s"], e["errors"]

        cell = {k: f"{med[k]:.3f}" + (" (raised)" if err.get(k) else "") for k in med}
        done = [med[k] for k in ("tp", "tp_protected") if not err.get(k)]
        ratio = f"{med['slimcnn'] / min(done):.2f}" if done else f"– (TP raised; {med['slimcnn'] / min(med['tp'], med['tp_protected']):.2f} of its time to the error)"
        lines.append(f"| {name} | {cell['slimcnn']} | {cell['slimcnn_cached_trace']} | {cell['tp']} |"
                     f" {cell['tp_protected']} | {ratio} |")
    return "\n".join(lines)


def summary(data: dict[str, Any]) -> list[str]:
    out = []
    cov = data.get("coverage", {})
    if cov:
        tp_ok = [n for n, e in cov.items() if e["tp"]["covered"]]
        s_ok = [n for n, e in cov.items() if e["slimcnn"]["covered"]]
        missed = [n for n in tp_ok if n not in s_ok]
        extra = [n for n in s_ok if n not in tp_ok]
        out.append(
            f"- slimcnn covers {len(s_ok)}/{len(cov)} models, Torch-Pruning (default) {len(tp_ok)}/{len(cov)}. "
            f"Covered by TP but not slimcnn: {', '.join(missed) or 'none'}. "
            f"Covered by slimcnn where default TP fails: {', '.join(extra) or 'none'}."
        )
    for name, e in data.get("equal_macs", {}).items():
        for rt in ROUND_TO:
            sk, tk = f"slimcnn_r{rt}", f"tp_protected_r{rt}"
            if sk not in e:
                continue
            ratios = [r[sk]["median_ms"] / r[tk]["median_ms"] for r in e["latency_rounds"]]
            orig = statistics.median(r["original"]["median_ms"] for r in e["latency_rounds"])
            sms = statistics.median(r[sk]["median_ms"] for r in e["latency_rounds"])
            out.append(
                f"- {name} at <= 0.5x MACs (slimcnn {e[sk]['macs_x']:.3f}x, TP {e[tk]['macs_x']:.3f}x), round_to={rt}: "
                "slimcnn/TP median-latency ratio per round "
                f"{', '.join(f'{r:.3f}' for r in ratios)} (median {statistics.median(ratios):.3f}; "
                f"<= 1 = slimcnn at least as fast); slimcnn vs original {sms / orig:.2f}x latency."
            )
    return out


def _load_line(label: str, entries: dict[str, Any]) -> str:
    """``label: model before/after, ...`` from the recorded 1-minute load averages."""
    return f"{label}: " + ", ".join(
        f"{n} {e['load_avg'][0]:.1f}/{e['load_avg_after'][0]:.1f}" for n, e in entries.items()) + "."


def render(data: dict[str, Any]) -> str:
    envs = data.get("env", {})
    parts = [
        "# slimcnn graph vs Torch-Pruning",
        "",
        "Generated by `benchmarks/graph_vs_torch_pruning.py`. Random weights (`weights=None`), L1 filter "
        "norm in both libraries, ONNX Runtime CPU. Latencies are medians with p10–p90 in ms, all "
        "models of a row timed interleaved in one process (`slimcnn.measure.compare_latency`).",
        "",
    ]
    for part, e in envs.items():
        v = e["versions"]
        parts.append(
            f"- `{part}` run: {e['date']}, CPU {e['cpu']} ({e['cpu_count']} cores, {e['threads']} "
            f"{'torch' if part == 'speed' else 'ORT'} threads), " + ", ".join(f"{k} {val}" for k, val in v.items())
        )
    parts += ["", "## Summary", "", *summary(data), ""]
    if data.get("coverage"):
        parts += [
            "## Coverage at pruning ratio 0.5",
            "",
            "Covered = pruned without error, runs, every output keeps its shape, MACs drop, exports to "
            "ONNX with ORT parity. TP = `MagnitudePruner(model, x, GroupMagnitudeImportance(p=1), "
            "pruning_ratio=0.5)` with nothing ignored (its default); TP-prot. = the same with "
            "`ignored_layers` naming the final layer (for YOLO the whole `Detect` head). The TP latency "
            "column is the default TP model even when its output shape changed.",
            "",
            coverage_table(data["coverage"]),
            "",
        ]
        parts += [_load_line("Load average (1 min) before/after each model", data["coverage"]), ""]
    if data.get("speed"):
        sp = envs.get("speed", {})
        parts += [
            "## Pruning speed (ratio 0.5, L1)",
            "",
            f"Median of {next(iter(data['speed'].values()))['repeats']} interleaved rounds (call order rotating, "
            f"`gc.collect()` before each call, one untimed warm-up round), torch on {sp.get('threads', '?')} "
            "intra-op thread(s), every call on a fresh copy of the model. slimcnn = `prune_model_` (trace, "
            "score, select, slice, and the check run of the pruned model unless the trace proves its shapes); trace given = the same with `graph=` "
            "(a sweep's trial: the trace is cached between trials). TP = Torch-Pruning default / last layer "
            "protected; `(raised)` = it failed, the time is its time to the error.",
            "",
            speed_table(data["speed"]),
            "",
            _load_line("Load average (1 min) before/after each model", data["speed"]),
            "",
        ]
    if data.get("equal_macs"):
        parts += [
            "## Equal MACs (0.5x) at 1x3x224x224",
            "",
            "slimcnn `prune_model_(m, x, criterion='l1', macs=0.5)` vs Torch-Pruning with the classifier "
            "protected and `pruning_ratio` bisected for the largest profile MACs at or under 0.5x (within 0.003x; "
            "the budget slimcnn was given), "
            "both with `round_to` 1 and 8. Each round (· separated) is one `compare_latency` run of all "
            "five models, interleaved.",
            "",
            equal_table(data["equal_macs"]),
            "",
        ]
        parts += [_load_line("Load average (1 min) before/after", data["equal_macs"]), ""]
    return "\n".join(parts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="*", default=None, help=f"coverage models (default {DEFAULT_COVERAGE})")
    ap.add_argument("--part", choices=["coverage", "equal", "speed", "both"], default="both")
    ap.add_argument("--speed-repeats", type=int, default=5, help="timed rounds per model, pruning speed")
    ap.add_argument("--speed-threads", type=int, default=1, help="torch intra-op threads, pruning speed")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=20, help="timed runs per model, coverage table")
    ap.add_argument("--equal-runs", type=int, default=60, help="timed runs per model, equal-MACs rounds")
    ap.add_argument("--repeats", type=int, default=2, help="compare_latency rounds, equal MACs")
    ap.add_argument(
        "--equal-models", nargs="*", default=None, help=f"equal-MACs models (default {EQUAL_MODELS})"
    )
    ap.add_argument("--fresh", action="store_true", help="do not merge with the existing JSON")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    data: dict[str, Any] = {}
    if JSON_PATH.exists() and not args.fresh:
        data = json.loads(JSON_PATH.read_text())
    data.setdefault("env", {})
    tmp = Path(os.environ.get("TMPDIR", "/tmp")) / "graph_vs_tp"
    tmp.mkdir(parents=True, exist_ok=True)
    RESULTS.mkdir(exist_ok=True)

    def save() -> None:
        JSON_PATH.write_text(json.dumps(data, indent=1, default=str) + "\n")
        MD_PATH.write_text(render(data))

    if args.part in ("coverage", "both"):
        data["env"]["coverage"] = env(args.threads)
        cov = data.setdefault("coverage", {})
        for name in args.models or DEFAULT_COVERAGE:
            cov[name] = coverage(name, args.runs, args.threads, tmp)
            save()
    if args.part == "speed":
        torch.set_num_threads(args.speed_threads)
        data["env"]["speed"] = env(args.speed_threads)
        sp = data.setdefault("speed", {})
        for name in args.models or [n for n in MODELS if n in data.get("coverage", {})] or DEFAULT_COVERAGE:
            sp[name] = {**speed(name, args.speed_repeats), "repeats": args.speed_repeats}
            save()
    if args.part in ("equal", "both"):
        data["env"]["equal_macs"] = env(args.threads)
        eq = data.setdefault("equal_macs", {})
        for name in args.equal_models or EQUAL_MODELS:
            eq[name] = equal_macs(name, args.equal_runs, args.threads, args.repeats)
            save()
    save()
    print(MD_PATH.read_text())


if __name__ == "__main__":
    main()
