"""``slimcnn quantize`` as one library function: load, (plan,) quantise, pack, decode, export, report."""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from slimcnn.errors import ConfigError
from slimcnn.quantize._format import save_packed
from slimcnn.quantize._model import KMeansQuantSpec, quantize_model
from slimcnn.quantize._read import load_packed
from slimcnn.search.budget import Amount, ConstraintCheck

log = logging.getLogger(__name__)
MIB = 2**20


@dataclass(frozen=True)
class QuantizeRunResult:
    """What ``slimcnn quantize`` wrote and measured (``result.json``)."""

    source: str
    out: str
    files: dict[str, str]
    weight_bytes: int
    """The headline, and what ``--weight-bytes`` is judged on: what ``model.slim`` stores of the parameters,
    every quantised layer's codebook, indices and keep mask + float32 bytes of every other parameter (biases,
    BN, layers no ``--bits`` rule matched); nothing counts as free."""
    payload_bytes: float
    """Σ bits x kept / 8 over the quantised weights + float32 bytes of every other parameter (no codebooks,
    no masks)."""
    paper_payload_bytes: float
    """Paper accounting (Tomè et al.): Σ bits x kept weights / 8 over the quantised layers only."""
    float_bytes: int
    """float32 bytes of the parameters left unquantised (part of ``payload_bytes``)."""
    file_bytes: int
    """Size of ``model.slim`` on disk (codebooks, masks, biases, BN statistics, header included)."""
    original_bytes: int
    """float32 bytes of every parameter of the input model."""
    compression_weights: float
    """``original_bytes / weight_bytes``; below 1 the stored weights are larger than the original."""
    compression_payload: float
    """``original_bytes / payload_bytes``; below 1 the payload is larger than the original."""
    compression_paper: float
    """``original_bytes / paper_payload_bytes`` (the paper's ratio; quantised layers only)."""
    compression_file: float
    """``original_bytes / file_bytes``; below 1 the file is LARGER than the original."""
    larger: bool
    """True when ``model.slim`` is not smaller than the original float32 parameters."""
    layers: list[dict[str, Any]]
    spec: dict[str, Any]
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None
    drop: float | None = None
    plan: dict[str, Any] | None = None
    finetune_losses: list[float] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    checks: list[dict[str, Any]] = field(default_factory=list)
    """The budget checks (``weight_bytes`` on the stored weights, ``max_drop``) measured on the written model."""
    met: bool | None = None
    """Whether every check holds (``None`` without a budget)."""


def size_ratio_text(original: float, new: float) -> str:
    """``"8.0x smaller"``, ``"1.6x LARGER"`` or ``"the same size"``: ``new`` against ``original``."""
    if new <= 0 or original <= 0:
        return "n/a"
    if abs(new - original) < 0.0005 * original:
        return "the same size"
    ratio = original / new if new < original else new / original
    text = f"{ratio:.2f}x" if ratio < 2 else f"{ratio:.1f}x"
    return f"{text} smaller" if new < original else f"{text} LARGER"


def format_bytes(n: float) -> str:
    """``512 B``, ``3.4 KiB``, ``216.94 MiB``."""
    if n < 1024:
        return f"{n:.0f} B"
    if n < MIB:
        return f"{n / 1024:.1f} KiB"
    return f"{n / MIB:.2f} MiB"


def larger_warning(res: QuantizeRunResult) -> str | None:
    """The one-line warning when ``model.slim`` is not smaller than the original float32 parameters."""
    if not res.larger:
        return None
    return (f"warning: model.slim ({format_bytes(res.file_bytes)}) is {size_ratio_text(res.original_bytes, res.file_bytes)} "
            f"than the original float32 parameters ({format_bytes(res.original_bytes)}): its codebooks, masks, "
            "float tensors and header outweigh what k-means saved; quantise more of the model or ship the float one")


