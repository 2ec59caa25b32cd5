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

from slimcnn.measure._inputs import call_args, clone_tensors


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
    """Outputs of modules of the *original* model over one evaluation pass, in call order.

    Recordings accumulate across knobs: the sweep primes them in one pass for every knob, and a knob
    whose prefix was not primed records only the modules it lacks (replaying what is stored).
    """

    def __init__(self) -> None:
        self.outputs: dict[str, list[Any]] = {}
        self.sizes: dict[str, int] = {}

    @property
    def bytes(self) -> int:
        """Bytes held by all stored outputs."""
        return sum(self.sizes.values())

    def missing(self, names: list[str]) -> list[str]:
        """Those of ``names`` not recorded yet."""
        return [n for n in names if n not in self.outputs]

    def record(self, model: nn.Module, names: list[str], max_bytes: int | None = None) -> list[Any]:
        """Attach hooks to ``model`` that record ``names``; returns handles to remove.

        With ``max_bytes``, a module whose output would push the total past it stops being recorded
        and is dropped after the pass (see :meth:`drop_incomplete`).
        """
        hooks = []
        self.incomplete: set[str] = set()
        for name in names:
            self.outputs[name], self.sizes[name] = [], 0

            def hook(m: nn.Module, args: Any, out: Any, name: str = name) -> None:
                if name in self.incomplete:
                    return
                size = _nbytes(out)
                if max_bytes is not None and self.bytes + size > max_bytes:
                    self.incomplete.add(name)
                    return
                self.outputs[name].append(clone_tensors(out))
                self.sizes[name] += size

            hooks.append(model.get_submodule(name).register_forward_hook(hook))
        return hooks

    def drop_incomplete(self) -> list[str]:
        """Discard modules whose recording stopped at the byte limit; returns them."""
        dropped = sorted(getattr(self, "incomplete", set()))
        self.discard(dropped)
        self.incomplete = set()
        return dropped

    def forget(self, keep: set[str]) -> None:
        """Drop every recorded module not in ``keep`` (to bound memory)."""
        for name in [n for n in self.outputs if n not in keep]:
            del self.outputs[name], self.sizes[name]

    def discard(self, names: list[str]) -> None:
        """Drop ``names`` (e.g. a recording pass that failed half-way)."""
        for name in names:
            self.outputs.pop(name, None)
            self.sizes.pop(name, None)

    def install(self, model: nn.Module, names: list[str] | None = None) -> list[str]:
        """Swap recorded modules of ``model`` (a copy) for replays; returns the names swapped.

        Only outermost recorded modules are swapped (a replayed container never runs its children).
        """
        wanted = set(self.outputs if names is None else names)
        outer = [n for n in wanted if n in self.outputs and not _has_ancestor_in(n, wanted)]
        for name in outer:
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            replay, old = _Replay(self.outputs[name]), getattr(parent, child)
            for attr in ("f", "i", "type", "np"):  # ultralytics' forward routes by these attributes of its layers
                if attr in vars(old):
                    setattr(replay, attr, vars(old)[attr])
            setattr(parent, child, replay)
        return outer


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
        return clone_tensors(out)


def _nbytes(obj: Any) -> int:
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, (list, tuple)):
        return sum(_nbytes(o) for o in obj)
    if isinstance(obj, dict):
        return sum(_nbytes(o) for o in obj.values())
    return 0
