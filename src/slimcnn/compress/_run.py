"""``compress``: search stages in order, each given the budget that is left, all judged against the ORIGINAL."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from slimcnn.compress._costs import stage_limits, target_ratios
from slimcnn.compress._int8 import judge_int8, run_int8_factors, run_int8_stage
from slimcnn.compress._recipe import StageSpec, assign_targets, auto_recipe, parse_recipe
from slimcnn.errors import ConfigError
from slimcnn.export._int8 import Int8Spec
from slimcnn.quantize._format import written_weight_bytes
from slimcnn.run._artifacts import same_weights, still_convs
from slimcnn.search._stored import still_weighted, stored_cost, stored_form, stored_huffman, stored_input_cost
from slimcnn.search.budget import Amount, Budget, ConstraintCheck
from slimcnn.search.families import pack
from slimcnn.types import Cost, Score

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class CompressSpec:
    """How to compress (the budget says to what)."""

    recipe: str = "auto"
    """``auto`` or comma-separated stages (``prune,kmeans``; see :func:`parse_recipe`)."""
    finetune_steps: int = 0
    """Fine-tuning steps per measured point inside every stage."""
    recovery_steps: int = 0
    """Fine-tuning steps of each searched stage's CHOSEN model before it is judged against the original (the
    papers' retraining after the search; the points of the search only get ``finetune_steps``)."""
    finetune: dict[str, Any] = field(default_factory=dict)
    """Extra fine-tuning options (lr, batch_size...)."""
    recovery: str = "kd"
    """``kd``: fine-tune by distillation from the original model; ``plain``: on the task's labels."""
    limit: int | None = None
    """Validation images used while searching (stage results and the final model use all of them)."""
    runtime: str | None = None
    """Latency runtime (``onnxruntime``); needed for a latency target."""
    threads: int | None = None
    round_to: int = 1
    amounts: tuple[float, ...] | None = None
    device: str = "cpu"
    exclude: tuple[str, ...] = ()
    compensate: str = "none"
    """Channel-pruning stages (``latency`` too): ``mean`` or ``lsq`` compensation of the layers reading removed
    channels (:data:`~slimcnn.prune.COMPENSATIONS`), ``none``."""
    int8: Int8Spec = field(default_factory=Int8Spec)
    """How an ``int8`` stage quantises (calibration, images, per-channel weights)."""
    codebook: str = "fp32"
    """How a ``kmeans`` stage stores its centroids in ``model.slim``: ``fp32`` or ``fp16`` (half the codebook
    bytes, which count against ``--weight-bytes``; the model uses the rounded centroids)."""


@dataclass
class StageResult:
    """One stage: its search, and its model judged against the original."""

    name: str
    targets: dict[str, str]
    """The targets this stage owned and the drop share it was given, as passed to its search."""
    score: Score
    cost: Cost
    drop: float
    """Drop against the ORIGINAL after this stage (metric units)."""
    met: bool
    assignment: dict[str, float]
    steps: list[dict[str, Any]]
    tried: list[dict[str, Any]]
    seconds: float
    recovered: dict[str, Any] | None = None
    """With ``recovery_steps``: the steps and the score of the chosen model before that fine-tune."""


