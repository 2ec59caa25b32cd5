"""Channel dependency graph of any CNN from one real forward, and physical channel surgery.

``trace(model, x)`` records which channels are coupled (residual adds, concat, split/chunk, flatten ->
Linear, grouped/depthwise conv, per-channel layers, pixel shuffle, channel shuffle, SE multiplies,
pooling/upsampling) and returns a :class:`ChannelGraph`; ``graph.groups()`` lists the
:class:`ChannelGroup` s that must be pruned together. ``slice_layers_`` edits the layers.
``register_channel_rule(MyLayer, ChannelRule(...))`` makes a custom layer type prunable.
"""

from slimcnn.graph._graph import ChannelGraph, ChannelGroup, GroupMember, trace
from slimcnn.graph._layer_rules import (
    ChannelRule,
    get_channel_rule,
    list_channel_rules,
    register_channel_rule,
)
from slimcnn.graph._leaf import LEAF_TYPES, ChannelScatter, is_leaf, leaf_kind
from slimcnn.graph._surgery import SLICERS, register_slicer, slice_layers_
from slimcnn.graph._transaction import ModuleSnapshot, rollback_on_error
from slimcnn.graph._zero import zeroed_forward

__all__ = [
    "LEAF_TYPES",
    "SLICERS",
    "ChannelGraph",
    "ChannelGroup",
    "ChannelRule",
    "ChannelScatter",
    "GroupMember",
    "ModuleSnapshot",
    "get_channel_rule",
    "is_leaf",
    "leaf_kind",
    "list_channel_rules",
    "register_channel_rule",
    "register_slicer",
    "rollback_on_error",
    "slice_layers_",
    "trace",
    "zeroed_forward",
]
