"""A compress run's outputs: the model (its .slim after k-means, .slimk after kernel removal), the plan, stages, result."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from slimcnn._io import write_json


def write_compress_run(run: Any, loaded: Any, res: Any, x: Any, *, options: dict[str, Any], task: str | None,
                       test_task: Any = None) -> Any:
    """Write model.pt/.onnx (+ model.slim or model.slimk), plan.json, pareto.json and result.json into ``run``
    and commit it.

    The after-score is the final model's, which ``model.pt`` re-loads to exactly; with a k-means stage
    ``model.slim`` is checked to decode to it bit-identically (``details.slim.decodes_to_model_pt``); after a
    kernel stage (no k-means or int8 after it) so is ``model.slimk`` (``details.slimk``).
    ``test_task`` adds before/after scores of the written model on held-out test data.
    Returns the :class:`~slimcnn.run.RunResult`.
    """
    from slimcnn.prune import fingerprint
    from slimcnn.run import Measured, Plan, PlanStep, RunResult, environment, write_run
    from slimcnn.run._measure import original_shapes, save_model_files

    details: dict[str, Any] = {
        "recipe": [s.name for s in res.recipe],
        "stages": [_stage_dict(s) for s in res.stages],
        "kmeans_bits": res.kmeans_bits,
        "search_seconds": round(res.seconds, 2),
    }
    if res.int8 is not None:
        written = _write_int8(run, loaded, res, x, details)
    else:
        written = save_model_files(loaded, res.model, x, run.path)
    if res.kmeans_bits:
        from slimcnn.run._artifacts import write_slim

        details["slim"] = write_slim(run.path, loaded, res.packed, written, huffman=res.huffman)
    elif res.kernel_layers and res.int8 is None:
        from slimcnn.run._artifacts import write_slimk

        details["slimk"] = write_slimk(run.path, loaded, written, res.kernel_layers)
    if test_task is not None:
        details["test"] = {"before": dataclasses.asdict(test_task.evaluate(loaded.model)),
                           "after": dataclasses.asdict(test_task.evaluate(written))}
    # A stage's search measures a point's drop against the stage's input, on its own images (--limit); the
    # report plots it against the original: the input's drop (on the whole validation set) plus the point's.
    # The point's score minus the original's would mix the two image sets.
    points = [dict(p, stage=i, stage_drop=p["drop"], drop=(res.stages[i - 1].drop if i else 0.0) + p["drop"])
              for i, s in enumerate(res.stages) for p in s.tried]
    write_json(run.path / "pareto.json", {"points": points})
    steps = tuple(PlanStep(s["transform"], tuple(s["layers"]), s["params"]) for st in res.stages for s in st.steps)
    plan = Plan(steps, loaded.source, fingerprint(loaded.model), tuple(x.shape),
                finetuned=bool(options.get("finetune_steps")))
    details.setdefault("layers", original_shapes(loaded.model, steps))
    result = RunResult(
        "compress", loaded.source, task=task, before=Measured(res.before["score"], res.before["cost"]),
        after=Measured(res.after["score"], res.after["cost"]), plan=plan, checks=tuple(res.checks), met=res.met,
        options=options, details=details, seconds=round(time.perf_counter() - run.started, 2), notes=res.notes,
        environment=environment(options.get("seed")))
    write_run(run, result)
    return result


def _write_int8(run: Any, loaded: Any, res: Any, x: Any, details: dict[str, Any]) -> Any:
    """``model.onnx`` = the int8 model judged (bytes checked identical), ``model.pt`` = the float model it quantised.

    Returns the int8 model re-loaded from ``model.onnx`` (ONNX Runtime), which test scores are measured on.
    """
    import hashlib

    from slimcnn.export._onnx import write_onnx
    from slimcnn.export._run import write_sidecar
    from slimcnn.models import load_model
    from slimcnn.run._measure import save_model_files

    save_model_files(loaded, res.float_model, x, run.path, onnx=False)
    path = write_onnx(run.path / "model.onnx", res.int8.data)
    write_sidecar(path, loaded)
    on_disk = path.read_bytes()
    details["int8"] = {
        **res.int8.details, "float_layers": res.int8.float_layers, "factors_on_original": res.int8_factors,
        "onnx_sha256": hashlib.sha256(on_disk).hexdigest(), "judged_is_written": on_disk == res.int8.data,
        "weight_bytes": res.int8.cost.weight_bytes,
        "files": "model.onnx: the int8 ONNX model every 'after' number is measured on (ONNX Runtime); model.pt: "
                 "the float model it quantised (plan.json replays both)",
    }
    return load_model(f"file:{path}").model


def _stage_dict(s: Any) -> dict[str, Any]:
    return {"name": s.name, "targets": s.targets, "score": dataclasses.asdict(s.score),
            "cost": dataclasses.asdict(s.cost), "drop": s.drop, "met": s.met, "assignment": s.assignment,
            "steps": len(s.steps), "points_tried": len(s.tried), "seconds": s.seconds, "recovered": s.recovered}
