"""Parameterised layers the tracer treats as one unit (their internals are not traced)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.instancenorm import _InstanceNorm

from slimcnn.graph._layer_rules import find_channel_rule, rule_kind


def _frozen_bn() -> tuple[type, ...]:
    try:
        from torchvision.ops.misc import FrozenBatchNorm2d
    except ImportError:  # pragma: no cover - torchvision is a core dependency
        return ()
    return (FrozenBatchNorm2d,)


class ChannelScatter(nn.Module):
    """Parameter-free layer that copies input channel ``c`` to output channel ``index[c]`` (``-1``: dropped)
    and fills every other output channel with zeros — e.g. the option-A zero-pad shortcut.

    The tracer treats it as a producer, so its input and output channels prune *independently*: a removed
    input leaves a zero output channel, a removed output drops its input, exactly as in the original with
    those channels zeroed. Subclass it (and call :meth:`route` in ``forward``) to make a custom routing
    layer prunable without coupling the two sides.
    """

    def __init__(self, index: Sequence[int], out_channels: int) -> None:
        super().__init__()
        self.index = [int(i) for i in index]
        self.out_channels = int(out_channels)

    @property
    def in_channels(self) -> int:
        return len(self.index)

    def route(self, x: Tensor) -> Tensor:
        """``x (Tensor[N, C_in, ...])`` -> ``Tensor[N, C_out, ...]``."""
        n = len(self.index)
        lo = self.index[0] if n else 0
        if n and self.index == list(range(lo, lo + n)):  # contiguous: a plain Pad in ONNX
            if n == self.out_channels:
                return x
            pad = [0, 0] * (x.dim() - 2) + [lo, self.out_channels - lo - n]
            return F.pad(x, pad)
        src = [n] * self.out_channels
        for c, o in enumerate(self.index):
            if o >= 0:
                src[o] = c
        zero = x.new_zeros((x.shape[0], 1, *x.shape[2:]))
        return torch.cat([x, zero], 1).index_select(1, torch.tensor(src, device=x.device))

    def prune_channels_(self, kept_out: Sequence[int], kept_in: Sequence[int]) -> None:
        """Keep output channels ``kept_out`` and input channels ``kept_in`` (old indices, ascending)."""
        new_pos = {o: k for k, o in enumerate(kept_out)}
        self.index = [new_pos.get(self.index[c], -1) for c in kept_in]
        self.out_channels = len(kept_out)


_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_CONVT = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_BN = (_BatchNorm, *_frozen_bn())
LEAF_TYPES: tuple[type, ...] = (ChannelScatter, *_CONV, *_CONVT, nn.Linear, *_BN, nn.GroupNorm, _InstanceNorm, nn.PReLU)
"""Built-in layer types with a handler: producers (conv, transposed conv, linear) and per-channel layers.
Types with a :func:`~slimcnn.graph.register_channel_rule` rule are leaves too (see :func:`is_leaf`)."""
BUILTIN_LEAF_TYPES = LEAF_TYPES


def is_builtin(module: nn.Module) -> bool:
    """Whether ``module``'s class is torch's or torchvision's own (a subclass, e.g. timm's ``ScaledStdConv2d``, has a
    forward of its own that may read more than the tensors pruning slices)."""
    return type(module).__module__.split(".")[0] in ("torch", "torchvision")


def is_leaf(module: nn.Module) -> bool:
    """True for a layer the tracer treats as one unit: a built-in handled type or one with a channel rule."""
    return isinstance(module, LEAF_TYPES) or find_channel_rule(type(module)) is not None


def leaf_kind(module: nn.Module) -> str:
    """``scatter``, ``conv``, ``convt``, ``linear``, ``bn``, ``gn``, ``in``, ``prelu`` or, for a type with a
    registered channel rule, ``rule:<module>.<qualname>``."""
    if not isinstance(module, LEAF_TYPES) and find_channel_rule(type(module)) is not None:
        return rule_kind(type(module))
    if isinstance(module, ChannelScatter):
        return "scatter"
    if isinstance(module, _CONVT):
        return "convt"
    if isinstance(module, _CONV):
        return "conv"
    if isinstance(module, nn.Linear):
        return "linear"
    if isinstance(module, nn.GroupNorm):
        return "gn"
    if isinstance(module, _InstanceNorm):
        return "in"
    if isinstance(module, nn.PReLU):
        return "prelu"
    return "bn"
