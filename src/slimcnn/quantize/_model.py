"""Prune-then-quantise a whole model layer by layer; the in-memory quantised model."""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from torch import nn

from slimcnn.errors import ConfigError
from slimcnn.quantize._bits import best_sparse_coding, encode_mask, mask_bytes
from slimcnn.quantize._kmeans import (
    DEFAULT_FALLBACK_BINS,
    DEFAULT_MAX_EXACT_WORK,
    METHODS,
    Method,
    dequantize,
    fit_kmeans,
)
from slimcnn.quantize._prune import check_factor, global_magnitude_masks, magnitude_mask
from slimcnn.quantize._spec import LayerRules, check_rules_used, match_rule, parse_layer_rules

log = logging.getLogger(__name__)

CodebookDtype = Literal["fp16", "fp32"]
_LAYER_TYPES = (nn.modules.conv._ConvNd, nn.Linear)


def _is_bits(v: float) -> bool:
    return float(v).is_integer() and 1 <= v <= 16


@dataclass(frozen=True)
class KMeansQuantSpec:
    """What to prune and how to share weights, per layer (rules keyed by fnmatch on module FQNs)."""

    bits: LayerRules
    """``(pattern, bits)`` rules; the first match wins; unmatched layers stay float32."""
    prune: LayerRules = ()
    """``(pattern, factor)`` rules: keep ``1/f`` of the layer's weights by magnitude (before k-means)."""
    global_prune: float | None = None
    """One magnitude threshold over all quantised layers keeping ``1/f`` in total (instead of ``prune``)."""
    per_channel: bool = False
    """One codebook per output channel instead of per layer."""
    method: Method = "exact"
    """``exact`` (optimal 1-D DP) or ``lloyd`` (Deep Compression: linear init + Lloyd)."""
    codebook_dtype: CodebookDtype = "fp32"
    """Storage of centroids; ``fp16`` rounds them, and the in-memory model uses the rounded values."""
    max_exact_work: int = DEFAULT_MAX_EXACT_WORK
    fallback_bins: int = DEFAULT_FALLBACK_BINS

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"--method must be one of {list(METHODS)}, got {self.method!r}")
        check_codebook_dtype(self.codebook_dtype)
        if self.prune and self.global_prune is not None:
            raise ConfigError("Can't set both per-layer --prune rules and a global pruning factor")
        if self.global_prune is not None:
            try:
                check_factor(self.global_prune)
            except ConfigError:
                raise ConfigError(f"--global-prune is a factor f >= 1 (keep 1/f of the weights over all quantised "
                                  f"layers), got {self.global_prune!r}") from None

    @classmethod
    def parse(
        cls,
        bits: str | dict[str, float] | int,
        prune: str | dict[str, float] | None = None,
        **options: object,
    ) -> KMeansQuantSpec:
        """Build a spec from CLI-style strings: ``parse('conv1=9,conv*=8,fc*=1', 'conv3=2,fc*=3')``."""
        b = parse_layer_rules(bits, option="--bits", cast=float, check=_is_bits, expect="an integer 1..16")
        p = parse_layer_rules(prune, option="--prune", check=lambda v: v >= 1.0, expect="a factor >= 1")
        return cls(bits=tuple((k, int(v)) for k, v in b), prune=p, **options)  # type: ignore[arg-type]


def check_codebook_dtype(codebook: str) -> None:
    """``--codebook`` (quantize, search, compress): ``fp32`` or ``fp16`` centroids."""
    if codebook not in ("fp32", "fp16"):
        raise ConfigError(f"--codebook must be fp32 or fp16, got '{codebook}'")


def keep_mask_bytes(mask: torch.Tensor | None) -> int:
    """Bytes ``model.slim`` stores for a layer's keep mask (0 when every weight is kept)."""
    return 0 if mask is None else mask_bytes(mask.reshape(-1).cpu().numpy().astype(bool))


