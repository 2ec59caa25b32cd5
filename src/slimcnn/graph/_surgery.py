"""Physical slicing of layers: weights, biases and buffers; attributes updated to the new widths."""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
from torch import Tensor, nn

from slimcnn.errors import UnsupportedLayerError
from slimcnn.graph._graph import ChannelGraph
from slimcnn.graph._layer_rules import rule_of_kind
from slimcnn.graph._leaf import is_builtin, leaf_kind
from slimcnn.graph._widths import rewrite_splits_

log = logging.getLogger(__name__)

Slicer = Callable[[nn.Module, list[int], list[int]], None]
SLICERS: dict[str, Slicer] = {}
"""Layer kind -> ``slicer(module, kept_out, kept_in)`` (per-channel layers use ``kept_in``)."""


def register_slicer(kind: str) -> Callable[[Slicer], Slicer]:
    """Register the slicing handler of a layer kind (see :func:`slimcnn.graph._leaf.leaf_kind`)."""

    def deco(fn: Slicer) -> Slicer:
        SLICERS[kind] = fn
        return fn

    return deco


def _set(module: nn.Module, name: str, value: Tensor) -> None:
    """Bind ``value``, a fresh tensor from :func:`_index` (``index_select`` copies: no clone needed)."""
    old = getattr(module, name)
    if isinstance(old, nn.Parameter):
        setattr(module, name, nn.Parameter(value.detach().contiguous(), requires_grad=old.requires_grad))
    else:
        module._buffers[name] = value.detach().contiguous()


def _index(t: Tensor, dim: int, keep: list[int] | Tensor) -> Tensor:
    """``t`` restricted to positions ``keep`` along ``dim`` (a new tensor; ``keep`` as a list or a long tensor)."""
    if not isinstance(keep, Tensor):
        keep = torch.tensor(keep, dtype=torch.long)
    return t.index_select(dim, keep.to(t.device))


