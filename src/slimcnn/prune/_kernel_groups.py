"""Grouped kernel pattern: block-diagonal connectivity realised as ``nn.Conv2d(..., groups=G)``.

Public names are re-exported by :mod:`slimcnn.prune.kernel`; see ``docs/readme/kernel.md``.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from slimcnn.errors import ConfigError, UnsupportedLayerError
from slimcnn.prune.kernel import _conv, apply_kernel_masks_, kernel_scores

__all__ = ["GroupedLayer", "GroupedReport", "group_kernels_", "plan_kernel_groups"]

log = logging.getLogger(__name__)


# ---- grouped pattern ---------------------------------------------------------------------------
@dataclass(frozen=True)
class GroupedLayer:
    """One layer turned into a grouped convolution."""

    layer: str
    groups: int
    in_perm: tuple[int, ...]
    """New input position ``p`` holds original input channel ``in_perm[p]``."""
    out_perm: tuple[int, ...]
    """New output position ``p`` holds original output channel ``out_perm[p]``."""
    kept_importance: float
    """Fraction of the layer's kernel importance (criterion) inside the kept blocks."""
    kernels_kept: int
    kernels_total: int

    def mask(self) -> Tensor:
        """BoolTensor[out, in] in the ORIGINAL channel order: the kernels the grouped layer keeps."""
        o, i = len(self.out_perm), len(self.in_perm)
        bo = torch.empty(o, dtype=torch.long)
        bo[torch.tensor(self.out_perm)] = torch.arange(o) // (o // self.groups)
        bi = torch.empty(i, dtype=torch.long)
        bi[torch.tensor(self.in_perm)] = torch.arange(i) // (i // self.groups)
        return bo[:, None] == bi[None, :]


@dataclass(frozen=True)
class GroupedReport:
    """What :func:`group_kernels_` did (JSON round-trips via :func:`slimcnn._io.to_json`)."""

    layers: tuple[GroupedLayer, ...]
    permuted: tuple[str, ...]
    """Neighbour layers whose weights were permuted (no runtime permutation op)."""
    pinned: tuple[str, ...] = field(default=())
    """Tensors (named by their producer) that could not be permuted and keep their channel order."""
    max_abs_error: float = 0.0
    """Max |grouped - masked original| on the example input."""

    def masks(self) -> dict[str, Tensor]:
        """``{fqn: BoolTensor[out, in]}`` in original order, for :func:`apply_kernel_masks_` on the original."""
        return {g.layer: g.mask() for g in self.layers}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GroupedReport:
        """Inverse of ``json.loads(to_json(report))``."""
        layers = tuple(
            GroupedLayer(x["layer"], int(x["groups"]), tuple(x["in_perm"]), tuple(x["out_perm"]),
                         float(x["kept_importance"]), int(x["kernels_kept"]), int(x["kernels_total"]))
            for x in d["layers"]
        )
        return cls(layers, tuple(d.get("permuted", ())), tuple(d.get("pinned", ())), float(d.get("max_abs_error", 0.0)))


_PERMUTABLE = {"conv", "convt", "linear", "bn", "prelu"}


def _pin_reason(g: Any, mods: dict[str, nn.Module]) -> str | None:
    """Why permuting every member of channel group ``g`` would not be exact (None: it is)."""
    if g.fixed:
        return str(g.fixed[0][1])
    for m in g.members:
        if m.kind not in _PERMUTABLE:
            return f"'{m.layer}' ({m.kind}) cannot be permuted"
        if m.index != tuple(range(g.size)):
            return f"'{m.layer}' sees the channels through a concat/split/reshape"
        if getattr(mods[m.layer], "groups", 1) != 1:
            return f"'{m.layer}' is already grouped"
    return None