@dataclass
class CompressResult:
    """The final model, every stage, and the budget checked on the final model against the original."""

    model: nn.Module
    stages: list[StageResult]
    before: dict[str, Any]
    after: dict[str, Any]
    checks: list[ConstraintCheck]
    met: bool
    recipe: tuple[StageSpec, ...]
    seconds: float
    kmeans_bits: dict[str, int] = field(default_factory=dict)
    """Bits per layer when a k-means stage ran (the written ``model.slim`` packs them)."""
    packed: Any = None
    """The ``QuantizeResult`` of ``model`` when a k-means stage ran (what ``model.slim`` stores)."""
    huffman: bool = False
    """``model.slim`` Huffman-codes its indices, as the ``.slim`` given did."""
    kernel_layers: tuple[str, ...] = ()
    """Layers a kernel stage removed kernels from, when no k-means/int8 stage re-stores the weights: the
    written ``model.slimk`` leaves their zero kernels out, and costs count them removed."""
    int8: Any = None
    """The :class:`~slimcnn.compress._int8.Int8Outcome` when an int8 stage ran: ``model`` is its ONNX Runtime
    module, the written ``model.onnx`` its bytes, ``float_model`` the float model it quantised."""
    float_model: nn.Module | None = None
    int8_factors: dict[str, float] = field(default_factory=dict)
    """int8's latency factor measured on the original (an earlier stage's latency target was divided by it)."""
    notes: tuple[str, ...] = ()
    """What the run decided that the user did not ask for (e.g. ``auto`` leaving int8 out), one line each."""


StageCallback = Callable[[int, StageSpec, str], None]


