"""Transform families a search can turn: each exposes knobs, a single-knob applier and a combined one.

A family turns an ``assignment`` (``{knob: amount}``) into a transformed copy of the model and
counts its cost. Amounts grow with compression for ratios (``prune``, ``lowrank``, ``kernel``: the
fraction of weights/filters/2-D kernels removed) and shrink for ``kmeans`` (bits per weight).
"""

from __future__ import annotations

import copy
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from torch import nn

from slimcnn.registry import Registry
from slimcnn.search.sensitivity import CostFn, Knob, profile_cost
from slimcnn.train._promises import Promise

if TYPE_CHECKING:
    from slimcnn.graph import ChannelGraph

_GRAPHS: weakref.WeakKeyDictionary[nn.Module, tuple[str, Any, ChannelGraph]] = weakref.WeakKeyDictionary()


def shared_trace(model: nn.Module, example_input: Any) -> ChannelGraph:
    """``trace(model, example_input)``, kept per model object while its structure (module types, parameter
    shapes) and the example input object stay the same.

    A sweep prunes fresh copies of one model hundreds of times; a copy has the model's channel graph (the
    graph names layers, not objects), so one trace serves every trial.
    """
    from slimcnn.graph import trace
    from slimcnn.prune._plan import fingerprint

    fp = fingerprint(model)
    hit = _GRAPHS.get(model)
    if hit is not None and hit[0] == fp and hit[1] is example_input:
        return hit[2]
    graph = trace(model, example_input)
    _GRAPHS[model] = (fp, example_input, graph)
    return graph


class Family(Protocol):
    """What a search needs from a transform family."""

    name: str

    def knobs(self, model: nn.Module, example_input: Any) -> list[Knob]:
        """Where the transform can act and the amounts a sweep tries."""
        ...

    def apply(self, model: nn.Module, knob: Knob, amount: float) -> nn.Module:
        """A copy with one knob turned."""
        ...

    def apply_many(self, model: nn.Module, assignment: dict[str, float]) -> nn.Module:
        """A copy with every knob of ``assignment`` turned."""
        ...

    def cost(self, example_input: Any) -> CostFn:
        """How to count params / MACs / weight bytes of transformed copies."""
        ...

    def details(self, model: nn.Module, assignment: dict[str, float]) -> dict[str, Any]:
        """Concrete, re-appliable facts for ``plan.json`` (kept channels, ranks, bits...)."""
        ...

    def promises(self, model: nn.Module, assignment: dict[str, float]) -> tuple[Promise, ...]:
        """What fine-tuning the transformed ``model`` must keep (:func:`slimcnn.train.keep_promises`)."""
        ...

    def strongest(self, knob: Knob) -> float:
        """The amount of ``knob`` that shrinks its layers most (the sweep's bound on every counted cost)."""
        ...


FAMILIES: Registry[Callable[..., Family]] = Registry("search method")


class _OneKnob:
    """``apply`` is ``apply_many`` with a single knob."""

    def apply(self, model: nn.Module, knob: Knob, amount: float) -> nn.Module:
        return self.apply_many(model, {knob.name: amount})  # type: ignore[attr-defined,no-any-return]

    def strongest(self, knob: Knob) -> float:
        return max(knob.amounts)  # a fraction removed: more is smaller


def width_promises(model: nn.Module) -> tuple[Promise, ...]:
    """A ``shape`` promise for every conv/linear weight of ``model`` (pruned widths never grow back)."""
    return tuple(Promise(n, "shape") for n, m in model.named_modules()
                 if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear)))


