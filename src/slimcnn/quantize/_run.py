"""``slimcnn quantize`` as one library function: load, (plan,) quantise, pack, decode, export, report."""

from __future__ import annotations

import dataclasses
import logging
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from slimcnn._io import ensure_output_dir, write_json
from slimcnn.errors import ConfigError
from slimcnn.quantize._format import load_packed, save_packed
from slimcnn.quantize._model import KMeansQuantSpec, quantize_model

log = logging.getLogger(__name__)
MIB = 2**20


@dataclass(frozen=True)
class QuantizeRunResult:
    """What ``slimcnn quantize`` wrote and measured (``result.json``)."""

    source: str
    out: str
    files: dict[str, str]
    payload_bytes: float
    """Headline weight payload: Σ bits x kept / 8 over the quantised weights + float32 bytes of every
    other parameter (biases, BN, layers no ``--bits`` rule matched); nothing counts as free."""
    paper_payload_bytes: float
    """Paper accounting (Tomè et al.): Σ bits x kept weights / 8 over the quantised layers only."""
    float_bytes: int
    """float32 bytes of the parameters left unquantised (part of ``payload_bytes``)."""
    file_bytes: int
    """Size of ``model.slim`` on disk (codebooks, masks, biases, BN statistics, header included)."""
    original_bytes: int
    """float32 bytes of every parameter of the input model."""
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
    weight_bytes: int | None = None,
    max_drop: float | None = None,
    onnx: bool = True,
    arch: str | None = None,
    seed: int | None = None,
) -> QuantizeRunResult:
    """Quantise the model at ``source`` and write ``model.slim``, ``model.pt``, ``model.onnx``, ``result.json``.

    With ``weight_bytes`` the SRAM planner chooses the per-layer settings (needs a task);
    ``spec`` then only provides method/per-channel/codebook options. ``arch`` is the architecture
    source of a ``file:`` state_dict (``--arch``); ``seed`` seeds a random-init model's weights.
    ``model.slim`` reloads as ``file:model.slim`` whatever the source (checked before returning).

    Raises:
        ConfigError: inconsistent options (planner without a task, fine-tuning without a task...).
    """
    from slimcnn.models import load_model, save_model

    if spec is None and weight_bytes is None:
        raise ConfigError("give --bits (e.g. 'conv1=9,conv*=8,fc*=1') or --weight-bytes with --task/--data")
    if (weight_bytes is not None or finetune_steps > 0 or max_drop is not None) and task is None:
        raise ConfigError("--weight-bytes, --max-drop and --finetune-steps need --task and --data")
    if (task is None) != (data is None):
        raise ConfigError("--task and --data go together")
    inputs = tuple(p for p in (weights, source.removeprefix("file:") if source.startswith("file:") else None) if p)
    outdir = ensure_output_dir(out, inputs=inputs)
    t: dict[str, float] = {}
    t0 = time.perf_counter()
    loaded = load_model(source, weights=weights, arch=arch, seed=seed)
    notes = list(loaded.info.notes)
    the_task = None
    before = None
    if task is not None:
        from slimcnn.tasks import make_task

        the_task = make_task(task, data, info=loaded.info)  # type: ignore[arg-type]
        before = the_task.evaluate(loaded.model, limit=limit)
    plan_dict = None
    if weight_bytes is not None:
        from slimcnn.quantize._planner import plan_memory

        base = spec or KMeansQuantSpec(bits=(("*", 8),))
        plan = plan_memory(loaded.model, the_task, weight_bytes=weight_bytes, max_drop=max_drop, limit=limit, base_spec=base)
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
    files = {"slim": str(slim), "pt": str(save_model(decoded, outdir / "model.pt"))}
    t0 = time.perf_counter()
    check = load_packed(slim).model  # rebuilt as file:model.slim will be, whatever the source
    same = all(torch.equal(a, b) for a, b in zip(check.state_dict().values(), result.model.state_dict().values(), strict=True))
    if not same:  # pragma: no cover - an invariant; tests cover it
        raise RuntimeError("model.slim does not decode to the quantised model")
    t["verify"] = time.perf_counter() - t0
    if onnx:
        from slimcnn.measure import export_onnx

        x = the_task.example_input(1) if the_task is not None else torch.randn(*loaded.info.input_shape)
        files["onnx"] = str(export_onnx(result.model.eval(), x, outdir / "model.onnx"))
    after = the_task.evaluate(result.model, limit=limit) if the_task is not None else None
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
    res = QuantizeRunResult(
        source=loaded.source,
        out=str(outdir),
        files=files,
        payload_bytes=pack.payload_bytes,
        paper_payload_bytes=pack.paper_payload_bytes,
        float_bytes=result.float_bytes,
        file_bytes=pack.file_bytes,
        original_bytes=result.original_bytes,
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
        environment={
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "cpu": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "limit": limit,
            "data": data,
        },
        notes=notes,
    )
    write_json(outdir / "result.json", res)
    return res
