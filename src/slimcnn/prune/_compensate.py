"""Mean compensation ("bias folding") for pruned channels, and the entry point of both modes (:func:`compensation`;
least squares: :mod:`slimcnn.prune._lsq`).

Removing a channel drops its whole contribution to the layers that read it, including its constant part
(a bias passed through an activation). On narrow networks that constant can dominate: removing channel
3 of the last 12-channel mapping layer of FSRCNN x3 costs 11.4 dB PSNR before retraining, 3.7 dB with
compensation (photos-val; docs/readme/prune.md has more numbers). Mean compensation replaces each
removed channel by its mean activation over calibration data, folded into the bias of every layer that
reads it: the "mean replacement" of [Evci et al. 2018](https://openreview.net/forum?id=BJxRVnC5Fm)
("bias propagation"), applied to physically removed channels.

For a consumer conv reading removed input channels ``C`` with calibration means ``mean[c]``::

    bias[o] += sum_{c in C (inside o's group), kh, kw} W[o, c, kh, kw] * mean[c]

for a Linear ``bias[o] += sum_{c in C} W[o, c] * mean[c]``, and for a ConvTranspose (weight
``[in, out/groups, kh, kw]``) the sum over ``W[c, o, :, :]`` divided by the product of its strides.

The fold is exact (the pruned model equals the original with the removed channels replaced by their
means at the consumers' inputs) for consumers whose every output sees every kernel tap: Linear, 1×1
convs, and convs without padding. It is approximate

- at image borders of ``k > 1`` convs with zero padding (the padded taps read 0, not the mean), and
- for strided ConvTranspose, whose output positions see different subsets of the kernel taps; the fold
  adds the average over those positions (total tap sum / prod(stride)).

Only conv / ConvTranspose / Linear consumers are compensated; other layers reading a removed channel
(e.g. :class:`~slimcnn.graph.ChannelScatter`) see it as zero, as without compensation. The means are
taken in eval mode on the *unpruned* model.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from slimcnn.errors import ConfigError, UnsupportedLayerError
from slimcnn.graph import ChannelGraph

COMPENSATED_KINDS = ("conv", "convt", "linear")
"""Consumer layer kinds whose bias absorbs the removed channels' means."""