@dataclass
class LowRankFamily(_OneKnob):
    """Per-layer low-rank decomposition; amount = fraction of the layer's weights removed."""

    example_input: Any
    amounts: tuple[float, ...] = (0.25, 0.5, 0.75)
    rank_multiple: int = 8
    name: str = "lowrank"

    def _spec(self, layer: str, amount: float) -> Any:
        from slimcnn.lowrank import LowRankSpec

        return LowRankSpec(ratio=1.0 / max(1e-6, 1.0 - amount), rank_multiple=self.rank_multiple,
                           only_faster=False, include=(layer,))

    def knobs(self, model: nn.Module, example_input: Any) -> list[Knob]:
        from slimcnn.lowrank import decompose

        _, probe = decompose(model, example_input, self._spec("*", 0.5), runtime=None)
        return [Knob(r.layer, self.amounts, (r.layer,)) for r in probe.layers if r.replaced]

    def apply_many(self, model: nn.Module, assignment: dict[str, float]) -> nn.Module:
        from slimcnn.lowrank import decompose_

        new = copy.deepcopy(model)
        for layer, amount in assignment.items():
            if amount > 0:
                decompose_(new, self.example_input, self._spec(layer, amount), runtime=None)
        return new

    def cost(self, example_input: Any) -> CostFn:
        return profile_cost(example_input)

    def details(self, model: nn.Module, assignment: dict[str, float]) -> dict[str, Any]:
        ranks = {}
        for name in assignment:
            seq = model.get_submodule(name)
            if isinstance(seq, nn.Sequential):
                ranks[name] = [int(getattr(m, "out_channels", getattr(m, "out_features", 0))) for m in list(seq)[:-1]]
        return {"ranks": ranks}

    def promises(self, model: nn.Module, assignment: dict[str, float]) -> tuple[Promise, ...]:
        """The factors keep their ranks (``shape`` of every conv/linear weight)."""
        return width_promises(model)


@dataclass
class KMeansFamily(_OneKnob):
    """Per-layer k-means weight sharing; amount = bits per weight (fewer = smaller)."""

    example_input: Any
    amounts: tuple[float, ...] = (8, 6, 5, 4, 3, 2)
    codebook: str = "fp32"
    """Centroid storage in ``model.slim``: ``fp32`` or ``fp16`` (half the codebook bytes; the model uses the
    rounded centroids)."""
    name: str = "kmeans"

    def knobs(self, model: nn.Module, example_input: Any) -> list[Knob]:
        from slimcnn.quantize import quantizable_layers

        return [Knob(n, self.amounts, (n,)) for n in quantizable_layers(model)]

    def apply_many(self, model: nn.Module, assignment: dict[str, float]) -> nn.Module:
        if not assignment:
            return copy.deepcopy(model)
        return pack(model, {k: int(v) for k, v in assignment.items()}, self.codebook).model

    def strongest(self, knob: Knob) -> float:
        return min(knob.amounts)  # bits per weight: fewer is smaller

    def cost(self, example_input: Any) -> CostFn:
        dense = profile_cost(example_input)

        def cost(model: nn.Module, assignment: dict[str, float]) -> tuple[int, int, int]:
            params, macs, wbytes = dense(model, assignment)
            bits = {k: int(v) for k, v in assignment.items()}
            return params, macs, wbytes + kmeans_bytes_delta(model, bits, self.codebook)

        return cost

    def details(self, model: nn.Module, assignment: dict[str, float]) -> dict[str, Any]:
        return {"bits": {k: int(v) for k, v in assignment.items()}}

    def promises(self, model: nn.Module, assignment: dict[str, float]) -> tuple[Promise, ...]:
        """Each quantised layer keeps its codebook: centroids train, indices stay (``codebook``, ``bits``)."""
        return tuple(Promise(k, "codebook", bits=int(v)) for k, v in assignment.items())


def kmeans_bytes_delta(model: nn.Module, bits: dict[str, int], codebook: str = "fp32") -> int:
    """Weight bytes that sharing each layer's float32 weight at its bits adds (negative: saves), counting what
    ``model.slim`` stores, codebook included (:func:`~slimcnn.quantize.kmeans_bytes_bound`), and what it saves on
    the other weights by leaving out their all-zero kernels (:func:`~slimcnn.quantize.kernel_stored_weights`)."""
    from slimcnn.quantize import kernel_stored_weights, kmeans_bytes_bound

    delta = -sum(kernel_stored_weights(model, bits).values()) if bits else 0  # no k-means layer: no model.slim
    for layer, b in bits.items():
        w = model.get_submodule(layer).weight.detach()
        delta += kmeans_bytes_bound(w, b, codebook) - 4 * w.numel()  # type: ignore[arg-type]
    return delta


def kmeans_spec(bits: dict[str, int], codebook: str = "fp32", per_channel: bool = False) -> Any:
    """The k-means spec that packs exactly these layers at these bits, its centroids stored as ``codebook``
    (one codebook per output channel with ``per_channel``)."""
    from slimcnn.quantize import KMeansQuantSpec

    return KMeansQuantSpec(bits=tuple((_literal(k), int(b)) for k, b in bits.items()),
                           codebook_dtype=codebook, per_channel=per_channel)  # type: ignore[arg-type]


