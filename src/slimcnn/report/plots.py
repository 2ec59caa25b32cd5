"""Sensitivity curves and Pareto plots (matplotlib, Agg backend, written atomically)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from slimcnn._io import atomic_write


def _figure() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_sensitivity(table: Any, path: str | Path, *, max_curves: int = 40) -> Path:
    """Drop vs amount per knob (curves), or a heatmap when there are many knobs."""
    plt = _figure()
    knobs = table.knobs()
    fig, ax = plt.subplots(figsize=(9, 5.5))
    if len(knobs) <= max_curves:
        for k in knobs:
            pts = table.curve(k)
            ax.plot([p.amount for p in pts], [p.drop for p in pts], marker="o", label=k)
        ax.set_xlabel("amount")
        ax.set_ylabel(f"{table.metric} drop")
        if len(knobs) <= 12:
            ax.legend(fontsize=7)
    else:
        amounts = sorted({p.amount for p in table.points})
        grid = [[next((p.drop for p in table.curve(k) if p.amount == a), float("nan")) for a in amounts] for k in knobs]
        im = ax.imshow(grid, aspect="auto", cmap="magma_r")
        ax.set_xticks(range(len(amounts)), [f"{a:g}" for a in amounts])
        ax.set_yticks(range(len(knobs)), knobs, fontsize=5)
        fig.colorbar(im, ax=ax, label=f"{table.metric} drop")
    ax.set_title(f"sensitivity ({table.metric}, baseline {table.baseline:.4g})")
    fig.tight_layout()
    return _save(fig, plt, path)


def plot_pareto(points: Sequence[dict[str, Any]], path: str | Path, *, x: str, metric: str,
                chosen: dict[str, Any] | None = None) -> Path:
    """Metric vs one cost for every point tried; the Pareto front joined, the chosen point circled."""
    plt = _figure()
    fig, ax = plt.subplots(figsize=(7, 5))
    xs = [p[x] for p in points]
    ys = [p["metric"] for p in points]
    ax.scatter(xs, ys, s=18, alpha=0.7, label="tried")
    front = sorted((p for p in points if p.get("pareto")), key=lambda p: p[x])
    if front:
        ax.plot([p[x] for p in front], [p["metric"] for p in front], "-", color="C1", label="Pareto front")
    if chosen is not None:
        ax.scatter([chosen[x]], [chosen["metric"]], s=140, facecolors="none", edgecolors="C3", label="chosen")
    ax.set_xlabel(x)
    ax.set_ylabel(metric)
    ax.legend()
    fig.tight_layout()
    return _save(fig, plt, path)


def _save(fig: Any, plt: Any, path: str | Path) -> Path:
    try:
        return atomic_write(path, lambda p: fig.savefig(p, dpi=110, format="png"))
    finally:
        plt.close(fig)