def bias_delta(
    weight: Tensor,
    mean: Tensor,
    *,
    kind: str,
    groups: int = 1,
    stride: Sequence[int] = (),
) -> Tensor:
    """Per-output bias produced by a constant input ``mean`` through a conv, ConvTranspose or Linear.

    Args:
        weight: ``conv``: Tensor[out, in/groups, *kernel]; ``convt``: Tensor[in, out/groups, *kernel];
            ``linear``: Tensor[out, in].
        mean (Tensor[in]): constant value of each input channel / feature (0 for channels not folded).
        kind: ``conv``, ``convt`` or ``linear``.
        groups: the layer's ``groups`` (conv / ConvTranspose).
        stride: ConvTranspose strides; the tap sum is divided by their product (the average over the
            output positions, which see different taps).

    Returns:
        Tensor[out] in float64.

    Raises:
        ValueError: ``kind`` is not one of the three, or ``mean`` does not match the input width.
    """
    w = weight.detach().double()
    m = mean.detach().double().to(w.device)
    if kind == "linear":
        if m.numel() != w.shape[1]:
            raise ValueError(f"mean has {m.numel()} features, the Linear weight {w.shape[1]}")
        return w @ m
    if kind not in ("conv", "convt"):
        raise ValueError(f"bias_delta expects kind conv, convt or linear, got '{kind}'")
    k = w.flatten(2).sum(-1) if w.dim() > 2 else w
    g = int(groups)
    if kind == "conv":
        n_out, per_in = k.shape
        if m.numel() != per_in * g:
            raise ValueError(f"mean has {m.numel()} channels, the conv reads {per_in * g}")
        d = torch.einsum("goi,gi->go", k.reshape(g, n_out // g, per_in), m.reshape(g, per_in))
        return d.reshape(n_out)
    n_in, per_out = k.shape
    if m.numel() != n_in:
        raise ValueError(f"mean has {m.numel()} channels, the ConvTranspose reads {n_in}")
    d = torch.einsum("gio,gi->go", k.reshape(g, n_in // g, per_out), m.reshape(g, n_in // g))
    return d.reshape(g * per_out) / math.prod(int(s) for s in stride)


def removed_inputs(graph: ChannelGraph, removed: set[int]) -> dict[str, list[int]]:
    """``{consumer FQN: removed input channels}`` for every conv / ConvTranspose / Linear reading a removed
    channel (Linear after a flatten: the removed input features)."""
    res: dict[str, list[int]] = {}
    for fqn, rec in graph.layers.items():
        if rec.kind not in COMPENSATED_KINDS:
            continue
        cs = [c for c, r in enumerate(graph.in_roots[fqn]) if r >= 0 and r in removed]
        if cs:
            res[fqn] = cs
    return res


def _run(model: nn.Module, batches: Iterable[Any], handles: Sequence[Any]) -> None:
    """Run ``model`` in eval mode without gradients over ``batches``, then remove the hooks ``handles`` and
    restore its mode."""
    device = next((p.device for p in model.parameters()), torch.device("cpu"))

    def to(x: Any) -> Any:
        return x.to(device) if isinstance(x, Tensor) else x

    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            for x in batches:
                if isinstance(x, tuple):
                    model(*(to(t) for t in x))
                else:
                    model(to(x))
    finally:
        for h in handles:
            h.remove()
        model.train(was)


def input_means(model: nn.Module, layers: Iterable[str], batches: Iterable[Any]) -> dict[str, Tensor]:
    """Mean of every input channel of ``layers`` over ``batches`` (float64).

    Conv / ConvTranspose inputs are averaged over all axes but 1 (N, H, W), Linear inputs over all axes
    but the last. A layer called several times per forward averages over all its calls.

    Args:
        model: the model (run in eval mode, without gradients; its mode is restored).
        layers: FQNs of conv / ConvTranspose / Linear modules of ``model``.
        batches: model inputs (a tuple is unpacked as ``model(*x)``), moved to the model's device.

    Returns:
        ``{FQN: Tensor[in channels]}`` for every layer that ran.
    """
    mods = dict(model.named_modules())
    sums: dict[str, Tensor] = {}
    counts: dict[str, int] = {}

    def hook(fqn: str, linear: bool) -> Callable[[nn.Module, tuple[Any, ...]], None]:
        def fn(m: nn.Module, args: tuple[Any, ...]) -> None:
            x = args[0] if args else None
            if not isinstance(x, Tensor):
                return
            x = x.detach().double()
            x = x.reshape(-1, x.shape[-1]) if linear else x.movedim(1, -1).reshape(-1, x.shape[1])
            sums[fqn] = sums.get(fqn, torch.zeros(x.shape[1], dtype=torch.float64, device=x.device)) + x.sum(0)
            counts[fqn] = counts.get(fqn, 0) + x.shape[0]
        return fn

    handles = []
    for f in layers:
        if f not in mods:
            raise UnsupportedLayerError(f"layer '{f}' was traced but is not in the model")
        handles.append(mods[f].register_forward_pre_hook(hook(f, isinstance(mods[f], nn.Linear))))
    _run(model, batches, handles)
    return {f: (s / max(counts[f], 1)).cpu() for f, s in sums.items()}


def compensation_deltas(
    model: nn.Module, graph: ChannelGraph, removed: set[int], batches: Sequence[Any], *, skip: Collection[str] = ()
) -> dict[str, Tensor]:
    """Bias deltas that fold the removed channels' calibration means into their consumers.

    Call on the *unpruned* model (the trace ``graph`` of it), then :func:`apply_bias_deltas_` after
    :func:`~slimcnn.prune.prune_`.

    Args:
        model: the unpruned model.
        graph: its trace.
        removed: atom roots to remove (``graph.removed_roots(removal)``).
        batches: calibration inputs (e.g. ``task.calibration_batches(8)``).
        skip: consumers compensated otherwise (refitted by :func:`least_squares_fits`); no pass over the
            batches when none is left.

    Returns:
        ``{consumer FQN: Tensor[original output channels]}`` (float64, on the CPU).

    Raises:
        ConfigError: ``batches`` is empty, or a consumer never ran on them.
    """
    consumers = {f: cs for f, cs in removed_inputs(graph, removed).items() if f not in skip}
    if not consumers:
        return {}
    if not batches:
        raise ConfigError("mean compensation needs calibration batches: pass --task/--data (or batches=[...])")
    means = input_means(model, consumers, batches)
    mods = dict(model.named_modules())
    deltas: dict[str, Tensor] = {}
    for fqn, cs in consumers.items():
        if fqn not in means:
            raise ConfigError(f"'{fqn}' reads removed channels but did not run on the calibration batches")
        m = mods[fqn]
        mean = torch.zeros_like(means[fqn])
        mean[cs] = means[fqn][cs]
        kind = graph.layers[fqn].kind
        deltas[fqn] = bias_delta(m.weight, mean, kind=kind, groups=int(getattr(m, "groups", 1)),
                                 stride=tuple(getattr(m, "stride", ()))).cpu()
    return deltas


def apply_bias_deltas_(model: nn.Module, graph: ChannelGraph, removed: set[int], deltas: dict[str, Tensor]) -> None:
    """Add the kept outputs' share of ``deltas`` to each (already pruned) consumer's bias.

    A consumer without a bias gets one (an ``nn.Parameter`` of zeros plus the delta, in the weight's
    dtype and device).

    Args:
        model: the model after :func:`~slimcnn.prune.prune_` with the same ``removed``.
        graph: the trace of the *unpruned* model (maps original output channels to kept ones).
        removed: the removed atom roots.
        deltas: from :func:`compensation_deltas`.

    Raises:
        UnsupportedLayerError: a consumer's width does not match the kept channels.
    """
    mods = dict(model.named_modules())
    kept = graph.kept(removed)
    for fqn, delta in deltas.items():
        m = mods[fqn]
        ko = kept[fqn][0] if graph.out_roots[fqn] else list(range(delta.numel()))
        d = delta[ko]
        w = m.weight
        n_out = int(w.shape[1] * m.groups) if graph.layers[fqn].kind == "convt" else int(w.shape[0])
        if d.numel() != n_out:
            raise UnsupportedLayerError(f"'{fqn}' has {n_out} outputs after pruning, expected {d.numel()}")
        d = d.to(dtype=w.dtype, device=w.device)
        with torch.no_grad():
            if m.bias is None:
                m.bias = nn.Parameter(d.clone(), requires_grad=w.requires_grad)
            else:
                m.bias.add_(d)


COMPENSATIONS = ("mean", "lsq")
"""``compensate`` modes: ``mean`` folds the removed channels' means into the consumers' biases; ``lsq`` refits
every conv / ConvTranspose / Linear consumer (weights and bias) by least squares to its original output."""


def compensation_mode(compensate: bool | str | None) -> str | None:
    """``compensate`` as a mode: ``False``/``None``/``"none"`` -> None, ``True``/``"mean"`` -> ``"mean"``,
    ``"lsq"`` -> ``"lsq"``.

    Raises:
        ConfigError: any other value.
    """
    if compensate is None or compensate is False or compensate == "none":
        return None
    if compensate is True:
        return "mean"
    if compensate in COMPENSATIONS:
        return str(compensate)
    raise ConfigError(f"--compensate must be one of none, {', '.join(COMPENSATIONS)}; got '{compensate}'")


@dataclass(frozen=True)
class Compensation:
    """What :func:`compensation` computed on the unpruned model, to write into the pruned one."""

    deltas: dict[str, Tensor] = field(default_factory=dict)
    """Mean folding: ``{consumer: bias delta}`` (:func:`compensation_deltas`)."""
    fits: dict[str, tuple[Tensor, Tensor]] = field(default_factory=dict)
    """Least squares: ``{consumer: (weight, bias)}`` (:func:`least_squares_fits`)."""

    def __bool__(self) -> bool:
        return bool(self.deltas or self.fits)

    def apply_(self, model: nn.Module, graph: ChannelGraph, removed: set[int]) -> None:
        """Write both into ``model``, pruned with the same ``removed``."""
        from slimcnn.prune._lsq import apply_fits_

        apply_bias_deltas_(model, graph, removed, self.deltas)
        apply_fits_(model, self.fits)


def compensation(model: nn.Module, graph: ChannelGraph, removed: set[int], batches: Sequence[Any],
                 mode: str | None) -> Compensation:
    """The ``mode`` (:func:`compensation_mode`) compensation of removing ``removed`` from the unpruned ``model``:
    ``lsq`` refits the consumers :func:`least_squares_fits` can and mean-folds the others."""
    from slimcnn.prune._lsq import least_squares_fits  # it builds on this module's helpers

    if mode is None:
        return Compensation()
    fits = least_squares_fits(model, graph, removed, batches) if mode == "lsq" else {}
    return Compensation(compensation_deltas(model, graph, removed, batches, skip=fits.keys()), fits)