def kernel_keep(t: torch.Tensor) -> np.ndarray | None:
    """The k×k kernels ``model.slim`` stores of a weight it does not share (flat ``[out * in]`` bools), or None when
    it stores the weight whole. A 4-D floating weight with all-zero kernels (removed by a kernel stage) is stored as
    its other kernels and their keep mask when that is smaller, so its removed kernels stay out of the file, as
    in a ``.slimk`` (before, such a layer was stored dense and its removed kernels counted again)."""
    if t.dim() != 4 or not t.is_floating_point() or not t.numel():
        return None
    keep = t.detach().ne(0).flatten(2).any(-1).reshape(-1).cpu().numpy()
    if bool(keep.all()):
        return None
    kernel = t[0, 0].numel() * t.element_size()
    return keep if int(keep.sum()) * kernel + mask_bytes(keep) < t.numel() * t.element_size() else None


@dataclass(frozen=True)
class KernelWeight:
    """A weight stored without its all-zero k×k kernels (:func:`kernel_keep`), as ``model.slim`` and the C and
    k-means ONNX exports store it: the kept kernels in ``(out, in)`` order and their keep mask over the
    ``out * in`` kernels, in the k-means masks' coding (a bitmap or Deep Compression relative entries)."""

    key: str
    """State-dict key (``"conv2.weight"``)."""
    shape: tuple[int, ...]
    values: torch.Tensor
    """``[kept, *shape[2:]]``, in the weight's dtype."""
    mask_kind: Literal["bitmap", "relative"]
    mask_width: int
    mask_entries: int
    mask: bytes

    @property
    def kernels(self) -> int:
        """Kernels of the dense weight (``out * in``): the positions of the keep mask."""
        return self.shape[0] * self.shape[1]

    @property
    def stored_bytes(self) -> int:
        """The kept kernels and the keep mask."""
        return self.values.numel() * self.values.element_size() + len(self.mask)


def kernel_sparse(key: str, t: torch.Tensor) -> KernelWeight | None:
    """``t`` as a :class:`KernelWeight`, or None when :func:`kernel_keep` stores it whole."""
    if (keep := kernel_keep(t)) is None:
        return None
    kind, width = best_sparse_coding(keep)
    mask, entries = encode_mask(keep, kind, width)
    values = t.detach().cpu().reshape(-1, *t.shape[2:])[torch.from_numpy(keep)]
    return KernelWeight(key, tuple(t.shape), values, kind, width, entries, mask)  # type: ignore[arg-type]


def kernel_saved_bytes(t: torch.Tensor) -> int:
    """Bytes :func:`kernel_keep` saves on ``t`` against storing it whole (0 when it is stored whole)."""
    keep = kernel_keep(t)
    if keep is None:
        return 0
    kernel = t[0, 0].numel() * t.element_size()
    return int((~keep).sum()) * kernel - mask_bytes(keep)


def kernel_stored_weights(model: nn.Module, shared: Iterable[str]) -> dict[str, int]:
    """``{parameter name: bytes saved}`` of the parameters ``model.slim`` stores without their all-zero kernels:
    every one :func:`kernel_keep` takes but the weights of the ``shared`` (k-means) layers."""
    skip = {f"{n}.weight" for n in shared}
    return {n: b for n, p in model.named_parameters() if n not in skip and (b := kernel_saved_bytes(p))}


def index_width(k: int) -> int:
    """Bits of one fixed-width index into a codebook of ``k`` centroids (at least 1)."""
    return max(1, math.ceil(math.log2(k))) if k > 1 else 1