def compress(
    model: nn.Module,
    task: Any,
    budget: Budget,
    spec: CompressSpec | None = None,
    *,
    recipe: str | None = None,
    example_input: Any = None,
    source: str = "",
    progress: bool = True,
    state_dir: Path | None = None,
    on_stage: StageCallback | None = None,
    promises: Sequence[Any] = (),
) -> CompressResult:
    """Compress ``model`` (not mutated) through the recipe's stages until ``budget`` holds.

    Every stage is a :func:`slimcnn.search.search` over the previous stage's model. The drop is always
    measured against the ORIGINAL on the validation data: a stage may spend an equal share of the drop
    still unspent (the last stage what is left); an earlier stage that cannot meet its targets within its
    share meets them at the least drop instead, and so does the last one when recovery steps follow (they
    win back much of what the short per-point fine-tunes lose; the final check judges). Each hardware
    target is owned by the last stage that can move it (``prune`` for MACs/latency, ``kmeans`` for
    bytes); its limit is passed relative to the stage's input so that latency ratios are taken within
    one run. With ``state_dir``, each finished stage is kept (``stage-N.pt``) and a re-run with the same
    options resumes after it. ``promises``: what the input model already holds (a compact file's removed kernels
    or codebooks: :func:`slimcnn.run._artifacts.compact_source`), kept by every fine-tune.

    Raises:
        ConfigError: no ``max_drop``, no hardware target, or a target no stage of the recipe can move.
    """
    from slimcnn.search import SearchSpec, search
    from slimcnn.search.plan import search_steps

    spec = spec or CompressSpec()
    if recipe is not None:
        spec = dataclasses.replace(spec, recipe=recipe)
    if budget.max_drop is None:
        raise ConfigError("compress needs a quality target: --max-drop (e.g. 1 point, 0.2 dB or 1%)")
    targets = set(budget.limits)
    t0 = time.perf_counter()
    x = task.example_input() if example_input is None else example_input
    original = model.eval()
    named = parse_recipe(spec.recipe)
    # a compact input (.slimk / .slim) is counted as its file stores it, as `analyze` counts it, and written so again
    kernel_layers, kmeans_bits, stored_book, stored_per_channel = stored_form(promises)
    huffman = stored_huffman(promises)
    base_cost = stored_input_cost(original, x, promises)
    stages = named or auto_recipe(targets, spec.runtime, target_ratios(budget, base_cost))
    owned = assign_targets(stages, targets)
    has_int8 = stages[-1].method == "int8"
    check_codebook(spec.codebook, stages)
    if has_int8 and spec.runtime not in (None, "onnxruntime"):
        raise ConfigError(f"an int8 stage runs in ONNX Runtime; its latency cannot be timed with --runtime {spec.runtime}")
    base_score = task.evaluate(original, device=spec.device)
    drop_total = float(budget.drop_limit(base_score))  # type: ignore[arg-type]
    need_latency = "latency_ms" in targets or spec.runtime is not None
    current, current_score = original, base_score
    # int8 (last) scales latency by a factor of the model: an earlier stage gets the latency target divided by
    # it; its weight bytes are counted as the int8 file itself (SearchSpec.int8_weights), not as a factor
    factors: dict[str, float] = {}
    notes: list[str] = []
    if has_int8 and any("latency_ms" in owned[i] for i in range(len(stages) - 1)):
        factors = run_int8_factors(original, task, x, spec, state_dir)
        if not named and factors["latency_ms"] >= 1.0:
            # depthwise/hard-swish models can run slower in int8 on ONNX Runtime: pruning would then have to buy
            # back int8's loss on top of the target (timm mobilenetv3_small_050: 1.64x / 1.73x, a 0.7x target became 0.4x)
            stages = auto_recipe(targets, spec.runtime, target_ratios(budget, base_cost), int8=False)
            owned, has_int8 = assign_targets(stages, targets), False
            notes.append(f"int8 runs this model {factors['latency_ms']:.2f}x as long as fp32 on ONNX Runtime (measured "
                         f"on the original), so it is no stage: the recipe is {','.join(s.name for s in stages)}")
            log.warning(notes[-1])
            factors = {}  # nothing divides the latency target now
    # the written model.slim: as a kmeans stage shares weights, else as the input stored them
    codebook, per_channel = ((spec.codebook, False) if any(s.method == "kmeans" for s in stages)
                             else (stored_book, stored_per_channel))
    int8_out: Any = None
    float_model: nn.Module | None = None
    results: list[StageResult] = []
    kept: list[Any] = list(promises)  # what fine-tuning must keep of the input and earlier stages (zeros, codebooks)
    for i, stage in enumerate(stages):
        say = on_stage or (lambda *_: None)
        saved = _load_stage(state_dir, i)
        if saved is not None:
            if stage.method == "int8":  # its state is the whole Int8Outcome (the ONNX bytes, the step's params)
                float_model, int8_out = current, saved[0]
                saved = (int8_out.module, saved[1])
            current, result = saved
            current_score = result.score
            results.append(result)
            say(i, stage, f"resumed: stage {i + 1} of {len(stages)} ({stage.name}) was finished by an earlier run")
            if stage.method == "int8":
                continue
            kept += _carried_promises(stage, current, result.assignment, x)
            if stage.method == "kmeans":
                kmeans_bits = {k: int(v) for k, v in result.assignment.items()}
            if stage.method == "kernel":
                kernel_layers += [k for k, v in result.assignment.items() if v > 0]
            continue
        left = max(drop_total - base_score.drop_to(current_score), 0.0)
        last = i == len(stages) - 1
        limits = stage_limits(owned[i], budget, base_cost, current, original, x, spec, factors, kmeans_bits, kernel_layers)
        objective = next((k for k in ("latency_ms", "macs", "params", "activation_bytes", "weight_bytes") if k in limits),
                         "weight_bytes" if stage.method == "kmeans" else "macs")
        # The last stage compresses as far as the drop left allows; an earlier one as far as an equal share
        # of it allows, and when that share cannot meet the targets it owns, it meets them at the least drop.
        # So does the last stage when recovery steps follow: they win back much of what 20-step points lose
        # (FSRCNN x3: k-means met 0.25x bytes at 0.168 of 0.2 dB after recovery; within its 0.048 dB, nothing).
        share = left if last else left / (len(stages) - i)
        if stage.method == "int8":
            float_model = current
            int8_out, result = run_int8_stage(stage, current, current_score, task, x, spec, base_score, drop_total, owned[i], budget,
                                         base_cost, say, i, len(stages))
            current, current_score = int8_out.module, int8_out.score
            results.append(result)
            _save_stage(state_dir, i, int8_out, result)
            continue
        say(i, stage, f"stage {i + 1} of {len(stages)}: {stage.name} (owns {', '.join(sorted(owned[i])) or 'no target'}; "
                      f"may lose {share:.4g} {base_score.metric})")
        sspec = SearchSpec(method=stage.method, strategy=stage.strategy, criterion=stage.criterion,
                           finetune_steps=spec.finetune_steps, finetune=dict(spec.finetune), limit=spec.limit,
                           runtime=spec.runtime if need_latency else None, threads=spec.threads,
                           round_to=spec.round_to if stage.method == "prune" else 1,
                           amounts=spec.amounts if stage.method != "kmeans" else None, device=spec.device,
                           exclude=spec.exclude, recovery=spec.recovery, promises=tuple(kept),
                           compensate=spec.compensate if stage.method == "prune" else False,
                           codebook=spec.codebook if stage.method == "kmeans" else "fp32",
                           int8_weights=spec.int8 if has_int8 and "weight_bytes" in owned[i] else None)
        ts = time.perf_counter()
        resume = str(state_dir / f"sensitivity-{i}.json") if state_dir is not None else None
        trials = str(state_dir / f"trials-{i}.pt") if state_dir is not None else None  # both searches' points
        least_drop_next = bool(owned[i]) and (not last or spec.recovery_steps > 0)  # when this search misses
        res = search(current, task, Budget(Amount(share), limits, objective), sspec,  # type: ignore[arg-type]
                     example_input=x, source=source, resume=resume, trials=trials, progress=progress,
                     input_score=current_score, finish_unmet=not least_drop_next)
        allowed = f"{share:.6g}"
        if not res.met and least_drop_next:
            say(i, stage, f"  its share cannot meet {', '.join(sorted(owned[i]))}: meeting them at the least drop")
            res = search(current, task, Budget(None, limits, objective), sspec,  # type: ignore[arg-type]
                         example_input=x, source=source, resume=resume, trials=trials,
                         progress=progress, input_score=current_score)
            allowed = "the least that meets its targets"
        steps = [dataclasses.asdict(s) for s in search_steps(current, sspec, res, x)]
        current, current_score = res.model, res.after["score"]
        kept += _carried_promises(stage, current, res.assignment, x)
        recovered = None
        if spec.recovery_steps > 0 and steps:  # a stage that changed nothing has nothing to recover
            say(i, stage, f"  recovery: {spec.recovery_steps} fine-tune steps ({spec.recovery}) of the chosen model")
            recovered = {"steps": spec.recovery_steps, "recovery": spec.recovery, "score_before": current_score.value}
            chosen = {k: v.clone() for k, v in current.state_dict().items()}
            after_recovery = _recover(current, task, original, kept, spec)
            if current_score.drop_to(after_recovery) > 0:  # it lost quality on the validation data: keep the search's model
                current.load_state_dict(chosen)
                recovered["reverted_from"] = after_recovery.value
                say(i, stage, f"  recovery lowered {current_score.metric} {current_score.value:.4g} -> "
                              f"{after_recovery.value:.4g}: kept the model before it")
            else:
                current_score = after_recovery
        if stage.method == "kmeans":
            kmeans_bits = {k: int(v) for k, v in res.assignment.items()}
        if stage.method == "kernel":
            kernel_layers += [k for k, v in res.assignment.items() if v > 0]
        cost = stored_cost(current, x, kmeans_bits, kernel_layers, codebook)
        result = StageResult(
            stage.name, {"max_drop": allowed, **{k: v.shown(k) for k, v in limits.items()}},
            current_score, cost,
            base_score.drop_to(current_score), res.met, dict(res.assignment), steps, res.tried,
            round(time.perf_counter() - ts, 2), recovered)
        results.append(result)
        _save_stage(state_dir, i, current, result)
    packed = None
    kmeans_bits = still_weighted(current, kmeans_bits)  # a low-rank stage may have factorised an input's k-means layer
    if kmeans_bits:  # the written model is the packed one: snap every k-means layer onto its codebook
        packed = pack(current, kmeans_bits, codebook, per_channel)
        if not same_weights(packed.model, current):  # else its score is the one just measured
            current_score = task.evaluate(packed.model.eval(), device=spec.device)
        current = packed.model.eval()
    if stages[-1].method == "int8":
        return judge_int8(original, current, float_model, int8_out, results, stages, budget, base_score,
                            base_cost, current_score, x, spec, factors, t0)
    final_cost = stored_cost(current, x, kmeans_bits, kernel_layers, codebook)
    if packed is not None:  # what model.slim stores exactly (a codebook may need fewer than 2**bits centroids)
        final_cost = dataclasses.replace(final_cost, weight_bytes=written_weight_bytes(packed, huffman=huffman))
    before_cost, after_cost = base_cost, final_cost
    if need_latency:
        from slimcnn.measure import compare_latency

        lat = compare_latency({"before": original, "after": current}, x, runtime=spec.runtime or "onnxruntime",  # type: ignore[arg-type]
                              threads=spec.threads, runs=50, warmup=5)
        before_cost = dataclasses.replace(base_cost, latency=lat["before"])
        after_cost = dataclasses.replace(final_cost, latency=lat["after"])
    checks = budget.check(before_cost, base_score, after_cost, current_score)
    return CompressResult(
        model=current, stages=results, before={"score": base_score, "cost": before_cost},
        after={"score": current_score, "cost": after_cost}, checks=checks, met=all(c.met for c in checks),
        recipe=stages, seconds=time.perf_counter() - t0, kmeans_bits=kmeans_bits, packed=packed,
        kernel_layers=() if kmeans_bits else tuple(still_convs(current, kernel_layers)), notes=tuple(notes),
        huffman=huffman)


