"""``slimcnn report DIR``: re-render report.md and report.html of a run folder from its files alone."""

from __future__ import annotations

from pathlib import Path

import typer

from slimcnn.cli._app import app, emit_json, say


@app.command("report")
def report_cmd(
    folder: Path = typer.Argument(..., metavar="DIR", help="The --out folder of a slimcnn run (holds result.json)."),
    as_json: bool = typer.Option(False, "--json", help='Print {"markdown": PATH, "html": PATH} on stdout.'),
) -> int:
    """Write DIR/report.md and a self-contained DIR/report.html (plots embedded) from the run folder alone.

    Reads result.json, plan steps, pareto.json and sensitivity.json; re-draws the figures (per-layer
    widths/ranks/bits, per-layer latency, Pareto on ratio axes with budgets, sensitivity heatmap) beside
    them. Every file is replaced atomically; result.json's artifact entries of the figures are kept true.
    Every run writes its report already: this re-renders one (e.g. after an upgrade).
    """
    from slimcnn.report import render_report

    md, html = render_report(folder)
    if as_json:
        emit_json({"markdown": str(md), "html": str(html)})
    else:
        say(f"wrote {md} and {html}")
    return 0