def stored_bytes(codebook_entries: int, k: int, kept: int, mask: int = 0, codebook_itemsize: int = 4) -> int:
    """Bytes a ``.slim`` file stores for one k-means weight with fixed-width indices: its codebook
    (``codebook_entries`` centroids, ``k`` per row), one index per kept weight, and ``mask`` bytes of keep mask."""
    return codebook_entries * codebook_itemsize + -(-kept * index_width(k) // 8) + mask


def kmeans_bytes_bound(weight: torch.Tensor, bits: int, codebook: CodebookDtype = "fp32") -> int:
    """Stored bytes of ``weight`` shared at ``bits`` with one codebook and no magnitude pruning: an upper bound,
    since a codebook may need fewer than ``2**bits`` centroids. Its exact zeros (removed kernels) are kept zero
    and stored in the keep mask (:func:`keep_masks`). What searches count for k-means."""
    mask = without_zeros(None, weight)
    kept = weight.numel() if mask is None else int(mask.sum())
    return stored_bytes(2**bits, 2**bits, kept, keep_mask_bytes(mask), codebook_itemsize(codebook))


def codebook_itemsize(codebook: CodebookDtype) -> int:
    """Bytes of one stored centroid."""
    return 2 if codebook == "fp16" else 4


@dataclass(frozen=True)
class LayerReport:
    """One quantised layer, in numbers (JSON-ready)."""

    name: str
    shape: tuple[int, ...]
    params: int
    kept: int
    sparsity: float
    bits: int
    prune_factor: float
    codebook_size: int
    payload_bytes: float
    """Paper accounting: ``bits * kept / 8`` (no codebook, no sparse index)."""
    stored_bytes: int
    """What ``model.slim`` stores of the weight (fixed-width indices): codebook + indices + keep mask."""
    original_bytes: int
    """float32 bytes of the weight."""
    solver: str
    sse: float
    seconds: float


@dataclass
class QuantizedLayer:
    """Codebook, indices and keep mask of one layer's weight; decodes bit-identically."""

    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    bits: int
    prune_factor: float
    codebook: torch.Tensor
    indices: torch.Tensor
    mask: torch.Tensor | None
    report: LayerReport

    def decode(self) -> torch.Tensor:
        """The dense weight, in the original dtype."""
        return dequantize(self.codebook, self.indices, self.mask, self.shape).to(self.dtype)


@dataclass
class QuantizeResult:
    """The quantised model (weights replaced by their decoded values) and per-layer records."""

    model: nn.Module
    spec: KMeansQuantSpec
    layers: dict[str, QuantizedLayer] = field(default_factory=dict)
    original_bytes: int = 0
    """float32 bytes of every parameter of the original model (weights and biases)."""

    @property
    def paper_payload_bytes(self) -> float:
        """Paper accounting (Tomè et al.): Σ bits x kept weights / 8 over the quantised layers only."""
        return float(sum(q.report.payload_bytes for q in self.layers.values()))

    @property
    def float_bytes(self) -> int:
        """float32 bytes of the parameters left as they are (biases, BN, layers no ``--bits`` rule matched)."""
        return self.original_bytes - 4 * sum(q.report.params for q in self.layers.values())

    @property
    def payload_bytes(self) -> float:
        """:attr:`paper_payload_bytes` + :attr:`float_bytes`: every parameter, but no codebooks or keep masks
        (:attr:`weight_bytes` counts those)."""
        return self.paper_payload_bytes + self.float_bytes

    @property
    def kernel_saved_bytes(self) -> int:
        """Bytes ``model.slim`` saves on the parameters it does not share by leaving out their all-zero kernels
        (:func:`kernel_keep`)."""
        return sum(kernel_stored_weights(self.model, self.layers).values())

    @property
    def weight_bytes(self) -> int:
        """What ``model.slim`` stores of the parameters (fixed-width indices): every layer's codebook, indices and
        keep mask + :attr:`float_bytes` less :attr:`kernel_saved_bytes`. Budgets (``--weight-bytes``) are judged
        on this."""
        return sum(q.report.stored_bytes for q in self.layers.values()) + self.float_bytes - self.kernel_saved_bytes

    def reports(self) -> list[LayerReport]:
        """Per-layer rows in model order."""
        return [q.report for q in self.layers.values()]


def quantizable_layers(model: nn.Module) -> list[str]:
    """FQNs of the conv and linear layers (each weight listed once, even if tied)."""
    seen: set[int] = set()
    names = []
    for name, m in model.named_modules():
        if isinstance(m, _LAYER_TYPES) and isinstance(getattr(m, "weight", None), torch.Tensor):
            if id(m.weight) not in seen:
                seen.add(id(m.weight))
                names.append(name)
    return names


def payload_estimate(model: nn.Module, spec: KMeansQuantSpec) -> dict[str, float]:
    """Paper-accounted bytes (``bits x kept / 8``) per layer that ``spec`` would give, without k-means (kept:
    :func:`keep_masks`)."""
    names = quantizable_layers(model)
    check_rules_used(spec.bits, names, option="--bits")
    modules = dict(model.named_modules())
    chosen = {n: int(b) for n in names if (b := match_rule(spec.bits, n)) is not None}
    masks = keep_masks({n: modules[n].weight.detach() for n in chosen}, spec)
    kept = {n: (modules[n].weight.numel() if m is None else int(m.sum())) for n, m in masks.items()}
    return {n: chosen[n] * kept[n] / 8 for n in chosen}


def keep_masks(weights: dict[str, torch.Tensor], spec: KMeansQuantSpec) -> dict[str, torch.Tensor | None]:
    """The positions each weight keeps (None: all): magnitude pruning's (``spec.prune`` per layer, or
    ``spec.global_prune``), and never an exact zero. Zeros are weights an earlier step removed (k×k kernels,
    pruning): k-means would give them a centroid (the kernels come back, non-zero), so they stay zero and are
    stored in the keep mask like pruned weights (Deep Compression: prune, then share the survivors)."""
    if spec.global_prune is not None:
        masks = global_magnitude_masks(weights, spec.global_prune)
    else:
        masks = {n: magnitude_mask(w, match_rule(spec.prune, n) or 1.0) for n, w in weights.items()}
    return {n: without_zeros(masks[n], w) for n, w in weights.items()}


def without_zeros(mask: torch.Tensor | None, weight: torch.Tensor) -> torch.Tensor | None:
    """``mask`` (None: keep all) that also drops ``weight``'s exact zeros (see :func:`keep_masks`)."""
    nonzero = (weight.detach() != 0).cpu()
    if bool(nonzero.all()):
        return mask
    return nonzero if mask is None else mask & nonzero


def quantize_(model: nn.Module, spec: KMeansQuantSpec) -> QuantizeResult:
    """Prune then k-means-quantise ``model`` **in place**; returns the records for packing.

    Order as in Tomè et al.: magnitude pruning first, then k-means over the surviving weights (exact zeros
    stay zero: :func:`keep_masks`).

    Raises:
        ConfigError: a ``bits``/``prune`` pattern matches no conv/linear layer.
    """
    names = quantizable_layers(model)
    check_rules_used(spec.bits, names, option="--bits")
    check_rules_used(spec.prune, names, option="--prune")
    modules = dict(model.named_modules())
    original = sum(p.numel() for p in model.parameters()) * 4
    chosen = {n: int(b) for n in names if (b := match_rule(spec.bits, n)) is not None}
    if not chosen:
        raise ConfigError("--bits selects no layer; nothing to quantise")
    weights = {n: modules[n].weight.detach() for n in chosen}
    masks = keep_masks(weights, spec)
    result = QuantizeResult(model=model, spec=spec, original_bytes=original)
    for n, bits in chosen.items():
        t0 = time.perf_counter()
        w = weights[n]
        mask = masks[n]
        fit = fit_kmeans(
            w,
            bits,
            per_channel=spec.per_channel,
            mask=mask,
            method=spec.method,
            max_exact_work=spec.max_exact_work,
            fallback_bins=spec.fallback_bins,
        )
        book = fit.codebook.half().float() if spec.codebook_dtype == "fp16" else fit.codebook
        kept = int(w.numel() if mask is None else int(mask.sum()))
        factor = w.numel() / kept if kept else float("inf")
        rep = LayerReport(
            name=n,
            shape=tuple(w.shape),
            params=w.numel(),
            kept=kept,
            sparsity=1.0 - kept / w.numel(),
            bits=bits,
            prune_factor=round(factor, 4),
            codebook_size=int(book.shape[-1]),
            payload_bytes=bits * kept / 8,
            stored_bytes=stored_bytes(book.numel(), int(book.shape[-1]), kept, keep_mask_bytes(mask),
                                      codebook_itemsize(spec.codebook_dtype)),
            original_bytes=w.numel() * 4,
            solver=fit.solver,
            sse=fit.objective,
            seconds=time.perf_counter() - t0,
        )
        q = QuantizedLayer(n, tuple(w.shape), w.dtype, bits, rep.prune_factor, book, fit.indices, mask, rep)
        with torch.no_grad():
            modules[n].weight.copy_(q.decode().to(w.device))
        result.layers[n] = q
        log.info("%s: %d bits, keep %d/%d, solver %s, %.2fs", n, bits, kept, w.numel(), fit.solver, rep.seconds)
    return result


def quantize_model(model: nn.Module, spec: KMeansQuantSpec) -> QuantizeResult:
    """Like :func:`quantize_` on a deep copy; the caller's model is untouched."""
    return quantize_(copy.deepcopy(model), spec)