def _recover(model: nn.Module, task: Any, original: nn.Module, kept: list[Any], spec: CompressSpec) -> Score:
    """Fine-tune ``model`` in place for ``spec.recovery_steps`` keeping every stage's promises (codebooks,
    zeros); distilled from the original with ``kd``. Returns its score on all validation data."""
    from slimcnn.train import keep_promises

    opts: dict[str, Any] = {"device": spec.device} | spec.finetune
    if spec.recovery != "plain":
        opts |= {"teacher": original, "recovery": spec.recovery}
    with keep_promises(model, kept):
        task.finetune(model, spec.recovery_steps, **opts)
    return task.evaluate(model.eval(), device=spec.device)


def _carried_promises(stage: StageSpec, model: nn.Module, assignment: dict[str, float], x: Any) -> list[Any]:
    """The stage's promises a later stage must keep: kernel zeros and codebooks (widths cannot grow anyway,
    and a later structural stage may legitimately change them)."""
    from slimcnn.search.families import FAMILIES

    family = FAMILIES.get(stage.method)(example_input=x)
    return [p for p in family.promises(model, assignment) if p.kind != "shape"]


def check_codebook(codebook: str, stages: Sequence[StageSpec]) -> None:
    """``--codebook`` is a k-means stage's centroid storage: fp32 or fp16, and only with a kmeans stage."""
    from slimcnn.quantize._model import check_codebook_dtype

    check_codebook_dtype(codebook)
    if codebook != "fp32" and all(s.method != "kmeans" for s in stages):
        raise ConfigError(f"--codebook {codebook} stores k-means centroids, and the recipe "
                          f"({', '.join(s.name for s in stages)}) has no kmeans stage")


def _save_stage(state_dir: Path | None, i: int, model: Any, result: StageResult) -> None:
    if state_dir is None:
        return
    from slimcnn._io import save_torch

    save_torch(state_dir / f"stage-{i}.pt", {"model": model, "result": result})


def _load_stage(state_dir: Path | None, i: int) -> tuple[Any, StageResult] | None:
    path = state_dir / f"stage-{i}.pt" if state_dir is not None else None
    if path is None or not path.is_file():
        return None
    state = torch.load(path, map_location="cpu", weights_only=False)  # our own file, written by _save_stage
    return state["model"], state["result"]
