"""``render_report``: report.md and a self-contained report.html from a run folder alone."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import Collection
from pathlib import Path
from typing import Any

from slimcnn._io import write_json, write_text
from slimcnn.report import _sections as sec
from slimcnn.report._data import (
    COST_KEYS,
    COST_LABELS,
    REPORT_FILES,
    RunData,
    cost_value,
    layer_latencies,
    layer_rows,
    list_files,
    load_run,
    point_cost,
    score_drop,
)
from slimcnn.report._doc import Block, Document, Figure, Section, Table, to_html, to_markdown
from slimcnn.report.tables import fmt_threads

log = logging.getLogger(__name__)

FIGURES = ("layers.png", "layer_latency.png", "pareto.png", "sensitivity.png")
"""The figures a report may write beside itself (pareto/sensitivity re-drawn from their JSON)."""


def render_report(run_dir: str | Path, *, result: Any = None, transient: Collection[str] = ()) -> tuple[Path, Path]:
    """Write ``run_dir/report.md`` and ``run_dir/report.html`` (plots embedded) from the run folder alone.

    Reads result.json (or ``result``: a :class:`~slimcnn.run.RunResult` or its dict, for a run whose
    result.json is not written yet), plan steps, pareto.json and sensitivity.json; draws layers.png,
    layer_latency.png, pareto.png (ratio axes, budget lines, the original and the chosen model) and
    sensitivity.png (heatmap) where the run has their data. Every file is written atomically. When
    re-rendering a finished run (``result`` not given), the entries of the figures in result.json's
    ``artifacts`` are updated, so its sizes and sha256 stay true.

    Args:
        run_dir: The ``--out`` folder of a slimcnn run.
        result: The run's result held in memory (``write_run`` passes it before writing result.json).
        transient: Paths (relative to ``run_dir``) of resumable state the run drops when it commits: not listed.

    Returns:
        The paths of report.md and report.html.

    Raises:
        ConfigError: ``run_dir`` is not a folder or holds no (valid) result.json and no ``result`` was given.
    """
    as_dict = result.to_dict() if hasattr(result, "to_dict") else result
    data = load_run(run_dir, as_dict)
    figures = _figure_sections(data)
    data = dataclasses.replace(data, files=tuple(f for f in list_files(data.folder) if f[0] not in transient))
    head, subtitle = sec.title(data)
    parts = [sec.targets(data), sec.before_after(data), sec.stages(data), *figures, sec.notes(data),
             sec.files(data), sec.environment(data)]
    doc = Document(head, subtitle, tuple(s for s in parts if s is not None))
    md = write_text(data.folder / "report.md", to_markdown(doc))
    page = write_text(data.folder / "report.html", to_html(doc))
    if as_dict is None:
        _refresh_artifacts(data.folder)
    return md, page


def _figure_sections(data: RunData) -> list[Section | None]:
    return [_layers(data), _latency(data), _pareto(data), _sensitivity(data)]


def _figure(data: RunData, name: str, draw: Any, caption: str) -> Figure:
    path = draw(data.folder / name)
    return Figure(name, Path(path).read_bytes(), caption)


def _layers(data: RunData) -> Section | None:
    from slimcnn.report.plots import plot_layers

    rows = layer_rows(data.result)
    if not rows:
        return None
    bound = any(r.before is None and r.at_least is not None for r in rows)
    caption = ("Per layer: the original (grey) and what the written model keeps (blue)"
               + ("; hatched: the run did not record the original, so the bar shows a lower bound (largest kept "
                  "index + 1)" if bound else "") + ".")
    table = Table(("layer", "what", "original", "after", "after / original"), tuple(
        (f"`{r.layer}`", r.kind + (f" ({r.note})" if r.note else ""),
         r.before if r.before is not None else (f"≥ {r.at_least:g}" if r.at_least is not None else None),
         r.after, None if not r.before else f"{r.after / r.before:.3g}x") for r in rows))
    return Section("Per layer", (_figure(data, "layers.png", lambda p: plot_layers(rows, p), caption), table))


def _latency(data: RunData) -> Section | None:
    from slimcnn.report.plots import plot_layer_latency

    rows = layer_latencies(data.result)
    if not rows:
        return None
    details = data.result.get("details") or {}
    runtime = " ".join(str(x) for x in (details.get("runtime"), fmt_threads(details["threads"])
                                        if details.get("threads") else None) if x)
    table = Table(("layer", "ms before", "ms after", "after / before"),
                  tuple((f"`{n}`", b, a, f"{a / b:.3g}x" if a is not None and b else None) for n, b, a in rows))
    fig = _figure(data, "layer_latency.png", lambda p: plot_layer_latency(rows, p, runtime=runtime),
                  "Per-layer latency, each layer timed alone" + (f" on {runtime}" if runtime else "") + ".")
    return Section("Per-layer latency", (fig, table))


def _pareto(data: RunData) -> Section | None:
    from slimcnn.report.plots import plot_pareto

    points = [p for p in ((data.pareto or {}).get("points") or []) if isinstance(p, dict)]
    if not points:
        return None
    r = data.result
    bs, as_ = (r.get("before") or {}).get("score"), (r.get("after") or {}).get("score")
    bc, ac = (r.get("before") or {}).get("cost"), (r.get("after") or {}).get("cost")
    checks = {str(c.get("name")): c for c in r.get("checks") or [] if isinstance(c, dict)}
    def measured(k: str) -> bool:
        return k in COST_KEYS and any(point_cost(p, k) is not None for p in points)

    wanted = [str((data.pareto or {}).get("objective") or ""), *checks]  # the objective and the budgeted costs
    have = [k for k in dict.fromkeys(wanted) if measured(k)] or [k for k in COST_KEYS if measured(k)]
    keys = [k for k in have if cost_value(bc, k)][:3] or have[:1]
    if not keys:
        return None
    baseline = {k: v for k in keys if (v := cost_value(bc, k))}
    limits = {k: float(checks[k]["limit"]) for k in keys if k in checks and checks[k].get("limit") is not None}
    max_drop = checks.get("max_drop", {}).get("limit")
    drop = checks["max_drop"]["value"] if "max_drop" in checks else score_drop(bs, as_)
    chosen = {k: cost_value(ac, k) for k in keys} | ({"drop": float(drop)} if drop is not None else {})
    metric = str((bs or {}).get("metric") or (data.sensitivity or {}).get("metric") or "metric")
    subset = _conditions(data)
    caption = (f"Every candidate the search measured ({len(points)} point{'s' if len(points) != 1 else ''}{'; drop' + subset if subset else ''}), against "
               + ", ".join(f"{COST_LABELS[k]} / original" for k in keys if k in baseline)
               + ". ◆ the original; ★ the chosen model, measured on the files written; dashed: cost budgets; dotted: "
               "the allowed drop; shaded: where the plotted budgets hold; crosses: candidates that break a budget.")
    fig = _figure(data, "pareto.png", lambda p: plot_pareto(points, p, x=keys, metric=metric, chosen=chosen,
                                                            baseline=baseline or None, limits=limits,
                                                            max_drop=None if max_drop is None else float(max_drop)),
                  caption)
    feasible = sum(bool(p.get("feasible", True)) for p in points)
    stages = {p["stage"] for p in points if "stage" in p}
    # a compress stage judges its points on the targets it owns and its share of the drop, not every budget
    within = f"{feasible} within their stage's targets" if stages else f"{feasible} within every budget"
    across = f" over {len(stages)} stages" if len(stages) > 1 else ""
    return Section("Search: Pareto front", (f"{len(points)} candidates measured{across}, {within}.", fig))


def _conditions(data: RunData) -> str:
    c = (data.sensitivity or {}).get("conditions") or {}
    if not c.get("dataset"):
        return ""
    sub = f", first {c['subset']} images" if c.get("subset") else ""
    return f" on {c['dataset']}{sub}"


def _sensitivity(data: RunData) -> Section | None:
    from slimcnn.report.plots import plot_sensitivity

    s = data.sensitivity
    if not s or not s.get("points"):
        return None
    base = f" (baseline {s['baseline']:.4g})" if isinstance(s.get("baseline"), (int, float)) else ""
    caption = (f"Sensitivity: the {s.get('metric', 'metric')} drop{base} when one layer alone gets one amount"
               f"{_conditions(data)}; red hurts, green is free.")
    blocks: list[Block] = [_figure(data, "sensitivity.png", lambda p: plot_sensitivity(s, p), caption)]
    return Section("Sensitivity", tuple(blocks))


def _refresh_artifacts(folder: Path) -> None:
    """Keep result.json's artifact entries true for the figures a re-render rewrote (atomically)."""
    f = folder / "result.json"
    res = json.loads(f.read_text())
    listed = {a.get("path"): a for a in res.get("artifacts") or [] if isinstance(a, dict)}
    if not listed:
        return
    changed = False
    for name in FIGURES:
        p = folder / name
        if not p.is_file():
            continue
        data = p.read_bytes()
        entry = {"path": name, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        if listed.get(name) != entry:
            listed[name] = entry
            changed = True
    if changed:
        res["artifacts"] = [listed[k] for k in sorted(listed)]
        write_json(f, res)
        log.info("updated the figures' sizes and sha256 in %s", f)


__all__ = ["FIGURES", "REPORT_FILES", "render_report"]
