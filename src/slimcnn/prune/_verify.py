"""The check that ends a pruning the trace cannot prove: which tensors must keep their shape, and their values.

By default the model's outputs. A detector's outputs come *after* box selection (score threshold, NMS,
top-k), so their count follows the weights and says nothing about the pruning; for those models the
check compares the outputs of the layers *before* box selection instead (backbone features, RPN head,
RoI box/mask/keypoint heads, dense heads), ignoring their leading axis (batch, or the number of RoIs,
which also follows the weights).

The values are compared too, against the original model run with the pruned channels zeroed
(:func:`slimcnn.graph.zeroed_forward`, the reference of the equivalence tests): a forward that branches on a layer
width or takes channels by a literal index can keep every shape and still compute something else. A detector's
values are compared at its dense heads (:data:`DENSE_HEADS`), which read the backbone's features before any box
selection; a RoI head sees the boxes NMS kept, which near-ties can change, so only its shapes are compared.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils._pytree import tree_flatten

from slimcnn.graph import ChannelGraph, zeroed_forward
from slimcnn.graph._context import eval_mode
from slimcnn.measure._inputs import clone_tensors

log = logging.getLogger(__name__)

CheckPoints = Callable[[nn.Module], list[str]]
_CHECK_POINTS: list[tuple[Callable[[nn.Module], bool], CheckPoints]] = []


def _present(model: nn.Module, names: list[str]) -> list[str]:
    mods = dict(model.named_modules())
    return [n for n in names if mods.get(n) is not None]


def _torchvision_detectors() -> None:
    try:
        from torchvision.models.detection import FCOS, RetinaNet
        from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN
        from torchvision.models.detection.ssd import SSD
    except ImportError:  # pragma: no cover - torchvision is a core dependency
        return
    rcnn = ["rpn.head", "roi_heads.box_predictor", "roi_heads.mask_predictor", "roi_heads.keypoint_predictor"]
    _CHECK_POINTS.append((lambda m: isinstance(m, GeneralizedRCNN), lambda m: _present(m, rcnn)))
    _CHECK_POINTS.append((lambda m: isinstance(m, (RetinaNet, FCOS, SSD)), lambda m: _present(m, ["head"])))


_torchvision_detectors()


DENSE_HEADS = ("rpn.head", "head")
"""Check points that read backbone features only (R-CNN's RPN head, RetinaNet/FCOS/SSD heads): their values
follow the kept channels alone, so the value check compares them."""


def check_points(model: nn.Module) -> list[str] | None:
    """FQNs of the submodules whose outputs the check compares, or None for the model's own outputs."""
    for match, points in _CHECK_POINTS:
        if match(model):
            return points(model)
    return None


def _shapes(out: Any) -> list[tuple[int, ...]]:
    return [tuple(t.shape) for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]


def forward(model: nn.Module, x: Any) -> Any:
    """``model(x)`` (``model(*x)`` for a tuple) in eval mode without gradients; the mode is restored."""
    with eval_mode(model), torch.no_grad():
        return model(*x) if isinstance(x, tuple) else model(x)


def _captured(model: nn.Module, points: list[str], run: Callable[[], Any]) -> dict[str, list[Tensor]]:
    """The tensors each module ``points`` returns on its first call while ``run()`` runs."""
    rec: dict[str, list[Tensor]] = {}
    mods = dict(model.named_modules())

    def hook(name: str) -> Callable[..., None]:
        def fn(m: nn.Module, i: Any, o: Any) -> None:
            rec.setdefault(name, [t.detach().clone() for t in tree_flatten(o)[0] if isinstance(t, Tensor)])
        return fn

    handles = [mods[p].register_forward_hook(hook(p)) for p in points]
    try:
        run()
    finally:
        for h in handles:
            h.remove()
    return rec


def _checked(out: Any, points: list[str] | None) -> tuple[dict[str, Any], Any]:
    """What the check compares of one run: ``({"output": shapes} or {point: shapes without dim 0}, values)``;
    the values are ``{"output": the outputs}`` (``points`` None) or ``{dense head: its tensors}``."""
    if points is None:
        return {"output": _shapes(out)}, {"output": out}
    return ({p: [tuple(t.shape[1:]) for t in ts] for p, ts in out.items()},
            {p: ts for p, ts in out.items() if p in DENSE_HEADS})


def expected(model: nn.Module, x: Any, points: list[str] | None, graph: ChannelGraph,
             removal: Mapping[int | str, Any]) -> tuple[dict[str, Any], Any]:
    """Shapes and values the pruned ``model`` must give on ``x``: those of the original with the channels of
    ``removal`` zeroed (values None, with a warning, when that run fails: the shapes are still checked)."""
    def zeroed() -> Any:
        return seeded(lambda: zeroed_forward(model, clone_tensors(x), graph, removal))

    try:
        return _checked(zeroed() if points is None else _captured(model, points, zeroed), points)
    except (RuntimeError, ValueError, TypeError, IndexError) as e:
        log.warning("no value check of the pruned model: the zeroed original did not run (%s)",
                    str(e).splitlines()[0] if str(e) else type(e).__name__)
    if points is None:
        return {"output": _shapes(graph.output)}, None
    return _checked(_captured(model, points, lambda: forward(model, x)), points)[0], None


def observed(model: nn.Module, x: Any, points: list[str] | None) -> tuple[dict[str, Any], Any]:
    """Shapes and values of the pruned ``model`` on ``x``, as :func:`expected` gives them."""
    def run() -> Any:
        return seeded(lambda: forward(model, clone_tensors(x)))

    return _checked(run() if points is None else _captured(model, points, run), points)


VALUE_RTOL = 1e-3
"""A pruned output may differ from the zeroed original's by this fraction of the output's largest magnitude (float
rounding is ~1e-7 of it; a forward that steers on a channel count differs by O(1))."""


def seeded(fn: Callable[[], Any], seed: int = 0) -> Any:
    """``fn()`` with torch's generators seeded and restored: a forward that draws noise draws the same twice."""
    cuda = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []  # a model on a GPU draws there
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(seed)
        return fn()


def mismatch(before: tuple[dict[str, Any], Any], after: tuple[dict[str, Any], Any]) -> str | None:
    """A message naming the first shape, then the first value, of ``after`` (:func:`observed`) that differs from
    ``before`` (:func:`expected`), or None."""
    bad = shape_mismatch(before[0], after[0])
    if bad or before[1] is None:
        return bad
    return next((m for name, ref in before[1].items()
                 if (m := value_mismatch(ref, after[1].get(name), "output" if name == "output" else f"'{name}' output"))),
                None)


def value_mismatch(reference: Any, out: Any, what: str = "output") -> str | None:
    """A message naming the first floating output that differs from ``reference`` beyond :data:`VALUE_RTOL` of its
    largest magnitude, or None. Outputs with a non-finite reference value are not compared."""
    pairs = zip(tree_flatten(reference)[0], tree_flatten(out)[0], strict=False)
    for k, (ref, got) in enumerate(pairs):
        if not (isinstance(ref, torch.Tensor) and isinstance(got, torch.Tensor) and ref.is_floating_point()
                and ref.shape == got.shape and ref.numel() and bool(torch.isfinite(ref).all())):
            continue
        scale = float(ref.abs().max())
        diff = float((got.to(ref.dtype) - ref).abs().max())
        if diff > VALUE_RTOL * scale + 1e-6:
            return (f"the pruned model computes something else than the original with those channels zeroed ({what} "
                    f"{k}: max difference {diff:.3g} against max |output| {scale:.3g}): its forward probably depends "
                    "on a channel count or takes channels by a literal index (exclude those layers: --exclude)")
    return None


def shape_mismatch(before: dict[str, Any], after: dict[str, Any]) -> str | None:
    """A message naming the first tensor whose checked shape changed, or None."""
    for k in before:
        if k in after and before[k] != after[k]:
            where = "output shapes" if k == "output" else f"output shapes of '{k}' (leading axis ignored)"
            return f"pruning changed the {where} {before[k]} -> {after[k]}"
    return None