def pack(model: nn.Module, bits: dict[str, int], codebook: str = "fp32", per_channel: bool = False) -> Any:
    """``model`` with each k-means layer re-shared at its bits (a ``QuantizeResult``: codebooks, indices and the
    model): after a fine-tune that kept the codebooks the model is unchanged; after one that did not, it is the
    model a ``.slim`` file can hold (and is judged)."""
    from slimcnn.quantize import quantize_model

    return quantize_model(model, kmeans_spec(bits, codebook, per_channel))


def _literal(name: str) -> str:
    """Escape fnmatch metacharacters so a layer FQN matches only itself."""
    return "".join(f"[{c}]" if c in "*?[]" else c for c in name)


@dataclass
class PruneFamily(_OneKnob):
    """Filter/channel pruning per coupled group; amount = fraction of the group's channels removed.

    Knobs are named after the group's first producer layer; the criterion ranks channels inside it.
    """

    example_input: Any
    criterion: str = "l1"
    amounts: tuple[float, ...] = (0.25, 0.5, 0.75)
    round_to: int = 1
    exclude: tuple[str, ...] = ()
    task: Any = None
    calib: int = 8
    compensate: bool | str = False
    """``"mean"``/``"lsq"`` compensation of the layers reading removed channels (needs ``task``), or False."""
    source: str = ""
    name: str = "prune"
    last_plan: Any = None

    def knobs(self, model: nn.Module, example_input: Any) -> list[Knob]:
        import fnmatch

        knobs = []
        for g in shared_trace(model, example_input).groups():
            producers = [m.layer for m in g.producers]
            if not g.prunable or not producers:
                continue
            if any(fnmatch.fnmatch(layer, pat) for layer in g.layers() for pat in self.exclude):
                continue
            knobs.append(Knob(producers[0], self.amounts, tuple(g.layers())))
        return knobs

    def apply_many(self, model: nn.Module, assignment: dict[str, float]) -> nn.Module:
        from slimcnn.prune import prune_model_

        new = copy.deepcopy(model)
        ratios = {_literal(k): float(v) for k, v in assignment.items() if v > 0}
        if not ratios:  # nothing pruned: no plan, not the last trial's (the run's plan.json would hold it)
            self.last_plan = None
            return new
        outcome = prune_model_(new, self.example_input, criterion=self.criterion, prune_ratio=ratios,
                               round_to=self.round_to, exclude=self.exclude, task=self.task, calib=self.calib,
                               source=self.source, compensate=self.compensate,
                               graph=shared_trace(model, self.example_input))
        self.last_plan = outcome.plan
        return new

    def cost(self, example_input: Any) -> CostFn:
        return profile_cost(example_input)

    def details(self, model: nn.Module, assignment: dict[str, float]) -> dict[str, Any]:
        return {"prune_plan": self.last_plan.to_dict() if self.last_plan is not None else None}

    def promises(self, model: nn.Module, assignment: dict[str, float]) -> tuple[Promise, ...]:
        """Pruned widths never grow back (``shape`` of every conv/linear weight)."""
        return width_promises(model)


