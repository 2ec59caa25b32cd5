"""User-registered channel rules: make a custom layer type prunable without editing slimcnn.

A layer the tracer does not know is traced through its ops; a per-channel parameter it multiplies or
adds, or an op the tracer cannot map (a direct ``F.conv2d``), then *protects* the channels it touches.
Registering a :class:`ChannelRule` for the type makes the tracer treat the layer as one unit (its
internals are not traced) with the coupling the rule declares, and makes surgery call the rule's
``slice``. The pruned model then equals the original with the removed channels zeroed, as for the
built-in layers, provided the rule is truthful.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from torch import Tensor, nn

from slimcnn.errors import ConfigError, UnknownNameError, unknown_name

Slice = Callable[[nn.Module, list[int], list[int]], None]


@dataclass(frozen=True)
class ChannelRule:
    """How the tracer and surgery treat one custom layer type.

    Example (a per-channel scale with its own parameter)::

        class ChannelScale(nn.Module):
            def __init__(self, c): super().__init__(); self.scale = nn.Parameter(torch.ones(c))
            def forward(self, x): return x * self.scale.view(1, -1, 1, 1)

        def slice_scale(m, kept_out, kept_in):
            m.scale = nn.Parameter(m.scale.detach()[kept_in].clone())

        register_channel_rule(ChannelScale, ChannelRule(slice=slice_scale))
    """

    slice: Slice
    """``slice(module, kept_out, kept_in)``: keep these channels (old indices, ascending) and update the
    module's attributes to the new widths. A ``channelwise`` layer gets ``kept_out == kept_in``. It must
    *assign new* tensors (``m.w = nn.Parameter(m.w[kept].clone())``), not write into the old ones: a
    refused pruning restores the model by re-binding the old tensors."""
    couples: Literal["channelwise", "producer"] = "channelwise"
    """``channelwise``: output channel ``c`` depends on input channel ``c`` only (a per-channel scale or
    norm, an activation with per-channel parameters, a depthwise filter with one output per input), so
    input and output channel ``c`` are removed together; the output must have the input's channel
    count. ``producer``: the layer makes new output channels from all its inputs (a conv or linear with
    its own weight layout); input and output channels prune independently (``groups`` ties them)."""
    groups: Callable[[nn.Module], int] | None = None
    """``producer`` only: the layer's groups, like ``nn.Conv2d.groups``: input and output channels of a
    group go together and only whole groups can be removed. None = 1."""
    filters: Callable[[nn.Module], Tensor] | None = None
    """``producer`` only: the weight as ``Tensor[out, -1]`` (one row per output channel), used by the
    weight-norm criteria ``l1``/``l2``/``sparsity``; without it those criteria do not score the layer's
    outputs (``bn_scale``, ``taylor``, ``chip``, ``random`` still can)."""
    channel_dim: int = 1
    """Channel axis of the layer's input and output tensors (``-1``: features last, as for Linear)."""

    def __post_init__(self) -> None:
        if self.couples not in ("channelwise", "producer"):
            raise ConfigError(f"ChannelRule.couples must be 'channelwise' or 'producer', got {self.couples!r}")
        if not callable(self.slice):
            raise ConfigError(f"ChannelRule.slice must be callable (module, kept_out, kept_in), got {self.slice!r}")
        if self.couples == "channelwise" and (self.groups is not None or self.filters is not None):
            raise ConfigError("ChannelRule: groups/filters apply to couples='producer' only")


_RULES: dict[type, ChannelRule] = {}
_KIND_PREFIX = "rule:"


def _type_name(t: type) -> str:
    return f"{t.__module__}.{t.__qualname__}"


def register_channel_rule(module_type: type[nn.Module], rule: ChannelRule, *, override: bool = False) -> ChannelRule:
    """Register how channels flow through ``module_type`` (and its subclasses) and how to slice it.

    Args:
        module_type: an ``nn.Module`` subclass. Built-in handled layers (Conv, Linear, norms...) cannot be
            overridden.
        rule: the :class:`ChannelRule`.
        override: replace an existing rule for the same type.

    Returns:
        ``rule``.

    Raises:
        ConfigError: ``module_type`` is not an ``nn.Module`` subclass, is a built-in layer, or already has
            a rule and ``override`` is False.
    """
    from slimcnn.graph._leaf import BUILTIN_LEAF_TYPES

    if not (isinstance(module_type, type) and issubclass(module_type, nn.Module)):
        raise ConfigError(f"register_channel_rule expects an nn.Module subclass, got {module_type!r}")
    if issubclass(module_type, BUILTIN_LEAF_TYPES):
        raise ConfigError(f"{module_type.__name__} is a built-in layer with its own handler; a rule cannot replace it")
    if not isinstance(rule, ChannelRule):
        raise ConfigError(f"register_channel_rule expects a ChannelRule, got {type(rule).__name__}")
    if module_type in _RULES and not override:
        raise ConfigError(f"a channel rule for {_type_name(module_type)} is already registered; pass override=True")
    _RULES[module_type] = rule
    return rule


def find_channel_rule(module_type: type) -> ChannelRule | None:
    """The rule of ``module_type`` or of its nearest registered base class, or None."""
    for t in module_type.__mro__:
        rule = _RULES.get(t)
        if rule is not None:
            return rule
    return None


def get_channel_rule(module_type: type[nn.Module] | nn.Module) -> ChannelRule:
    """The registered rule of a layer type (or of a module's type, or of its nearest registered base).

    Raises:
        UnknownNameError: no rule is registered for it (the message lists the registered types).
    """
    t = module_type if isinstance(module_type, type) else type(module_type)
    rule = find_channel_rule(t)
    if rule is None:
        err: UnknownNameError = unknown_name("channel rule for layer type", _type_name(t), list_channel_rules())
        raise err
    return rule


def list_channel_rules() -> list[str]:
    """Fully qualified names of the layer types with a registered rule, sorted."""
    return sorted(_type_name(t) for t in _RULES)


def rule_kind(module_type: type) -> str:
    """The layer kind a rule-handled type gets in the graph: ``rule:<module>.<qualname>``."""
    for t in module_type.__mro__:
        if t in _RULES:
            return _KIND_PREFIX + _type_name(t)
    raise KeyError(module_type)


def rule_of_kind(kind: str) -> ChannelRule | None:
    """The rule behind a ``rule:...`` kind, or None for built-in kinds."""
    if not kind.startswith(_KIND_PREFIX):
        return None
    name = kind[len(_KIND_PREFIX):]
    for t, rule in _RULES.items():
        if _type_name(t) == name:
            return rule
    return None
