"""The reference of the equivalence invariant: the original model with channels *zeroed*.

Definition: run the original model once under the tracer and, right after every op and every traced
layer, set to zero each tensor element that carries a removed channel (any member channel of a removed
group channel: the producer's output, the BN/activation outputs of that channel, its copies through
concat/split/shuffle/pixel-shuffle, and so on). Zeroing only the producer's output would not be enough:
BN, biases and activations such as sigmoid map 0 to non-zero values. Physically removing the channel
leaves consumers with exactly zero contribution from it, so ``pruned(x) == zeroed_forward(...)`` up to
float rounding. That is what the equivalence tests assert.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from torch import nn

from slimcnn.graph._graph import ChannelGraph
from slimcnn.graph._trace import run_trace


def zeroed_forward(
    model: nn.Module,
    example_input: Any,
    graph: ChannelGraph,
    removal: Mapping[int | str, Iterable[int]],
) -> Any:
    """Output of the *unmodified* ``model`` with the channels of ``removal`` zeroed everywhere they flow.

    Args:
        model: the original model (not modified).
        example_input: same convention as :func:`slimcnn.graph.trace`.
        graph: ``trace(model, example_input)``.
        removal: ``{group id: [group channels]}`` or ``{producer FQN: [output channels]}``.

    Returns:
        The model output of that forward.
    """
    removed = graph.removed_roots(removal)
    root = graph._root
    zero_ids: set[tuple[str, int]] = set()
    for i, own in enumerate(graph.state.owners()):
        if root[i] in removed:
            zero_ids.add(own)
    _, out = run_trace(model, example_input, zero_mask=lambda fqn, c: (fqn, c) in zero_ids)
    return out