def source_chain(source: str, hops: int = 8) -> list[str]:
    """The sources a ``file:`` model was made from, read from the sidecars (``model.json``) along the way."""
    from slimcnn.models import read_sidecar

    chain: list[str] = []
    while source.startswith("file:") and len(chain) < hops:
        side = read_sidecar(source.removeprefix("file:"))
        if side is None or not side[1] or side[1] in chain:
            break
        source = str(side[1])
        chain.append(source)
    return chain


def quantize_to_dir(
    source: str,
    out: str | Path,
    *,
    spec: KMeansQuantSpec | None,
    weights: str | None = None,
    huffman: bool = False,
    task: str | None = None,
    data: str | None = None,
    limit: int | None = None,
    finetune_steps: int = 0,
    weight_bytes: Amount | int | None = None,
    max_drop: Amount | float | None = None,
    onnx: bool = True,
    arch: str | None = None,
    scale: int | None = None,
    seed: int | None = None,
    force: bool = False,
    resume: bool = False,
) -> QuantizeRunResult:
    """Quantise the model at ``source`` and write ``model.slim``, ``model.pt``, ``model.onnx``, ``plan.json``,
    ``result.json`` (a :class:`~slimcnn.run.RunResult` whose ``details`` hold this function's result).

    With ``weight_bytes`` (absolute bytes or a ratio of the float32 parameter bytes) the SRAM planner
    chooses the per-layer settings (needs a task); ``spec`` then only provides method/per-channel/
    codebook options. The budget checks (``weight_bytes`` on the stored weights, ``max_drop`` on the
    metric) are measured on the model written; a budget that cannot be met still writes the closest
    model, with ``met: false``. ``arch`` is the architecture source of a ``file:`` state_dict
    (``--arch``); ``seed`` seeds a random-init model's weights. ``model.slim`` reloads as
    ``file:model.slim`` whatever the source (checked before returning). ``--out`` is a transaction
    (:class:`~slimcnn.run.RunDir`; ``force``/``resume`` as on the command line).

    Raises:
        ConfigError: inconsistent options (planner without data, fine-tuning without data...); ``data`` for a
            model that does not say its task, without ``task``.
    """
    from slimcnn.run import Manifest, RunDir

    if spec is None and weight_bytes is None:
        raise ConfigError("give --bits (e.g. 'conv1=9,conv*=8,fc*=1') or --weight-bytes with --data")
    if (weight_bytes is not None or finetune_steps > 0 or max_drop is not None) and data is None:
        raise ConfigError("--weight-bytes, --max-drop and --finetune-steps need --data")
    if task is not None and data is None:
        raise ConfigError(f"--task {task} needs --data to measure on")
    if finetune_steps < 0:
        raise ConfigError(f"--finetune-steps must be >= 0, got {finetune_steps}")
    if limit is not None and limit < 1:
        raise ConfigError(f"--limit must be >= 1, got {limit}")
    if force and resume:
        raise ConfigError("--force starts over and --resume continues: give one of them")
    budget = Amount(float(weight_bytes)) if isinstance(weight_bytes, (int, float)) else weight_bytes
    drop_limit = Amount(float(max_drop)) if isinstance(max_drop, (int, float)) else max_drop
    options = {"spec": dataclasses.asdict(spec) if spec is not None else None, "huffman": huffman, "task": task,
               "limit": limit, "finetune_steps": finetune_steps, "weight_bytes": str(budget) if budget else None,
               "max_drop": str(drop_limit) if drop_limit else None, "onnx": onnx, "arch": arch, "scale": scale,
               "seed": seed}
    inputs = (weights, source.removeprefix("file:") if source.startswith("file:") else None)
    manifest = Manifest.of("quantize", model=source, weights=weights, data={"data": data}, options=options)
    with RunDir(out, manifest, force=force, resume=resume, inputs=inputs, data=(data,)) as run:
        return _quantize(run, source, spec=spec, weights=weights, huffman=huffman, task=task, data=data, limit=limit,
                         finetune_steps=finetune_steps, budget=budget, drop_limit=drop_limit, onnx=onnx, arch=arch,
                         scale=scale, seed=seed, options=options)


