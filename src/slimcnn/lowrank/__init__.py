"""Hardware-aware low-rank decomposition (Hajimolahoseini et al., https://arxiv.org/abs/2309.12412).

SVD for Linear/1×1 conv, Tucker-2 (or spatial SVD) for k×k conv, ranks from a compression target
rounded to hardware-friendly multiples, and — by default — a layer is replaced only where its
factors are *measured* faster on the target runtime.
"""

from __future__ import annotations

import contextlib
import copy
import fnmatch
import logging
from dataclasses import dataclass

import torch
from torch import nn

from slimcnn.lowrank.factorize import (
    decompose_linear,
    decompose_pointwise,
    decompose_spatial,
    decompose_tucker2,
    svd_factors,
    tucker2_factors,
)
from slimcnn.lowrank.rank import energy_rank, round_rank, svd_rank, tucker2_rank
from slimcnn.lowrank.select import (
    Comparer,
    LayerDecision,
    LowRankSpec,
    Timer,
    build_factors,
    choose_rank,
    decide_layer,
    rank_candidates,
    timing_factors,
)
from slimcnn.progress import phase

__all__ = [
    "Comparer", "LayerDecision", "LowRankResult", "LowRankSpec", "Timer", "build_factors", "choose_rank", "decompose", "decompose_",
    "decompose_linear", "decompose_pointwise", "decompose_spatial", "decompose_tucker2", "energy_rank",
    "factor_groups", "freeze_factors_", "rank_candidates", "round_rank", "runtime_comparer", "runtime_timer", "svd_factors",
    "svd_rank", "timing_factors", "tucker2_factors", "tucker2_rank",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LowRankResult:
    """What :func:`decompose_` did, layer by layer."""

    spec: LowRankSpec
    layers: tuple[LayerDecision, ...]
    runtime: str | None
    threads: int | None

    @property
    def replaced(self) -> list[str]:
        """FQNs of the layers that were replaced by factors."""
        return [row.layer for row in self.layers if row.replaced]

    @property
    def slower(self) -> list[str]:
        """FQNs of replaced layers whose factors timed no faster than the original (only with ``--all``)."""
        return [row.layer for row in self.layers if row.slower]


def runtime_timer(runtime: str = "onnxruntime", threads: int | None = None, runs: int = 10) -> Timer:
    """A :data:`Timer` for the quick rank scan: median of ``runs`` calls of the layer alone.

    Uses :func:`slimcnn.measure.time_module`, cached by (runtime, threads, layer shapes, input
    shape), so identical layers (e.g. the repeated blocks of a ResNet stage) are timed once.
    """
    from slimcnn.measure import time_module

    def timer(module: nn.Module, input_shape: tuple[int, ...]) -> float:
        return time_module(module, input_shape, runtime=runtime, threads=threads, runs=runs, warmup=3).median_ms  # type: ignore[arg-type]

    return timer


def runtime_comparer(runtime: str = "onnxruntime", threads: int | None = None, runs: int = 40) -> Comparer:
    """A :data:`Comparer` for the confirmatory timing: original and factors interleaved, side by side.

    Both modules run ``runs`` rounds in one process with :func:`slimcnn.measure.compare_latency`
    (round-robin, rotating order). The speed-up is taken conservatively as the smaller of the
    median and p10 speed-ups, and the pair of times of that statistic is returned, so a gain that
    shows only in one statistic (noise) does not count. Results are memoised per (layer shapes,
    input shape) for the life of the comparer, so identical layers get identical decisions.
    """
    from slimcnn.measure import compare_latency

    memo: dict[tuple[str, str, tuple[int, ...]], tuple[float, float]] = {}

    def compare(original: nn.Module, replacement: nn.Module, input_shape: tuple[int, ...]) -> tuple[float, float]:
        key = (repr(original), repr(replacement), tuple(input_shape))
        if key not in memo:
            x = torch.randn(input_shape, generator=torch.Generator().manual_seed(0))
            lat = compare_latency({"original": copy.deepcopy(original), "factors": copy.deepcopy(replacement)}, x,
                                  runtime=runtime, threads=threads, runs=runs, warmup=5)  # type: ignore[arg-type]
            a, b = lat["original"], lat["factors"]
            med, p10 = (a.median_ms, b.median_ms), (a.p10_ms, b.p10_ms)
            memo[key] = min(med, p10, key=lambda t: t[0] / max(t[1], 1e-9))
        return memo[key]

    return compare


def _input_shapes(model: nn.Module, example_input: torch.Tensor, names: set[str]) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}

    def record(name: str) -> object:
        def hook(module: nn.Module, args: tuple[torch.Tensor, ...], output: object) -> None:
            shapes.setdefault(name, tuple(args[0].shape))

        return hook

    hooks = [mod.register_forward_hook(record(name)) for name, mod in model.named_modules() if name in names]
    try:
        with torch.inference_mode():
            model.eval()(example_input)
    finally:
        for h in hooks:
            h.remove()
    return shapes