def _tensors(graph: Any, layers: dict[str, int], mods: dict[str, nn.Module]) -> tuple[
        dict[str, str], dict[str, str], dict[str, int], dict[str, str]]:
    """(input tensor, output tensor) key per layer, tensor sizes and pinned tensors -> reason.

    A tensor key is the graph group id (as str) or ``"input of FQN"`` for a model input.
    """
    in_t: dict[str, str] = {}
    out_t: dict[str, str] = {}
    size: dict[str, int] = {}
    pinned: dict[str, str] = {}
    for fqn in layers:
        rec = graph.layers.get(fqn)
        if rec is None or rec.calls != 1:
            raise UnsupportedLayerError(f"'{fqn}' must run exactly once in the forward (ran {rec.calls if rec else 0}x)")
        roots = graph.in_roots[fqn]
        if any(r < 0 for r in roots):
            in_t[fqn] = f"input of {fqn}"
            pinned[in_t[fqn]], size[in_t[fqn]] = "reads a model input (or a tensor no layer produced)", len(roots)
        else:
            in_t[fqn] = str(graph.atom[roots[0]][0])
        out_t[fqn] = str(graph.producer_group(fqn))
    for t in sorted((set(in_t.values()) | set(out_t.values())) - set(pinned)):
        grp = graph.group(int(t))
        size[t] = grp.size
        why = _pin_reason(grp, mods)
        if why is not None:
            pinned[t] = why
    return in_t, out_t, size, pinned


def _tensor_name(graph: Any, t: str) -> str:
    if not t.isdigit():
        return t
    prods = graph.group(int(t)).producers
    return f"output of {prods[0].layer}" if prods else f"channel group {t}"