def _quantize(run: Any, source: str, *, spec: KMeansQuantSpec | None, weights: str | None, huffman: bool,
              task: str | None, data: str | None, limit: int | None, finetune_steps: int, budget: Amount | None,
              drop_limit: Amount | None, onnx: bool, arch: str | None, scale: int | None, seed: int | None,
              options: dict[str, Any]) -> QuantizeRunResult:
    from slimcnn.measure import profile
    from slimcnn.models import load_model, save_model
    from slimcnn.prune import fingerprint
    from slimcnn.run import Measured, Plan, PlanStep, RunResult, environment, write_run
    from slimcnn.types import Cost

    outdir = run.path
    t: dict[str, float] = {}
    t0 = time.perf_counter()
    loaded = load_model(source, weights=weights, arch=arch, scale=scale, seed=seed)
    notes = list(loaded.info.notes)
    original_bytes = 4 * sum(p.numel() for p in loaded.model.parameters())
    the_task = None
    before = None
    if data is not None:
        from slimcnn.tasks import make_task, resolve_task

        task = resolve_task(task, loaded.info)
        the_task = make_task(task, data, info=loaded.info, scale=scale)
        before = the_task.evaluate(loaded.model, limit=limit)
    max_drop = None
    if drop_limit is not None and before is not None:
        max_drop = drop_limit.value * abs(before.value) if drop_limit.relative else drop_limit.value
    plan_dict = None
    if budget is not None:
        from slimcnn.quantize._planner import plan_memory

        base = spec or KMeansQuantSpec(bits=(("*", 8),))
        plan = plan_memory(loaded.model, the_task, weight_bytes=int(budget.limit(original_bytes)), max_drop=max_drop,
                           limit=limit, base_spec=base, best_effort=True)
        spec = plan.spec
        plan_dict = dataclasses.asdict(plan)
        plan_dict.pop("sweep")
        plan_dict["sweep"] = [dataclasses.asdict(o) for o in plan.sweep]
    if spec is None:  # unreachable: checked above; keeps the type checker honest
        raise ConfigError("no quantisation settings")
    t["load"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    result = quantize_model(loaded.model, spec)
    t["quantize"] = time.perf_counter() - t0
    losses: list[float] = []
    if finetune_steps > 0:
        from slimcnn.quantize._finetune import finetune_centroids_

        losses = finetune_centroids_(result, the_task, finetune_steps)
    t0 = time.perf_counter()
    slim = outdir / "model.slim"
    rebuild = tuple(c for c in (*source_chain(source), arch) if c)
    pack = save_packed(slim, result, source=loaded.source, info=loaded.info, huffman=huffman, rebuild_from=rebuild)
    t["pack"] = time.perf_counter() - t0
    # the decoded model written as model.pt is the in-memory quantised model (bit-identical to the .slim)
    decoded = dataclasses.replace(loaded, model=result.model.eval())
    save_model(decoded, outdir / "model.pt")
    files = {"slim": "model.slim", "pt": "model.pt"}
    t0 = time.perf_counter()
    check = load_packed(slim).model  # rebuilt as file:model.slim will be, whatever the source
    same = all(torch.equal(a, b) for a, b in zip(check.state_dict().values(), result.model.state_dict().values(), strict=True))
    if not same:  # pragma: no cover - an invariant; tests cover it
        raise RuntimeError("model.slim does not decode to the quantised model")
    t["verify"] = time.perf_counter() - t0
    x = the_task.example_input(1) if the_task is not None else torch.randn(*loaded.info.input_shape)
    if onnx:
        from slimcnn.run._measure import write_model_onnx

        if write_model_onnx(check.eval(), x, outdir / "model.onnx", any_size=loaded.info.task == "sr"):
            files["onnx"] = "model.onnx"
    after = the_task.evaluate(check, limit=limit) if the_task is not None else None  # the artifact, re-loaded
    drop = before.drop_to(after) if (before is not None and after is not None) else None
    per_pack = {lb.name: lb for lb in pack.layers}
    layers = []
    for rep in result.reports():
        row = dataclasses.asdict(rep)
        lb = per_pack.get(rep.name)
        if lb is not None:
            row.update(file_codebook_bytes=lb.codebook_bytes, file_index_bytes=lb.index_bytes,
                       file_mask_bytes=lb.mask_bytes, index_coding=lb.index_coding, mask_coding=lb.mask_coding)
        layers.append(row)
    checks = []
    if budget is not None:
        lim = budget.limit(original_bytes)
        checks.append(ConstraintCheck("weight_bytes", float(pack.weight_bytes), float(lim), pack.weight_bytes <= lim))
    if max_drop is not None and drop is not None:
        checks.append(ConstraintCheck("max_drop", float(drop), float(max_drop), drop <= max_drop + 1e-12))
    res = QuantizeRunResult(
        source=loaded.source,
        out=str(run.out),
        files={k: str(run.out / v) for k, v in files.items()},
        weight_bytes=pack.weight_bytes,
        payload_bytes=pack.payload_bytes,
        paper_payload_bytes=pack.paper_payload_bytes,
        float_bytes=result.float_bytes,
        file_bytes=pack.file_bytes,
        original_bytes=result.original_bytes,
        compression_weights=result.original_bytes / max(pack.weight_bytes, 1),
        compression_payload=result.original_bytes / max(pack.payload_bytes, 1e-9),
        compression_paper=result.original_bytes / max(pack.paper_payload_bytes, 1e-9),
        compression_file=result.original_bytes / pack.file_bytes,
        larger=pack.file_bytes >= result.original_bytes,
        layers=layers,
        spec=dataclasses.asdict(spec),
        before=dataclasses.asdict(before) if before is not None else None,
        after=dataclasses.asdict(after) if after is not None else None,
        drop=drop,
        plan=plan_dict,
        finetune_losses=losses,
        seconds=t,
        environment={"limit": limit, "data": data},
        notes=notes,
        checks=[dataclasses.asdict(c) for c in checks],
        met=all(c.met for c in checks) if checks else None,
    )
    # params and MACs as `analyze` counts the files: a compact input as it stores them, and the written .slim
    # without the all-zero kernels it leaves out (removed before k-means: a .slimk input's, or magnitude pruning's)
    from slimcnn.run._artifacts import compact_source, still_convs
    from slimcnn.search._stored import stored_input_cost, unstored_kernel_layers
    from slimcnn.search.families import kernel_sparse_cost

    promises = compact_source(loaded.source)
    cost_before = stored_input_cost(loaded.model, x, promises) if promises else profile(loaded.model, x)
    cost_after = profile(check, x)
    if convs := still_convs(check, unstored_kernel_layers(outdir, {"slim": pack})):
        params, macs, _ = kernel_sparse_cost(check, x, convs, cost_after)
        cost_after = dataclasses.replace(cost_after, params=params, macs=macs)
    run_result = RunResult(
        "quantize", loaded.source, task=task,
        before=Measured(before, Cost(cost_before.params, cost_before.macs, result.original_bytes,
                                                 cost_before.activation_bytes, tuple(x.shape))),
        after=Measured(after, Cost(cost_after.params, cost_after.macs, pack.weight_bytes,
                                               cost_after.activation_bytes, tuple(x.shape))),
        plan=Plan((PlanStep("kmeans", tuple(r["name"] for r in layers), dataclasses.asdict(spec)),), loaded.source,
                  fingerprint(loaded.model), tuple(x.shape), finetuned=finetune_steps > 0),
        checks=tuple(checks), met=res.met, options=options,
        details={k: v for k, v in dataclasses.asdict(res).items() if k not in ("checks", "met", "before", "after")},
        notes=tuple(notes), seconds=round(time.perf_counter() - run.started, 2), environment=environment(seed),
    )
    write_run(run, run_result)
    return res
