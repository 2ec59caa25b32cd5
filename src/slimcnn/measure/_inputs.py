"""Normalise the many shapes an ``example_input`` can take into one call convention."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from slimcnn.errors import ConfigError

ExampleInput = Any
"""A ``Tensor`` (``model(x)``), a ``list`` of tensors passed as *one* argument (torchvision
detection models take ``model([img])``), a ``tuple`` of positional arguments (``model(*t)``)
or a ``dict`` of keyword arguments (``model(**d)``)."""


MAX_INPUT_ELEMENTS = 2**28
"""Largest example input accepted (elements): 268 M, 1 GiB as float32 — far above any real image batch."""


def check_input_shape(shape: Sequence[int], *, max_elements: int = MAX_INPUT_ELEMENTS) -> tuple[int, ...]:
    """Refuse an example-input shape that cannot be a real input before anything is allocated.

    Args:
        shape: e.g. ``(1, 3, 224, 224)`` (what ``--input 1x3x224x224`` parses to).
        max_elements: the limit on the product of the dimensions (default :data:`MAX_INPUT_ELEMENTS`).

    Returns:
        The shape as a tuple of ints.

    Raises:
        ConfigError: a dimension < 1, or more than ``max_elements`` elements (one line naming ``--input``).

    Example:
        >>> check_input_shape((1, 3, 224, 224))
        (1, 3, 224, 224)
    """
    dims = tuple(int(d) for d in shape)
    text = "x".join(str(d) for d in dims)
    if not dims or any(d < 1 for d in dims):
        raise ConfigError(f"--input expects positive dimensions like 1x3x224x224, got '{text}'")
    n = math.prod(dims)
    if n > max_elements:
        raise ConfigError(
            f"--input {text} has {n:,} elements ({n * 4 / 2**30:,.1f} GiB as float32), more than the "
            f"{max_elements:,} slimcnn allocates; pass a realistic shape like 1x3x224x224"
        )
    return dims


def call_args(example_input: ExampleInput) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Split ``example_input`` into ``(args, kwargs)`` following :data:`ExampleInput`."""
    if isinstance(example_input, torch.Tensor):
        return (example_input,), {}
    if isinstance(example_input, list):
        return (example_input,), {}
    if isinstance(example_input, tuple):
        return example_input, {}
    if isinstance(example_input, Mapping):
        return (), dict(example_input)
    raise ConfigError(
        f"example_input must be a Tensor, a list (one argument), a tuple (positional arguments) or a "
        f"dict (keyword arguments); got {type(example_input).__name__}"
    )


def first_tensor(obj: Any) -> torch.Tensor | None:
    """The first tensor found in a (nested) tuple/list/dict, or ``None``."""
    if isinstance(obj, torch.Tensor):
        return obj
    if isinstance(obj, Mapping):
        obj = list(obj.values())
    if isinstance(obj, (list, tuple)):
        for item in obj:
            t = first_tensor(item)
            if t is not None:
                return t
    return None


def tensors_in(obj: Any) -> list[torch.Tensor]:
    """All tensors in a (nested) tuple/list/dict or a dataclass-like object with ``__dict__``."""
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, Mapping):
        obj = list(obj.values())
    if isinstance(obj, (list, tuple)):
        return [t for item in obj for t in tensors_in(item)]
    return []


def input_shape(example_input: ExampleInput) -> tuple[int, ...]:
    """Shape of the first tensor in ``example_input`` (``()`` when there is none)."""
    t = first_tensor(example_input)
    return tuple(t.shape) if t is not None else ()


def to_device(example_input: ExampleInput, device: str | torch.device) -> ExampleInput:
    """Move every tensor of ``example_input`` to ``device``, keeping the container types."""
    if isinstance(example_input, torch.Tensor):
        return example_input.to(device)
    if isinstance(example_input, Mapping):
        return {k: to_device(v, device) for k, v in example_input.items()}
    if isinstance(example_input, (list, tuple)):
        return type(example_input)(to_device(v, device) for v in example_input)
    return example_input


def run_model(model: nn.Module, example_input: ExampleInput) -> Any:
    """Call ``model`` with ``example_input`` following :data:`ExampleInput`."""
    args, kwargs = call_args(example_input)
    return model(*args, **kwargs)


def forward_error(model: nn.Module, example_input: ExampleInput, err: Exception) -> ConfigError:
    """A one-line :class:`ConfigError` for a forward that failed on ``example_input``.

    Names the input shape and, when the first conv/linear layer tells it, the channels expected.
    """
    shape = input_shape(example_input)
    expected = ""
    for m in model.modules():
        if isinstance(m, nn.modules.conv._ConvNd):
            expected = f"; the first conv expects {m.in_channels} input channels"
            if len(shape) == len(m.kernel_size) + 1:  # 3x224x224: the batch dimension is missing
                expected += f" and a batch dimension first, e.g. --input 1x{'x'.join(str(d) for d in shape)}"
            break
        if isinstance(m, nn.Linear):
            expected = f"; the first linear layer expects {m.in_features} input features"
            break
    shape_txt = "x".join(str(d) for d in shape) or type(example_input).__name__
    reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return ConfigError(
        f"the model's forward failed on input {shape_txt}{expected} ({type(err).__name__}: {reason[:200]}); "
        "pass a matching --input shape"
    )


def clone_tensors(obj: Any) -> Any:
    """``obj`` with every tensor in it (nested in lists, tuples and dicts) detached and copied: one run's input or
    output that a later run must not see changed (a forward that writes into its input, a cached activation)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().clone()
    if isinstance(obj, (list, tuple)):
        items = [clone_tensors(o) for o in obj]
        return type(obj)(*items) if hasattr(obj, "_fields") else type(obj)(items)  # a namedtuple takes its fields
    if isinstance(obj, dict):
        return {k: clone_tensors(v) for k, v in obj.items()}
    return obj
