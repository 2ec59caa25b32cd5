"""The end every single-transform command shares (``prune``, ``apply``): write the model files, measure the
original against the written model, check the targets and commit the run."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

from slimcnn.cli._app import emit_json, say, say_wrote


def finish_run(run: Any, command: str, loaded: Any, new_model: Any, example: Any, steps: tuple[Any, ...], task_obj: Any,
               *, limit: int | None, latency: bool, options: dict[str, Any], details: dict[str, Any], seed: int | None,
               finetuned: bool, runtime: str = "onnxruntime", threads: int | None = None, compact: bool = False) -> Any:
    """Write the model files, measure original vs written model (latency on ``runtime``), and commit the run.

    ``compact``: also write the compact file the plan's steps call for (``model.slim`` after k-means,
    ``model.slimk`` after kernel removal; ``apply``), whose stored bytes are the written model's weight bytes. A
    compressed input (``file:model.slimk`` / ``.slim``) is counted as its file stores it, and the written model is
    stored in that format too (unless a step of the run writes another)."""

    from slimcnn.prune import fingerprint
    from slimcnn.run import Plan, RunResult, environment, write_run
    from slimcnn.run._artifacts import compact_source, still_convs, write_plan_artifact
    from slimcnn.run._measure import measure_pair, original_shapes, save_model_files
    from slimcnn.search._stored import stored_input_cost, unstored_kernel_layers, write_as_input
    from slimcnn.search.families import kernel_sparse_cost

    written = save_model_files(loaded, new_model, example, run.path)
    stored = write_plan_artifact(run.path, loaded, steps, written) if compact else {}
    # a compressed input (.slimk / .slim) is counted as its file stores it and, unless a step of the run wrote
    # another format, written in its format again (its codebooks re-packed as they are, without re-pruning)
    promises = compact_source(loaded.source)
    stored = stored or write_as_input(run.path, loaded, written, promises)
    details |= stored
    before, after = measure_pair(loaded.model, written, example, task=task_obj, limit=limit, latency=latency,
                                 runtime=runtime, threads=threads)
    if promises:
        c = stored_input_cost(loaded.model, example, promises)
        before = dataclasses.replace(before, cost=dataclasses.replace(before.cost, params=c.params, macs=c.macs,
                                                                      weight_bytes=c.weight_bytes))
    for artifact in stored.values():  # a byte budget is judged on the compact file, as in the run that made the plan
        after = dataclasses.replace(after, cost=dataclasses.replace(after.cost, weight_bytes=artifact["weight_bytes"]))
    # kernels the file does not store are gone, as compress and analyze count them
    if layers := still_convs(written, unstored_kernel_layers(run.path, stored)):
        params, macs, _ = kernel_sparse_cost(written, example, layers)
        after = dataclasses.replace(after, cost=dataclasses.replace(after.cost, params=params, macs=macs))
    checks = _checks(options, before.cost, after.cost)
    if "latency_target" in details and before.cost.latency is not None and after.cost.latency is not None:
        measured = after.cost.latency.median_ms / max(before.cost.latency.median_ms, 1e-12)
        predicted = details["latency_predicted_ratio"]
        details |= {"latency_measured_ratio": measured,
                    "latency_prediction_error": (predicted - measured) / measured,
                    "latency_prediction_held": abs(predicted - measured) <= 0.10 * measured,
                    "latency_target_met": next(c.met for c in checks if c.name == "latency_ms")}
    plan = Plan(steps, loaded.source, fingerprint(loaded.model), tuple(example.shape), finetuned=finetuned)
    details.setdefault("layers", original_shapes(loaded.model, steps))
    result = RunResult(command, loaded.source, seconds=round(time.perf_counter() - run.started, 2), task=getattr(task_obj, "name", None) if task_obj else None,
                       before=before, after=after, plan=plan, options=options, details=details,
                       checks=checks, met=all(c.met for c in checks) if checks else None,
                       environment=environment(seed))
    write_run(run, result)
    return result


def _checks(options: dict[str, Any], before: Any, after: Any) -> tuple[Any, ...]:
    """The targets given (``--latency``, ``--macs``, ``--params``) checked on the written model against the original,
    by the budget every command checks (``None`` ``met`` when only ``--ratio`` was given)."""
    from slimcnn.search.budget import Budget

    budget = Budget.from_options(macs=options.get("macs"), params=options.get("params"),
                                 latency=options.get("latency_target"))
    return tuple(budget.check(before, None, after, None))


def report_run(result: Any, out: Path, as_json: bool) -> None:
    """The run's summary and closing line (or result.json on stdout with ``--json``)."""
    from slimcnn.run import read_result
    from slimcnn.run._measure import summary_line

    if as_json:
        emit_json(read_result(out))
    else:
        say(f"{result.command} {result.source}: {summary_line(result.before, result.after)}")
        say_wrote(out)
