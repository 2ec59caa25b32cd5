"""Report figures (matplotlib, Agg backend, PNGs written atomically): Pareto, sensitivity, per layer."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from slimcnn._io import atomic_write

_LABEL = {"params": "params", "macs": "MACs", "weight_bytes": "weight bytes", "activation_bytes": "activation bytes",
          "latency_ms": "latency"}
_DPI = 100


def _figure() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _cost(p: Mapping[str, Any], key: str) -> float | None:
    v = p.get(key)
    if v is None and isinstance(p.get("costs"), Mapping):
        v = p["costs"].get(key)
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def plot_pareto(points: Sequence[Mapping[str, Any]], path: str | Path, *, x: str | Sequence[str], metric: str,
                chosen: Mapping[str, Any] | None = None, baseline: Mapping[str, float] | None = None,
                limits: Mapping[str, float] | None = None, max_drop: float | None = None) -> Path:
    """Metric drop vs cost for every point tried: one panel per cost in ``x``.

    With ``baseline`` (the ORIGINAL model's cost per key) the x axes are ratios (cost / original), the
    original is drawn at (1, 0), and ``limits`` (absolute limits per key) and ``max_drop`` (the allowed
    drop) become budget lines around the feasible corner. ``chosen`` (cost keys plus ``drop``) is starred.
    Points with a ``stage`` are coloured per stage; infeasible points are crosses; the Pareto front is joined.
    Without ``baseline`` the axes are absolute. The y axis is the drop (``drop``; else ``metric``).
    """
    plt = _figure()
    keys = [x] if isinstance(x, str) else list(x)
    use_drop = all("drop" in p for p in points) and (chosen is None or "drop" in chosen)
    ykey = "drop" if use_drop else "metric"
    fig, axes = plt.subplots(1, len(keys), figsize=(5.2 * len(keys) + 0.6, 4.4), squeeze=False)
    stages = sorted({int(p["stage"]) for p in points if isinstance(p.get("stage"), int)})
    for ax, key in zip(axes[0], keys, strict=True):
        base = (baseline or {}).get(key)
        scale = float(base) if base else None

        def xv(p: Mapping[str, Any], key: str = key, scale: float | None = scale) -> float | None:
            c = _cost(p, key)
            return None if c is None else (c / scale if scale else c)

        groups = [(f"stage {s + 1}", [p for p in points if p.get("stage") == s]) for s in stages] or [("tried", list(points))]
        for i, (label, pts) in enumerate(groups):
            for feasible, marker in ((True, "o"), (False, "x")):
                sel = [(xv(p), p.get(ykey)) for p in pts if bool(p.get("feasible", True)) == feasible]
                sel = [(a, b) for a, b in sel if a is not None and b is not None]
                if sel:
                    ax.scatter([a for a, _ in sel], [b for _, b in sel], s=22, marker=marker, color=f"C{i}", alpha=0.75,
                               label=f"{label}{'' if feasible else ' (infeasible)'}")
        for i, (_, pts) in enumerate(groups):  # each search's own front (a stage's front is against its input)
            front = sorted(((xv(p), p.get(ykey)) for p in pts if p.get("pareto")), key=lambda t: t[0] or 0.0)
            front = [(a, b) for a, b in front if a is not None and b is not None]
            if len(front) > 1:
                ax.plot([a for a, _ in front], [b for _, b in front], "-", color=f"C{i}" if stages else "0.35", lw=1,
                        label="Pareto front" if i == 0 else None)
        if scale and use_drop:
            ax.scatter([1.0], [0.0], s=70, marker="D", color="k", label="original", zorder=5)
        if chosen is not None:
            cx, cy = xv(chosen), chosen.get(ykey)
            if cx is not None and cy is not None:
                ax.scatter([cx], [cy], s=220, marker="*", color="gold", edgecolors="k", zorder=6, label="chosen (final)")
        lim = (limits or {}).get(key)
        lx = None if lim is None else (lim / scale if scale else lim)
        if lx is not None:
            ax.axvline(lx, color="C3", ls="--", lw=1.2, label=f"{_LABEL.get(key, key)} budget")
        if max_drop is not None and use_drop:
            ax.axhline(max_drop, color="C3", ls=":", lw=1.2, label="max drop")
        if lx is not None or (max_drop is not None and use_drop):  # shade the corner where the budget holds
            (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
            ax.fill_between([x0, min(lx, x1) if lx is not None else x1], y0,
                            min(max_drop, y1) if max_drop is not None and use_drop else y1, color="C2", alpha=0.07,
                            label="budget holds")
            ax.set_xlim(x0, x1)
            ax.set_ylim(y0, y1)
        ax.set_xlabel(f"{_LABEL.get(key, key)} / original" if scale else _LABEL.get(key, key))
        ax.set_ylabel(f"{metric} drop vs original (lower is better)" if use_drop else metric)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return _save(fig, plt, path)


def sensitivity_grid(table: Any) -> tuple[str, float | None, list[str], list[float], list[list[float]]]:
    """(metric, baseline, knobs, amounts, drop[knob][amount]) of a sweep: a ``SensitivityTable`` or its JSON dict."""
    if isinstance(table, Mapping):
        metric, baseline, points = str(table.get("metric", "metric")), table.get("baseline"), list(table.get("points", []))
        rows = [(str(p["knob"]), float(p["amount"]), p.get("drop")) for p in points]
    else:
        metric, baseline = str(table.metric), table.baseline
        rows = [(str(p.knob), float(p.amount), p.drop) for p in table.points]
    knobs = list(dict.fromkeys(k for k, _, _ in rows))
    amounts = sorted({a for _, a, _ in rows})
    cell = {(k, a): (float(d) if d is not None else math.nan) for k, a, d in rows}
    grid = [[cell.get((k, a), math.nan) for a in amounts] for k in knobs]
    return metric, (float(baseline) if baseline is not None else None), knobs, amounts, grid


def plot_sensitivity(table: Any, path: str | Path, *, max_curves: int = 0) -> Path:
    """Heatmap of the metric drop per knob (layer, rows) and amount (columns), values written in small grids.

    ``table`` is a ``SensitivityTable`` or its sensitivity.json dict. ``max_curves`` is kept for
    callers of the former curve plot and ignored.
    """
    plt = _figure()
    metric, baseline, knobs, amounts, grid = sensitivity_grid(table)
    h = min(max(2.4, 0.28 * len(knobs) + 1.6), 24.0)
    fig, ax = plt.subplots(figsize=(max(4.8, 0.9 * len(amounts) + 3.2), h))
    finite = [v for row in grid for v in row if not math.isnan(v)]
    vmax = max([abs(v) for v in finite] + [1e-9])
    im = ax.imshow(grid, aspect="auto", cmap="RdYlGn_r", vmin=-vmax, vmax=vmax, interpolation="nearest")
    ax.set_xticks(range(len(amounts)), [f"{a:g}" for a in amounts])
    ax.set_yticks(range(len(knobs)), knobs, fontsize=8 if len(knobs) <= 40 else 5)
    ax.set_xlabel("amount (fraction removed, rank or bits per method)")
    if len(knobs) * len(amounts) <= 240:
        for i, row in enumerate(grid):
            for j, v in enumerate(row):
                if not math.isnan(v):
                    ax.text(j, i, f"{v:.3g}", ha="center", va="center", fontsize=7)
    fig.colorbar(im, ax=ax, label=f"{metric} drop")
    base = f", baseline {baseline:.4g}" if baseline is not None else ""
    ax.set_title(f"sensitivity: {metric} drop per layer and amount{base}", fontsize=10)
    fig.tight_layout()
    return _save(fig, plt, path)


_KIND_LABEL = {"channels": "output channels", "kernels": "k×k kernels", "groups": "conv groups", "rank": "rank",
               "bits": "bits per weight"}


def plot_layers(rows: Sequence[Any], path: str | Path) -> Path:
    """Per-layer before (grey; hatched where only a lower bound is known) and after (blue) bars, one panel per kind.

    ``rows`` are :class:`~slimcnn.report._data.LayerRow` (``layer``, ``kind``, ``before``, ``after``, ``at_least``).
    """
    plt = _figure()
    from matplotlib.ticker import MaxNLocator

    kinds = list(dict.fromkeys(r.kind for r in rows))
    heights = [min(max(1.6, 0.24 * sum(r.kind == k for r in rows) + 1.2), 18.0) for k in kinds]
    fig, axes = plt.subplots(len(kinds), 1, figsize=(8.5, sum(heights)), squeeze=False,
                             gridspec_kw={"height_ratios": heights})
    for ax, kind in zip(axes[:, 0], kinds, strict=True):
        sel = [r for r in rows if r.kind == kind]
        ys = list(range(len(sel)))[::-1]
        for y, r in zip(ys, sel, strict=True):
            if r.before is not None:
                ax.barh(y, r.before, color="0.82", height=0.8, label="original" if y == ys[0] else None)
            elif r.at_least is not None:
                ax.barh(y, r.at_least, color="none", edgecolor="0.6", hatch="///", height=0.8,
                        label="original (at least)" if y == ys[0] else None)
        ax.barh(ys, [r.after for r in sel], color="C0", height=0.5, label="after")
        ax.set_yticks(ys, [r.layer for r in sel], fontsize=8 if len(sel) <= 40 else 5)
        ax.set_xlabel(_KIND_LABEL.get(kind, kind))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(axis="x", alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return _save(fig, plt, path)


def plot_layer_latency(rows: Sequence[tuple[str, float | None, float | None]], path: str | Path, *,
                       runtime: str = "") -> Path:
    """Per-layer latency before/after (ms), paired horizontal bars."""
    plt = _figure()
    fig, ax = plt.subplots(figsize=(8.5, min(max(2.2, 0.32 * len(rows) + 1.2), 18.0)))
    ys = list(range(len(rows)))[::-1]
    ax.barh([y + 0.2 for y in ys], [b or 0.0 for _, b, _ in rows], height=0.4, color="0.7", label="before")
    ax.barh([y - 0.2 for y in ys], [a or 0.0 for _, _, a in rows], height=0.4, color="C0", label="after")
    ax.set_yticks(ys, [n for n, _, _ in rows], fontsize=8 if len(rows) <= 40 else 5)
    ax.set_xlabel(f"ms per layer, timed alone{f' ({runtime})' if runtime else ''}")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, plt, path)


def _save(fig: Any, plt: Any, path: str | Path) -> Path:
    try:
        return atomic_write(path, lambda p: fig.savefig(p, dpi=_DPI, format="png", metadata={"Software": None}))
    finally:
        plt.close(fig)
