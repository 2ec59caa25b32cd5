"""What a report reads from a run folder, and the per-layer facts it derives from the plan (no models)."""

from __future__ import annotations

import fnmatch
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slimcnn.errors import ConfigError

COST_KEYS = ("params", "macs", "weight_bytes", "activation_bytes", "latency_ms")
COST_LABELS = {"params": "params", "macs": "MACs", "weight_bytes": "weight bytes",
               "activation_bytes": "activation bytes", "latency_ms": "latency"}
REPORT_FILES = ("report.md", "report.html")


@dataclass(frozen=True)
class RunData:
    """A run folder's JSON files, as dicts (``result`` is a result.json object)."""

    folder: Path
    result: dict[str, Any]
    pareto: dict[str, Any] | None = None
    sensitivity: dict[str, Any] | None = None
    files: tuple[tuple[str, int], ...] = ()
    """(path, bytes) of every file of the run but result.json, manifest.json and the report itself."""


def load_run(folder: str | Path, result: dict[str, Any] | None = None) -> RunData:
    """Read ``folder``; ``result`` (a result.json dict held in memory) replaces the folder's result.json.

    Raises:
        ConfigError: ``folder`` is not a folder, or holds no result.json (when ``result`` is not given).
    """
    path = Path(folder)
    if not path.is_dir():
        raise ConfigError(f"'{path}' is not a folder; pass the --out folder of a slimcnn run")
    if result is None:
        f = path / "result.json"
        if not f.is_file():
            raise ConfigError(f"'{path}' holds no result.json; pass the --out folder of a slimcnn run")
        try:
            result = dict(json.loads(f.read_text()))
        except (ValueError, UnicodeDecodeError) as e:
            raise ConfigError(f"'{f}' is not valid JSON ({e}); re-run the command that wrote it") from e
    return RunData(path, result, _json(path / "pareto.json"), _json(path / "sensitivity.json"), list_files(path))


def list_files(folder: Path) -> tuple[tuple[str, int], ...]:
    """(path, bytes) of the run's files, hidden ones, result.json, manifest.json and the report excluded."""
    skip = {"result.json", "manifest.json", *REPORT_FILES}
    return tuple((p.relative_to(folder).as_posix(), p.stat().st_size) for p in sorted(folder.rglob("*"))
                 if p.is_file() and p.name not in skip
                 and not any(s.startswith(".") for s in p.relative_to(folder).parts))


def _json(path: Path) -> dict[str, Any] | None:
    try:
        d = json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return d if isinstance(d, dict) else None


def cost_value(cost: dict[str, Any] | None, key: str) -> float | None:
    """One quantity of a Cost dict (``latency_ms`` is the latency's median), ``None`` when not measured."""
    if not cost:
        return None
    if key in ("latency_ms", "latency"):
        lat = cost.get("latency")
        return float(lat["median_ms"]) if isinstance(lat, dict) and lat.get("median_ms") is not None else None
    v = cost.get(key)
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def point_cost(point: dict[str, Any], key: str) -> float | None:
    """A tried point's cost (top level or under ``costs``)."""
    v = point.get(key)
    if v is None and isinstance(point.get("costs"), dict):
        v = point["costs"].get(key)
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def score_drop(before: dict[str, Any] | None, after: dict[str, Any] | None) -> float | None:
    """How much worse ``after`` is than ``before`` in the metric's unit (positive = worse)."""
    if not before or not after or before.get("value") is None or after.get("value") is None:
        return None
    d = float(before["value"]) - float(after["value"])
    return d if before.get("higher_is_better", True) else -d


# --- per-layer facts from the plan ---------------------------------------------------------------------


