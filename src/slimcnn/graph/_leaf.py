"""Parameterised layers the tracer treats as one unit (their internals are not traced)."""

from __future__ import annotations

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.instancenorm import _InstanceNorm


def _frozen_bn() -> tuple[type, ...]:
    try:
        from torchvision.ops.misc import FrozenBatchNorm2d
    except ImportError:  # pragma: no cover - torchvision is a core dependency
        return ()
    return (FrozenBatchNorm2d,)


_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_CONVT = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_BN = (_BatchNorm, *_frozen_bn())
LEAF_TYPES: tuple[type, ...] = (*_CONV, *_CONVT, nn.Linear, *_BN, nn.GroupNorm, _InstanceNorm, nn.PReLU)
"""Layer types with a handler: producers (conv, transposed conv, linear) and per-channel layers."""


def leaf_kind(module: nn.Module) -> str:
    """``conv``, ``convt``, ``linear``, ``bn``, ``gn``, ``in`` or ``prelu``."""
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
