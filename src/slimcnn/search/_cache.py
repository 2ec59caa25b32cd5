"""Activation caching for sweeps: replay the outputs of modules a change cannot affect.

A transform changes some modules (found by diffing the transformed copy against the original).
Every module whose whole execution finishes before the first changed module runs computes exactly
what it computed on the original model, so its outputs are recorded once (on the original, over the
evaluation data) and replayed; only the part of the network after the change is re-run.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from slimcnn.measure._inputs import call_args


def execution_spans(model: nn.Module, example_input: Any) -> dict[str, tuple[int, int]]:
    """``{fqn: (first start, last end)}`` call-counter spans from one forward pass."""
    clock = [0]
    spans: dict[str, list[int]] = {}
    hooks = []
    for name, module in model.named_modules():
        if not name:
            continue

        def pre(m: nn.Module, args: Any, name: str = name) -> None:
            clock[0] += 1
            spans.setdefault(name, [clock[0], clock[0]])

        def post(m: nn.Module, args: Any, out: Any, name: str = name) -> None:
            clock[0] += 1
            spans[name][1] = clock[0]

        hooks.append(module.register_forward_pre_hook(pre))
        hooks.append(module.register_forward_hook(post))
    try:
        args, kwargs = call_args(example_input)
        with torch.inference_mode():
            model(*args, **kwargs)
    finally:
        for h in hooks:
            h.remove()
    return {k: (v[0], v[1]) for k, v in spans.items()}


def changed_modules(original: nn.Module, modified: nn.Module) -> set[str]:
    """FQNs whose type, parameters or buffers differ between the two models (leaf-level state)."""
    orig = dict(original.named_modules())
    changed = set()
    for name, mod in modified.named_modules():
        ref = orig.get(name)
        if ref is None or type(ref) is not type(mod):
            changed.add(name)
            continue
        a = dict(mod.named_parameters(recurse=False)) | dict(mod.named_buffers(recurse=False))
        b = dict(ref.named_parameters(recurse=False)) | dict(ref.named_buffers(recurse=False))
        if a.keys() != b.keys() or any(a[k].shape != b[k].shape or not torch.equal(a[k], b[k]) for k in a):
            changed.add(name)
    return changed


def cacheable_modules(spans: dict[str, tuple[int, int]], changed: set[str]) -> list[str]:
    """Maximal modules that finish before the first changed module starts (replayable)."""
    starts = [spans[n][0] for n in changed if n in spans]
    if not starts:
        return []
    first = min(starts)
    before = {n for n, (_, end) in spans.items() if end < first}
    # Ancestors of a changed module are never cacheable (they contain the change).
    return sorted(n for n in before if not _has_ancestor_in(n, before))


def _has_ancestor_in(name: str, names: set[str]) -> bool:
    parts = name.split(".")
    return any(".".join(parts[:i]) in names for i in range(1, len(parts)))


class Recording:
    """Outputs of some modules over one evaluation pass, in call order."""

    def __init__(self, names: list[str]) -> None:
        self.names = names
        self.outputs: dict[str, list[Any]] = {n: [] for n in names}
        self.bytes = 0

    def record(self, model: nn.Module) -> list[Any]:
        """Attach recording hooks; returns handles to remove."""
        hooks = []
        for name in self.names:
            def hook(m: nn.Module, args: Any, out: Any, name: str = name) -> None:
                stored = _clone(out)
                self.outputs[name].append(stored)
                self.bytes += _nbytes(stored)

            hooks.append(model.get_submodule(name).register_forward_hook(hook))
        return hooks

    def install(self, model: nn.Module) -> None:
        """Swap the recorded modules of ``model`` (a transformed copy) for replays."""
        for name in self.names:
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, _Replay(self.outputs[name]))


class _Replay(nn.Module):
    """Returns the recorded outputs one call at a time (a clone: downstream ops may work in place)."""

    def __init__(self, outputs: list[Any]) -> None:
        super().__init__()
        self._outputs = outputs
        self._i = 0

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if self._i >= len(self._outputs):
            raise RuntimeError("activation cache exhausted: the evaluation order changed between runs")
        out = self._outputs[self._i]
        self._i += 1
        return _clone(out)


def _clone(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().clone()
    if isinstance(obj, (list, tuple)):
        return type(obj)(_clone(o) for o in obj)
    if isinstance(obj, dict):
        return {k: _clone(v) for k, v in obj.items()}
    return obj


def _nbytes(obj: Any) -> int:
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, (list, tuple)):
        return sum(_nbytes(o) for o in obj)
    if isinstance(obj, dict):
        return sum(_nbytes(o) for o in obj.values())
    return 0