@dataclass
class KernelFamily(_OneKnob):
    """Free-pattern 2-D kernel removal per conv; amount = fraction of the layer's ``k×k`` kernels removed.

    Knobs are :func:`slimcnn.prune.kernel.default_kernel_layers` (``groups=1`` convs with more than
    one input and output channel). Removed kernels are zeroed in place (the architecture is
    unchanged), ranked by ``criterion`` (:func:`slimcnn.prune.kernel.kernel_masks`).

    The cost is **kernel-sparse**: params and MACs count only the kept kernels of the knob layers
    (a kernel whose weights are all zero counts as removed), as a sparse kernel engine would run them;
    the dense runtime does not get faster. ``weight_bytes`` is what the compact ``.slimk`` format
    (:func:`slimcnn.prune.kernel.save_kernel_compact`) stores: every other tensor dense, the kept
    kernels' weights plus a per-layer index (bitmap or uint16/uint32 list, whichever is smaller).
    """

    example_input: Any
    criterion: str = "l1"
    amounts: tuple[float, ...] = (0.25, 0.5, 0.75)
    name: str = "kernel"

    def knobs(self, model: nn.Module, example_input: Any) -> list[Knob]:
        from slimcnn.prune.kernel import default_kernel_layers

        return [Knob(n, self.amounts, (n,)) for n in default_kernel_layers(model)]

    def apply_many(self, model: nn.Module, assignment: dict[str, float]) -> nn.Module:
        from slimcnn.prune.kernel import apply_kernel_masks_, kernel_masks

        new = copy.deepcopy(model)
        for layer, amount in assignment.items():
            if amount > 0:
                apply_kernel_masks_(new, kernel_masks(new, float(amount), self.criterion, layers=[layer]))
        return new

    def cost(self, example_input: Any) -> CostFn:
        def cost(model: nn.Module, assignment: dict[str, float]) -> tuple[int, int, int]:
            return kernel_sparse_cost(model, example_input, [k for k, v in assignment.items() if v > 0])

        return cost

    def details(self, model: nn.Module, assignment: dict[str, float]) -> dict[str, Any]:
        kept = {}
        for layer, amount in assignment.items():
            if amount > 0:
                w = model.get_submodule(layer).weight.detach()
                kept[layer] = [int(w.shape[0] * w.shape[1]), int((w.abs().amax(dim=(2, 3)) > 0).sum())]
        return {"criterion": self.criterion, "kernels_total_kept": kept}

    def promises(self, model: nn.Module, assignment: dict[str, float]) -> tuple[Promise, ...]:
        """Removed kernels stay exactly zero (``zeros`` on every layer with kernels removed)."""
        return tuple(Promise(k, "zeros") for k, v in assignment.items() if v > 0)


def kernel_sparse_cost(model: nn.Module, example_input: Any, layers: Sequence[str],
                       profiled: Any = None) -> tuple[int, int, int]:
    """``(params, MACs, weight bytes)`` of ``model`` with the all-zero kernels of ``layers`` removed: params and
    MACs of the kept kernels only, weight bytes as ``model.slimk`` stores them (kept kernels plus their index,
    every other parameter dense; :func:`slimcnn.run._artifacts.write_slimk` checks the file against it).
    ``profiled``: ``profile(model, example_input)`` when the caller has it (with its per-layer rows)."""
    from slimcnn.measure import profile

    c = profiled if profiled is not None else profile(model, example_input)
    per_layer = {lc.name: lc for lc in c.layers}
    params, macs, wbytes = c.params, c.macs, c.weight_bytes
    for layer, (gone, n_all, per) in removed_kernels(model, layers).items():
        params -= gone * per
        if layer in per_layer:
            macs -= per_layer[layer].macs * gone // n_all
        wbytes += kernel_index_bytes(n_all, n_all - gone) - gone * per * model.get_submodule(layer).weight.element_size()
    return params, macs, wbytes


def removed_kernels(model: nn.Module, layers: Sequence[str]) -> dict[str, tuple[int, int, int]]:
    """``{layer: (all-zero k×k kernels, kernels, weights per kernel)}`` of the conv weights of ``layers``: what a
    sparse kernel engine skips (its params, and that share of the layer's MACs)."""
    out = {}
    for layer in layers:
        w = model.get_submodule(layer).weight.detach()
        o, i, kh, kw = w.shape
        out[layer] = (o * i - int((w.abs().amax(dim=(2, 3)) > 0).sum()), o * i, kh * kw)
    return out


def kernel_index_bytes(n_kernels: int, n_kept: int) -> int:
    """Index overhead of one layer in the compact kernel format: a bitmap or a flat-index list.

    Mirrors :mod:`slimcnn.prune._kernel_format`: the list (uint16 when ``n_kernels <= 65536``, else
    uint32) is used when it is strictly smaller than the ``ceil(n_kernels / 8)``-byte bitmap.
    """
    bitmap = -(-n_kernels // 8)
    lst = n_kept * (2 if n_kernels <= 65536 else 4)
    return lst if lst < bitmap else bitmap


FAMILIES.add("prune", PruneFamily)
FAMILIES.add("lowrank", LowRankFamily)
FAMILIES.add("kmeans", KMeansFamily)
FAMILIES.add("kernel", KernelFamily)
