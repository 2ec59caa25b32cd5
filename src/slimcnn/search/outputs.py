"""A search run's outputs: the chosen model, the Pareto points and plots, the plan and result.json."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from slimcnn._io import write_json


def write_search_run(run: Any, loaded: Any, task_obj: Any, budget: Any, spec: Any, example: Any, *, sweep: Path | None,
               progress: bool, options: dict[str, Any]) -> Any:
    """Search, write every output into ``run`` (a :class:`~slimcnn.run.RunDir`) and commit it.

    Writes model.pt (+ yolo.pt) and model.onnx of the chosen model (+ model.slimk after kernel removal, model.slim
    after k-means: the formats their weight bytes are counted in; a compressed input's format again), pareto.json, sensitivity.json (the sweep,
    when ``sweep`` names it), plan.json (the steps that rebuild the model from the original) and result.json;
    ``write_run`` renders the report and its plots (pareto.png, sensitivity.png) from them.
    Returns the :class:`~slimcnn.run.RunResult`.
    """
    from slimcnn.run import Measured, RunResult, environment, write_run
    from slimcnn.run._measure import original_shapes, save_model_files
    from slimcnn.search import search
    from slimcnn.search.plan import search_plan

    trials = run.state_file("search-trials.pt")  # finished trials: a killed run's re-run skips them
    res = search(loaded.model, task_obj, budget, spec, source=loaded.source, example_input=example,
                 resume=str(sweep) if sweep is not None else None, trials=str(trials), progress=progress)
    example = task_obj.example_input() if example is None else example
    written = save_model_files(loaded, res.model, example, run.path)
    details: dict[str, Any] = {"assignment": res.assignment, "strategy": res.strategy_log}
    # the byte budget of kernel removal and k-means is judged on their compact formats: write that file, as a
    # compressed input's format is written again (its zeros and codebooks were kept)
    from slimcnn.run._artifacts import still_convs, write_slim, write_slimk
    from slimcnn.search._stored import stored_form, write_as_input
    from slimcnn.search.families import pack

    kernels, bits, _, _ = stored_form(spec.promises)
    if spec.method == "kmeans" and res.assignment:
        bits = {k: int(v) for k, v in res.assignment.items()}
        details["slim"] = write_slim(run.path, loaded, pack(written, bits, spec.codebook), written)
    elif spec.method == "kernel" and not bits and (layers := still_convs(written, [
            *kernels, *(k for k, v in res.assignment.items() if v > 0)])):
        details["slimk"] = write_slimk(run.path, loaded, written, layers)
    else:
        details |= write_as_input(run.path, loaded, written, spec.promises)
    write_json(run.path / "pareto.json", {"objective": budget.objective, "points": res.tried})
    plan = search_plan(loaded.model, spec, res, example, source=loaded.source)
    details["layers"] = original_shapes(loaded.model, plan.steps)

    def side(d: dict[str, Any]) -> Measured:
        return Measured(d["score"], dataclasses.replace(d["cost"], layers=()))

    after, checks = side(res.after), tuple(res.checks)
    if written_bytes := [d["weight_bytes"] for k, d in details.items() if k in ("slim", "slimk")]:
        # the bytes of the file written (a .slim given with Huffman-coded indices is written so again; the
        # search's cost counts them at fixed width, a little more)
        after = dataclasses.replace(after, cost=dataclasses.replace(after.cost, weight_bytes=written_bytes[0]))
        checks = tuple(dataclasses.replace(c, value=float(written_bytes[0]), met=written_bytes[0] <= c.limit)
                       if c.name == "weight_bytes" else c for c in checks)
    result = RunResult(
        "search", loaded.source, task=task_obj.name if hasattr(task_obj, "name") else None,
        before=side(res.before), after=after, plan=plan, checks=checks,
        met=all(c.met for c in checks) if checks else res.met,
        options=options, details=details,
        seconds=round(res.seconds, 2), environment=environment(),
    )
    write_run(run, result)
    return result