def _candidates(model: nn.Module, spec: LowRankSpec) -> list[str]:
    names = []
    for name, mod in model.named_modules():
        if not isinstance(mod, (nn.Conv2d, nn.Linear)) or not name:
            continue
        if spec.include and not any(fnmatch.fnmatch(name, p) for p in spec.include):
            continue
        if any(fnmatch.fnmatch(name, p) for p in spec.exclude):
            continue
        names.append(name)
    return names


def decompose_(
    model: nn.Module,
    example_input: torch.Tensor,
    spec: LowRankSpec | None = None,
    *,
    timer: Timer | None = None,
    compare: Comparer | None = None,
    runtime: str | None = "onnxruntime",
    threads: int | None = None,
    scan_runs: int = 10,
    confirm_runs: int = 40,
    progress: bool = False,
) -> LowRankResult:
    """Replace layers of ``model`` in place by their low-rank factors (``nn.Sequential``s).

    Args:
        model: the network; layers are swapped by FQN.
        example_input: a model-ready input; each layer is timed at the input shape it sees here.
        spec: ranks and selection options (defaults: α = 2, ranks rounded to 8, only measured-faster).
        timer: ``timer(module, input_shape) -> ms`` for the rank scan; default
            :func:`runtime_timer` on ``runtime`` with ``threads`` and ``scan_runs``.
        compare: ``compare(original, factors, input_shape) -> (ms, ms)`` confirming a replacement
            side by side; default :func:`runtime_comparer` with ``confirm_runs`` when ``timer`` is
            also the default (a custom ``timer`` alone decides from the scan).
        runtime: ``"onnxruntime"`` or ``"torch"``; ``None`` disables timing (then every layer that
            shrinks is replaced, as with ``--all``).
        threads: threads for the runtime (default: physical cores).
        scan_runs: timed calls per candidate rank in the scan.
        confirm_runs: interleaved rounds of the confirmatory timing.
        progress: show a progress bar.

    Returns:
        A :class:`LowRankResult` with one :class:`LayerDecision` per candidate layer.
    """
    spec = spec or LowRankSpec()
    if timer is None and runtime is not None:
        timer = runtime_timer(runtime, threads, scan_runs)
        compare = compare or runtime_comparer(runtime, threads, confirm_runs)
    names = _candidates(model, spec)
    shapes = _input_shapes(model, example_input, set(names))
    rows = []
    with contextlib.ExitStack() as stack:
        advance = stack.enter_context(phase("decompose", total=len(names), unit="layers")) if progress else None
        for name in names:
            if advance is not None:
                advance()
            if name not in shapes:  # never reached by the forward pass
                continue
            layer = model.get_submodule(name)
            row, factors = decide_layer(name, layer, shapes[name], spec, timer, compare)
            rows.append(row)
            if factors is not None:
                _set_submodule(model, name, factors.to(layer.weight.device))
    if timer is not None and runtime is not None and threads is None:
        from slimcnn.measure import physical_cores

        threads = physical_cores()  # what the runtime timers used
    return LowRankResult(spec, tuple(rows), runtime if timer else None, threads)


def decompose(model: nn.Module, example_input: torch.Tensor, spec: LowRankSpec | None = None, **kw: object) -> tuple[nn.Module, LowRankResult]:
    """Like :func:`decompose_` on a deep copy; the caller's model is untouched."""
    clone = copy.deepcopy(model)
    return clone, decompose_(clone, example_input, spec, **kw)  # type: ignore[arg-type]


def _set_submodule(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def factor_groups(model: nn.Module, result: LowRankResult) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """Split the replaced layers' parameters into (outer 1×1 factors, inner factors).

    Outer = the first factor of each SVD pair and the first and last 1×1 of each Tucker-2 triple.
    """
    outer: list[nn.Parameter] = []
    inner: list[nn.Parameter] = []
    for row in result.layers:
        if not row.replaced:
            continue
        seq = model.get_submodule(row.layer)
        mods = list(seq.children())
        outer_mods = [mods[0]] if len(mods) == 2 else [mods[0], mods[-1]]
        for m in mods:
            (outer if m in outer_mods else inner).extend(m.parameters())
    return outer, inner


def freeze_factors_(model: nn.Module, result: LowRankResult, which: str = "outer") -> list[nn.Parameter]:
    """Freeze ``"outer"`` or ``"inner"`` factors (``"none"`` unfreezes all); returns the trainable params."""
    outer, inner = factor_groups(model, result)
    for p in model.parameters():
        p.requires_grad_(True)
    frozen = {"outer": outer, "inner": inner, "none": []}[which]
    ids = {id(p) for p in frozen}
    for p in frozen:
        p.requires_grad_(False)
    return [p for p in model.parameters() if id(p) not in ids]