def _kept_groups(fqn: str, keep: list[int], per: int, groups: int) -> list[int]:
    gs = sorted({c // per for c in keep})
    want = [g * per + i for g in gs for i in range(per)]
    if want != sorted(keep) or not gs:
        raise UnsupportedLayerError(
            f"'{fqn}': grouped layer would lose part of a group (groups={groups}); only whole groups can go"
        )
    return gs


def _conv_like(m: nn.Module, ko: list[int], ki: list[int], transposed: bool) -> None:
    w = m.weight
    g = int(m.groups)
    od, idim = (1, 0) if transposed else (0, 1)
    ko_t = torch.tensor(ko, dtype=torch.long)  # built once: the bias uses it too
    if g == 1:
        w = _index(_index(w, od, ko_t), idim, ki)
    else:
        n_out, n_in = int(m.out_channels), int(m.in_channels)
        gs = _kept_groups(str(m), ko, n_out // g, g)
        if gs != _kept_groups(str(m), ki, n_in // g, g):
            raise UnsupportedLayerError(f"grouped {type(m).__name__}: input and output groups disagree")
        w = _index(w, 0, ki if transposed else ko_t)
        m.groups = len(gs)
    _set(m, "weight", w)
    if m.bias is not None:
        _set(m, "bias", _index(m.bias, 0, ko_t))
    if not is_builtin(m):
        _own_per_output(m, int(m.out_channels), ko_t)
    m.out_channels, m.in_channels = len(ko), len(ki)


def _own_per_output(m: nn.Module, n_out: int, ko: Tensor) -> None:
    """A subclass's own tensors with one entry per output channel (timm ``ScaledStdConv2d.gain``), sliced like the
    bias. A guess: the trace asks for a check run of such a layer (shapes and values), which refuses a wrong one."""
    for name, t in [*m.named_parameters(recurse=False), *m.named_buffers(recurse=False)]:
        if name not in ("weight", "bias") and t.dim() >= 1 and n_out > 1 and t.shape[0] == n_out:
            _set(m, name, _index(t, 0, ko))


@register_slicer("scatter")
def _scatter(m: nn.Module, ko: list[int], ki: list[int]) -> None:
    m.prune_channels_(ko, ki)


@register_slicer("conv")
def _conv(m: nn.Module, ko: list[int], ki: list[int]) -> None:
    _conv_like(m, ko, ki, transposed=False)


@register_slicer("convt")
def _convt(m: nn.Module, ko: list[int], ki: list[int]) -> None:
    _conv_like(m, ko, ki, transposed=True)


@register_slicer("linear")
def _linear(m: nn.Module, ko: list[int], ki: list[int]) -> None:
    _set(m, "weight", _index(_index(m.weight, 0, ko), 1, ki))
    if m.bias is not None:
        _set(m, "bias", _index(m.bias, 0, ko))
    m.out_features, m.in_features = len(ko), len(ki)


def _per_channel(m: nn.Module, keep: list[int], names: tuple[str, ...]) -> None:
    keep_t = torch.tensor(keep, dtype=torch.long)  # built once for all the layer's tensors
    for n in names:
        t = getattr(m, n, None)
        if isinstance(t, Tensor) and t.dim() >= 1 and t.numel() > 1:
            _set(m, n, _index(t, 0, keep_t))


@register_slicer("bn")
def _bn(m: nn.Module, ko: list[int], ki: list[int]) -> None:
    _per_channel(m, ki, ("weight", "bias", "running_mean", "running_var"))
    if hasattr(m, "num_features"):
        m.num_features = len(ki)


@register_slicer("in")
def _inorm(m: nn.Module, ko: list[int], ki: list[int]) -> None:
    _bn(m, ko, ki)


@register_slicer("gn")
def _gn(m: nn.Module, ko: list[int], ki: list[int]) -> None:
    per = int(m.num_channels) // int(m.num_groups)
    gs = _kept_groups(str(m), ki, per, int(m.num_groups))
    _per_channel(m, ki, ("weight", "bias"))
    m.num_channels, m.num_groups = len(ki), len(gs)


@register_slicer("prelu")
def _prelu(m: nn.Module, ko: list[int], ki: list[int]) -> None:
    if m.weight.numel() > 1:
        _per_channel(m, ki, ("weight",))
        m.num_parameters = len(ki)


def slice_layers_(model: nn.Module, graph: ChannelGraph, removed: set[int]) -> dict[str, int]:
    """Slice every traced layer touched by the removed atoms. Returns {fqn: channels removed (out or in)}."""
    modules = dict(model.named_modules())
    changed: dict[str, int] = {}
    for fqn, (ko, ki) in graph.kept(removed).items():
        rec = graph.layers[fqn]
        n_out, n_in = len(graph.out_roots[fqn]), len(graph.in_roots[fqn])
        if len(ko) == n_out and len(ki) == n_in:
            continue
        m = modules.get(fqn)
        if m is None:
            raise UnsupportedLayerError(f"layer '{fqn}' was traced but is no longer in the model")
        kind = leaf_kind(m)
        if kind != rec.kind:
            raise UnsupportedLayerError(f"layer '{fqn}' changed type since the trace ({rec.kind} -> {kind})")
        if rec.out_base < 0:
            ko = ki
        rule = rule_of_kind(kind)
        slicer = rule.slice if rule is not None else SLICERS[kind]
        slicer(m, ko if rec.out_base >= 0 else ki, ki if n_in else list(range(_in_width(m))))
        changed[fqn] = (n_out - len(ko)) + (n_in - len(ki))
        log.debug("sliced %s: out %d -> %d, in %d -> %d", fqn, n_out, len(ko), n_in, len(ki))
    rewrite_splits_(model, graph.split_sizes(removed))
    return changed


def _in_width(m: nn.Module) -> int:
    for attr in ("in_channels", "in_features", "num_features", "num_channels", "num_parameters"):
        if hasattr(m, attr):
            return int(getattr(m, attr))
    return 0
