"""How long the CLI takes to answer before any work: help, version, a usage error, a report re-render.

Run: ``.venv/bin/python benchmarks/cli_startup.py [--repeats 5]`` (about a minute).
Writes ``benchmarks/results/cli_startup.{md,json}``.

Each case is a fresh ``python -m slimcnn ...`` process, timed wall-clock from start to exit, interleaved with the
others, median of ``--repeats``. ``command imports`` is a process that only imports what every command loads
before its work (``slimcnn.cli._COMMAND_IMPORTS``: torch, torchvision, ONNX Runtime, the graph and run rooms) and
what the CLI itself imports: before the command modules imported lazily, every case below paid that much.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def _seconds(argv: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, *argv], capture_output=True, check=False, timeout=300)
    return time.perf_counter() - t0


def main() -> None:
    """Time the cases interleaved and write the tables."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    from slimcnn.cli import _COMMAND_IMPORTS
    from slimcnn.measure import cpu_model

    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        made = subprocess.run([sys.executable, "-m", "slimcnn", "prune", "slimcnn:tiny_cnn", "--ratio", "0.5",
                               "--no-latency", "--out", str(run)], capture_output=True, text=True, check=False)
        if made.returncode != 0:
            raise SystemExit(f"could not make a run folder to re-render: {made.stderr[-300:]}")
        cases = {
            "slimcnn --version": ["-m", "slimcnn", "--version"],
            "slimcnn --help": ["-m", "slimcnn", "--help"],
            "slimcnn prune --help": ["-m", "slimcnn", "prune", "--help"],
            "usage error (prune --latnecy 0.5x)": ["-m", "slimcnn", "prune", "slimcnn:lenet5", "--latnecy", "0.5x",
                                                   "--out", str(Path(tmp) / "x")],
            "slimcnn report DIR": ["-m", "slimcnn", "report", str(run)],
            "command imports (paid by every case before)": [
                "-c", "import slimcnn.cli, " + ", ".join(_COMMAND_IMPORTS)],
        }
        load_before = os.getloadavg()[0]
        for argv in cases.values():  # warm the file cache
            _seconds(argv)
        times: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(args.repeats):
            for name, argv in cases.items():
                times[name].append(_seconds(argv))
    base = times["command imports (paid by every case before)"]
    rows = [{"case": name, "seconds": statistics.median(ts),
             "over_command_imports": statistics.median(a / b for a, b in zip(ts, base, strict=True))}
            for name, ts in times.items()]
    meta = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "cpu": cpu_model(),
            "logical_cpus": os.cpu_count(), "python": platform.python_version(), "repeats": args.repeats,
            "load_before_after": [load_before, os.getloadavg()[0]]}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "cli_startup.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    text = "\n".join([
        "# CLI startup: seconds to answer before any work",
        "",
        f"Machine: {meta['cpu']}, {meta['logical_cpus']} logical CPUs, Python {meta['python']}; load average "
        f"before/after {load_before:.1f}/{meta['load_before_after'][1]:.1f}. {meta['date']}. Each case a fresh "
        f"process, wall clock, interleaved, median of {args.repeats}; the ratio is the median per-repeat ratio to "
        "`command imports`, what every case paid before the command modules imported lazily.",
        "",
        "| case | seconds | × command imports |",
        "|---|---:|---:|",
        *(f"| {r['case']} | {r['seconds']:.2f} | {r['over_command_imports']:.2f}× |" for r in rows),
        "",
    ])
    (RESULTS / "cli_startup.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