def _ascend(imp: dict[str, Tensor], layers: dict[str, int], in_t: dict[str, str], out_t: dict[str, str],
            size: dict[str, int], free: list[str], sweeps: int) -> dict[str, Tensor]:
    """Block-coordinate ascent over tensor permutations; returns ``pos[t][c]`` (position of channel c)."""
    from scipy.optimize import linear_sum_assignment

    pos = {t: torch.arange(n) for t, n in size.items()}

    def block(f: str, t: str) -> Tensor:
        return pos[t] // (size[t] // layers[f])

    def objective() -> float:
        return sum(float((imp[f] * (block(f, out_t[f])[:, None] == block(f, in_t[f])[None, :])).sum()) for f in layers)

    best = objective()
    for sweep in range(sweeps):
        for t in free + free[::-1]:
            score = torch.zeros(size[t], size[t], dtype=torch.float64)  # [channel, position]
            slots = torch.arange(size[t])
            for f, g in layers.items():
                if in_t[f] == t:  # gain of input channel c in block b: its importance to outputs in block b
                    bo = block(f, out_t[f])
                    score += torch.stack([imp[f][bo == b].sum(0) for b in range(g)], 1)[:, slots // (size[t] // g)]
                if out_t[f] == t:
                    bi = block(f, in_t[f])
                    score += torch.stack([imp[f][:, bi == b].sum(1) for b in range(g)], 1)[:, slots // (size[t] // g)]
            pos[t] = torch.as_tensor(linear_sum_assignment(-score.numpy())[1], dtype=torch.long)
        now = objective()
        log.debug("kernel groups sweep %d: objective %.6f", sweep, now)
        if now <= best + 1e-12:
            break
        best = now
    return pos


def plan_kernel_groups(
    model: nn.Module,
    layers: dict[str, int],
    criterion: str = "l1",
    *,
    example_input: Any = None,
    sweeps: int = 6,
    strict: bool = False,
) -> GroupedReport:
    """Choose the block-diagonal kernel pattern of :func:`group_kernels_` without changing ``model``.

    Every channel tensor between layers gets one order (a position per channel); a ``G``-group
    layer connects input position ``p`` to output position ``q`` iff ``p // (C_in/G) == q // (C_out/G)``.
    The summed kept importance (each layer's normalised to 1) is maximised by **block-coordinate
    ascent**: fix all tensors but one and solve that tensor's channel→position problem exactly as a
    linear assignment (Hungarian, :func:`scipy.optimize.linear_sum_assignment`) on the score of
    putting channel ``c`` into the reader's and writer's block of position ``p``; forward and backward
    passes until no pass improves (at most ``sweeps``). Each step cannot lower the objective unless a
    layer reads and writes the same tensor (a residual stream), where it is a heuristic.

    Tensors whose order cannot be changed exactly by permuting neighbour weights (a model input, a
    model output, a concat/split/reshape, a grouped neighbour) are *pinned* to the identity order.

    Args: see :func:`group_kernels_`.

    Returns:
        A :class:`GroupedReport` with ``permuted=()`` and ``max_abs_error=0``.
    """
    from slimcnn.graph import trace

    x = _default_input(model) if example_input is None else example_input
    for fqn, g in layers.items():
        conv = _conv(model, fqn)
        if g < 1 or conv.in_channels % g or conv.out_channels % g:
            raise ConfigError(f"groups={g} for '{fqn}' must divide in_channels={conv.in_channels} and "
                              f"out_channels={conv.out_channels}")
    graph = trace(model, x)
    mods = dict(model.named_modules())
    in_t, out_t, size, pinned = _tensors(graph, layers, mods)
    if strict and pinned:
        t, why = sorted(pinned.items())[0]
        where = f"channel group {t} ({', '.join(graph.group(int(t)).layers())})" if t.isdigit() else t
        raise UnsupportedLayerError(f"cannot permute {where}: {why}")
    imp: dict[str, Tensor] = {}
    for fqn in layers:
        sc = kernel_scores(mods[fqn].weight, criterion).double()
        imp[fqn] = sc / sc.sum().clamp_min(1e-30)
    pos = _ascend(imp, layers, in_t, out_t, size, sorted(set(size) - set(pinned)), sweeps)
    rows = []
    for f, g in layers.items():
        gl = GroupedLayer(f, g, tuple(torch.argsort(pos[in_t[f]]).tolist()),
                          tuple(torch.argsort(pos[out_t[f]]).tolist()), 0.0, 0, 0)
        mask = gl.mask()
        rows.append(GroupedLayer(f, g, gl.in_perm, gl.out_perm, float((imp[f] * mask).sum()), int(mask.sum()),
                                 mask.numel()))
    return GroupedReport(tuple(rows), (), tuple(f"{_tensor_name(graph, t)}: {why}" for t, why in sorted(pinned.items())))


def group_kernels_(
    model: nn.Module,
    layers: dict[str, int] | GroupedReport,
    criterion: str = "l1",
    *,
    example_input: Any = None,
    sweeps: int = 6,
    strict: bool = False,
    atol: float = 1e-4,
) -> GroupedReport:
    """Turn each ``layers[fqn] = G`` conv into a ``G``-group convolution, in place.

    The pattern comes from :func:`plan_kernel_groups` (or is replayed from a given report). Channel
    orders are folded into the weights of each tensor's producers, per-channel layers (BN, PReLU)
    and consumers, so the exported graph has no permutation op; this is exact for chains and also
    for residual streams when every member of the coupled group can be permuted. The result is
    checked against the masked original on ``example_input``; on mismatch nothing is changed.

    Args:
        model: edited in place (grouped layers and permuted neighbours are swapped in by FQN).
        layers: ``{conv FQN: groups}`` (``groups`` divides the layer's in and out channels), or a
            :class:`GroupedReport` to replay on an identical model.
        criterion: ``"l1"`` or ``"sparsity"`` (:func:`kernel_scores`).
        example_input: input for tracing and the check; default ``randn(1, C_in, 32, 32)`` for the
            first conv's ``C_in``.
        sweeps: at most this many coordinate-ascent passes.
        strict: raise instead of pinning a tensor to its original order.
        atol: tolerance of the check, relative to ``max(1, max |output|)``.

    Returns:
        :class:`GroupedReport`; ``report.masks()`` are the equivalent free-pattern masks.

    Raises:
        ConfigError: ``G`` does not divide the channel counts.
        UnsupportedLayerError: not a ``groups=1`` Conv2d, a layer run more than once, a pinned
            tensor under ``strict``, or the equivalence check failed.

    Example:
        >>> rep = group_kernels_(vdsr, {f"residual_layer.{i}.conv": 4 for i in range(18)})
        >>> vdsr.residual_layer[0].conv.groups
        4
    """
    from slimcnn.graph import trace

    x = _default_input(model) if example_input is None else example_input
    plan = layers if isinstance(layers, GroupedReport) else plan_kernel_groups(
        model, layers, criterion, example_input=x, sweeps=sweeps, strict=strict)
    work = copy.deepcopy(model).eval()
    graph = trace(work, x)
    perms: dict[int, Tensor] = {}
    for gl in plan.layers:
        _conv(work, gl.layer)
        for roots, perm in ((graph.in_roots[gl.layer], gl.in_perm), (graph.out_roots[gl.layer], gl.out_perm)):
            if perm != tuple(range(len(perm))) and all(r >= 0 for r in roots):
                perms[graph.atom[roots[0]][0]] = torch.tensor(perm)
    reference = copy.deepcopy(model).eval()
    apply_kernel_masks_(reference, plan.masks())
    permuted = _permute_tensors_(work, graph, perms)
    for gl in plan.layers:
        _to_grouped_(work, gl.layer, gl.groups)
    err = _check(reference, work, x, atol)
    new = dict(work.named_modules())
    for fqn in sorted(set(permuted) | {gl.layer for gl in plan.layers}):
        _set_module(model, fqn, new[fqn])
    grouped = {gl.layer for gl in plan.layers}
    return GroupedReport(plan.layers, tuple(f for f in permuted if f not in grouped), plan.pinned, err)


def _default_input(model: nn.Module) -> Tensor:
    first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if first is None:
        raise ConfigError("the model has no Conv2d to infer an input from; pass example_input")
    return torch.randn(1, first.in_channels, 32, 32)


def _permute_tensors_(model: nn.Module, graph: Any, perms: dict[int, Tensor]) -> list[str]:
    mods = dict(model.named_modules())
    touched = []
    with torch.no_grad():
        for t, p in perms.items():
            for m in graph.group(t).members:
                mod = mods[m.layer]
                names = ["weight", "bias", "running_mean", "running_var"] if m.kind == "bn" else ["weight"]
                if m.kind in ("conv", "convt", "linear") and m.role == "out":
                    names = ["weight", "bias"]
                for name in names:
                    x = getattr(mod, name, None)
                    if x is None or (m.kind == "prelu" and x.numel() == 1):
                        continue
                    dim = 0 if m.kind in ("bn", "prelu") or (name == "bias") else m.dim
                    x.copy_(x.index_select(dim, p.to(x.device)))
                touched.append(m.layer)
    return sorted(set(touched))


def _to_grouped_(model: nn.Module, fqn: str, groups: int) -> None:
    old = _conv(model, fqn)
    o, i = old.out_channels, old.in_channels
    og, ig = o // groups, i // groups
    new = nn.Conv2d(i, o, old.kernel_size, old.stride, old.padding, old.dilation, groups, old.bias is not None,
                    old.padding_mode, device=old.weight.device, dtype=old.weight.dtype)
    with torch.no_grad():
        w = old.weight
        new.weight.copy_(torch.cat([w[b * og:(b + 1) * og, b * ig:(b + 1) * ig] for b in range(groups)], 0))
        if old.bias is not None:
            new.bias.copy_(old.bias)
    new.train(old.training)
    _set_module(model, fqn, new)


def _set_module(model: nn.Module, fqn: str, module: nn.Module) -> None:
    parent_name, _, leaf = fqn.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, leaf, module)


def _check(reference: nn.Module, work: nn.Module, x: Any, atol: float) -> float:
    with torch.no_grad():
        a = reference(*x) if isinstance(x, tuple) else reference(x)
        b = work(*x) if isinstance(x, tuple) else work(x)
    if not (isinstance(a, Tensor) and isinstance(b, Tensor)) or a.shape != b.shape:
        raise UnsupportedLayerError("grouped model output does not match the masked original in shape/type")
    err = float((a - b).abs().max())
    scale = float(a.abs().max()) or 1.0
    if err > atol * max(scale, 1.0):
        raise UnsupportedLayerError(
            f"grouped model differs from the masked original by {err:.3g} (> {atol} x {scale:.3g}); "
            "a neighbour could not be permuted exactly. Nothing was changed; pass strict=True to see which"
        )
    return err
