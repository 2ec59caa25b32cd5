"""``slimcnn demo``: the whole flow on a built-in model and built-in data."""

from __future__ import annotations

from pathlib import Path

import typer

from slimcnn.cli._app import app, emit_json, say


@app.command("demo")
def demo_cmd(
    out: Path = typer.Option(Path("demo-out"), "--out", help="Where the demo writes its results."),
    quick: bool = typer.Option(False, "--quick", help="Fewer training steps (a smoke test)."),
    as_json: bool = typer.Option(False, "--json", help="Print demo.json on stdout."),
) -> int:
    """Train LeNet-5 and ESPCN on built-in data, then `compress` each to its targets; print before/after."""
    from slimcnn.demo import run_demo

    report = run_demo(out, say=(lambda s: None) if as_json else say, quick=quick)
    if as_json:
        emit_json(report)
    return 0