@dataclass
class LayerRow:
    """One layer's before/after under one transform (``before`` ``None``: the original is not recorded)."""

    layer: str
    kind: str
    """``channels``, ``kernels``, ``groups``, ``rank`` or ``bits``."""
    before: float | None
    after: float
    at_least: float | None = None
    """A lower bound of ``before`` when only that is known (e.g. the largest kept channel index + 1)."""
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def layer_rows(result: dict[str, Any]) -> list[LayerRow]:
    """Per-layer before/after of every plan step: kept widths, kept kernels, groups, ranks, bits.

    Original widths come from the before-cost's per-layer rows when the run kept them, else from
    ``details["layers"]`` rows with a ``shape``; otherwise only a lower bound is known (the largest
    kept index + 1). Steps that follow one another on one layer keep the first original and the last value.
    """
    plan = result.get("plan") or {}
    details = result.get("details") or {}
    shapes = _shapes(result)
    rows: dict[tuple[str, str], LayerRow] = {}

    def put(layer: str, kind: str, before: float | None, after: float, at_least: float | None = None,
            note: str = "") -> None:
        old = rows.get((layer, kind))
        if old is not None:  # a later step on the same layer: first original, last value
            old.after = after
            return
        rows[(layer, kind)] = LayerRow(layer, kind, before, after, at_least, note)

    for step in plan.get("steps") or []:
        t, params = step.get("transform"), step.get("params") or {}
        if t == "prune_channels":
            for layer, kept in (params.get("layers") or {}).items():
                width = _dim(shapes.get(layer), 0)
                put(layer, "channels", width, len(kept), None if width else (max(kept) + 1 if kept else None))
        elif t == "prune_kernels":
            for layer, kept in (params.get("kept") or {}).items():
                s = shapes.get(layer) or (kept.get("shape") if isinstance(kept, dict) else None)
                total = s[0] * s[1] if s and len(s) >= 2 else None
                count = int(kept["count"]) if isinstance(kept, dict) else len(kept)
                put(layer, "kernels", total, count, None if total else (max(kept) + 1 if kept else None))
        elif t == "group_kernels":
            for layer, g in (params.get("groups") or {}).items():
                put(layer, "groups", 1, int(g))
        elif t == "lowrank":
            for layer, how in (params.get("layers") or {}).items():
                s = shapes.get(layer)
                full = min(s[0], s[1]) if s and len(s) >= 2 else None
                put(layer, "rank", full, int(how.get("rank", 0)), note=str(how.get("method", "")))
        elif t == "kmeans":
            for layer, bits in _kmeans_bits(step, details).items():
                put(layer, "bits", 32, bits)
        elif t == "int8":  # ONNX Runtime int8: the step's layers at 8 bits, its float fallback at 32
            for layer in step.get("layers") or []:
                put(str(layer), "bits", 32, 8)
            for layer in params.get("float_layers") or []:
                put(str(layer), "bits", 32, 32, note="float fallback")
    return list(rows.values())


def _kmeans_bits(step: dict[str, Any], details: dict[str, Any]) -> dict[str, int]:
    recorded = {str(r["name"]): int(r["bits"]) for r in details.get("layers") or []
                if isinstance(r, dict) and "name" in r and isinstance(r.get("bits"), int)}
    layers = [str(x) for x in step.get("layers") or []]
    if recorded and set(layers) <= set(recorded):
        return {k: recorded[k] for k in layers}
    rules = [(str(p), int(b)) for p, b in (step.get("params") or {}).get("bits") or []]
    out: dict[str, int] = {}
    for layer in layers or [_unescape(p) for p, _ in rules]:
        for pattern, b in reversed(rules):  # the last matching rule wins, as in KMeansQuantSpec
            if fnmatch.fnmatchcase(layer, pattern):
                out[layer] = b
                break
    return out


def _unescape(pattern: str) -> str:
    for c in "*?[]":
        pattern = pattern.replace(f"[{c}]", c)
    return pattern


def _shapes(result: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """Weight shapes ``(out, in, ...)`` per layer where the run recorded them (details rows, cost layers)."""
    out: dict[str, tuple[int, ...]] = {}
    for r in (result.get("details") or {}).get("layers") or []:
        if isinstance(r, dict) and isinstance(r.get("shape"), list):
            name = r.get("layer", r.get("name"))
            if name is not None:
                out[str(name)] = tuple(int(v) for v in r["shape"])
    before = ((result.get("before") or {}).get("cost") or {}).get("layers") or []
    for r in before:
        if isinstance(r, dict) and r.get("output_shape") and str(r.get("name")) not in out:
            shp = r["output_shape"]
            if len(shp) >= 2:
                out[str(r["name"])] = (int(shp[1]),)
    return out


def _dim(shape: tuple[int, ...] | None, i: int) -> int | None:
    return shape[i] if shape and len(shape) > i else None


def layer_latencies(result: dict[str, Any]) -> list[tuple[str, float | None, float | None]]:
    """(layer, ms before, ms after) where the run timed layers (decompose rows, per-layer cost rows)."""
    rows = [(str(r.get("layer", r.get("name"))), _f(r.get("ms_before")), _f(r.get("ms_after")))
            for r in (result.get("details") or {}).get("layers") or []
            if isinstance(r, dict) and ("ms_before" in r or "ms_after" in r)]
    if rows:
        return rows
    def per_layer(side: str) -> dict[str, float]:
        layers = ((result.get(side) or {}).get("cost") or {}).get("layers") or []
        return {str(r["name"]): float(r["latency_ms"]) for r in layers
                if isinstance(r, dict) and r.get("latency_ms") is not None}
    b, a = per_layer("before"), per_layer("after")
    return [(k, b.get(k), a.get(k)) for k in dict.fromkeys([*b, *a])]


def _f(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None
