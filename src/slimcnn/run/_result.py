"""``RunResult``: one result.json schema for every command, and ``write_run``, the only code that lays out ``--out``."""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slimcnn._io import to_json, write_json
from slimcnn.run._manifest import Manifest, sha256_file
from slimcnn.run._outdir import MANIFEST, RunDir
from slimcnn.run._plan import Plan
from slimcnn.search.budget import ConstraintCheck
from slimcnn.types import Cost, Score

RESULT_SCHEMA = 1


@dataclass(frozen=True)
class Measured:
    """A model's score and cost, and the conditions they were measured under (inside ``Cost``/``Score``)."""

    score: Score | None = None
    cost: Cost | None = None


@dataclass(frozen=True)
class Artifact:
    """A file of the run, relative to ``--out``."""

    path: str
    bytes: int
    sha256: str


@dataclass(frozen=True)
class RunResult:
    """What a run did and measured; written as ``result.json`` by :func:`write_run`.

    ``before``/``after`` are measured on the ORIGINAL model and on the model written to ``--out``.
    ``met`` is ``None`` when no budget was given, else whether every check holds.
    """

    command: str
    source: str
    task: str | None = None
    before: Measured = field(default_factory=Measured)
    after: Measured = field(default_factory=Measured)
    plan: Plan | None = None
    checks: tuple[ConstraintCheck, ...] = ()
    met: bool | None = None
    options: dict[str, Any] = field(default_factory=dict)
    """Every option of the command, as given (resolved defaults included)."""
    details: dict[str, Any] = field(default_factory=dict)
    """Command-specific facts (per-layer decisions, search path, latency comparison...)."""
    notes: tuple[str, ...] = ()
    seconds: float = 0.0
    environment: dict[str, Any] = field(default_factory=dict)
    artifacts: tuple[Artifact, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The result.json object (``_type``/``schema`` tagged, plan as its own dict)."""
        d = json.loads(to_json(dataclasses.replace(self, plan=None)))
        d["plan"] = self.plan.to_dict() if self.plan is not None else None
        return {"_type": "RunResult", "schema": RESULT_SCHEMA, **d}


def environment(seed: int | None = None) -> dict[str, Any]:
    """Versions, CPU, threads, load and seed: the conditions every number of a run carries."""
    import torch

    from slimcnn.measure._latency import cpu_model
    from slimcnn.version import __version__

    env: dict[str, Any] = {
        "slimcnn": __version__, "python": platform.python_version(), "torch": torch.__version__,
        "platform": platform.platform(), "cpu": cpu_model(), "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(), "argv": sys.argv[1:] if "pytest" not in sys.modules else None,
    }
    try:
        import onnxruntime

        env["onnxruntime"] = onnxruntime.__version__
    except ImportError:  # pragma: no cover - a dependency
        pass
    if hasattr(os, "getloadavg"):
        env["load_avg"] = [round(v, 2) for v in os.getloadavg()]
    if seed is not None:
        env["seed"] = seed
    return env


def write_run(out: RunDir | str | Path, result: RunResult, *, force: bool = False) -> Path:
    """Write ``plan.json`` and ``result.json`` (with every file's size and sha256) and commit ``--out``.

    ``out`` is the :class:`RunDir` the command wrote its model files into, or a folder path (a new
    transaction is then opened with the result's command and options; ``force`` replaces a run made
    with other options). Returns the committed ``--out`` path.
    """
    if not isinstance(out, RunDir):
        with RunDir(out, Manifest.of(result.command, model=result.source, options=result.options), force=force) as run:
            return write_run(run, result)
    import logging

    from slimcnn.report import REPORT_FILES, render_report

    run = out
    if result.plan is not None:
        result.plan.save(run.path / "plan.json")
    final = dataclasses.replace(result, notes=tuple(dict.fromkeys((*result.notes, *run.notes))),  # once each
                                environment=result.environment or environment())
    # report.md/.html (+ its figures) from the result in memory, before the files are listed: the figures
    # are artifacts; the report itself, like result.json, is a view of the run and is not listed.
    transient = {n for n, keep in run.state.items() if not keep}  # resumable state: dropped at commit
    try:
        render_report(run.path, result=final, transient=transient)
    except Exception as e:  # a derived view must never cost the run its model
        logging.getLogger(__name__).warning("report not rendered", exc_info=True)
        final = dataclasses.replace(final, notes=(*final.notes, f"report.md not rendered ({type(e).__name__}: {e}); "
                                                  f"run `slimcnn report {run.out}` to retry"))
    files = sorted(p for p in run.path.rglob("*")
                   if p.is_file() and p.name not in (MANIFEST, "result.json", *REPORT_FILES)
                   and p.relative_to(run.path).as_posix() not in transient and not p.name.startswith("."))
    artifacts = tuple(Artifact(p.relative_to(run.path).as_posix(), p.stat().st_size, sha256_file(p)) for p in files)
    final = dataclasses.replace(final, artifacts=artifacts)
    write_json(run.path / "result.json", final.to_dict())
    return run.commit()


def read_result(path: str | Path) -> dict[str, Any]:
    """A result.json as a dict (``path`` may be the run folder)."""
    p = Path(path)
    return dict(json.loads((p / "result.json" if p.is_dir() else p).read_text()))
