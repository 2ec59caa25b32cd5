"""Fine-tuning that keeps each transform's promise: codebooks, zeros and widths (DESIGN invariant 7).

A :class:`Promise` is data (a layer FQN and what must hold for its weight); what exactly holds is
read from the model when :func:`keep_promises` enters:

- ``codebook`` (k-means, ``bits``): the weight's distinct non-zero values (at most ``2**bits``, per output
  channel with ``per_channel``) become trainable centroids; each weight keeps its centroid index,
  so a centroid's gradient is the sum of its weights' gradients (Deep Compression §3.2); exact zeros
  (pruned or removed before k-means) stay zero.
- ``zeros`` (kernel pruning, magnitude sparsity): the weights that are exactly zero stay zero.
- ``shape`` (channel pruning, low rank): the weight keeps its shape (pruned widths never grow back).

While the context is open the weights are ``torch.nn.utils.parametrize`` parametrizations
(``weight = codebook[indices]`` scattered over the kept positions, or ``weight * mask``); on exit
they are removed with ``leave_parametrized=True``, so the model is a plain module again (saving, ONNX
export, deepcopy) and every promise is checked on the final weights.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
from torch import nn
from torch.nn.utils import parametrize

from slimcnn.errors import ConfigError, SlimcnnError

log = logging.getLogger(__name__)

PromiseKind = Literal["codebook", "zeros", "shape"]
PROMISE_KINDS: tuple[str, ...] = ("codebook", "zeros", "shape")


class BrokenPromiseError(SlimcnnError, RuntimeError):
    """A model does not hold what a transform promised (before or after a fine-tune)."""


@dataclass(frozen=True)
class Promise:
    """What must hold for one layer's weight through any fine-tune."""

    layer: str
    """Module FQN (``"layer2.0.conv1"``)."""
    kind: PromiseKind
    """``codebook``, ``zeros`` or ``shape`` (see the module doc)."""
    bits: int | None = None
    """``codebook``: at most ``2**bits`` distinct values."""
    per_channel: bool = False
    """``codebook``: one codebook per output channel."""
    fp16: bool = False
    """``codebook``: centroids are stored as fp16 (trained in fp32, used rounded)."""
    huffman: bool = False
    """``codebook``: the file it came from Huffman-codes indices (storage only: a re-write keeps it)."""

    def __post_init__(self) -> None:
        if self.kind not in PROMISE_KINDS:
            raise ConfigError(f"promise kind must be one of {list(PROMISE_KINDS)}, got {self.kind!r}")
        if self.kind == "codebook" and (self.bits is None or not 1 <= int(self.bits) <= 16):
            raise ConfigError(f"a codebook promise needs bits in 1..16, got {self.bits!r} for '{self.layer}'")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Promise:
        """The inverse of :meth:`to_dict`."""
        return cls(**data)


class SharedWeight(nn.Module):
    """Parametrization ``weight = codebook[index]`` at the kept positions, exactly zero elsewhere.

    Args:
        codebook (Tensor[K] | Tensor[out, K]): centroids (trainable, kept in fp32).
        indices (Tensor[n_kept]): centroid of each kept weight, flat order (as :func:`slimcnn.quantize.dequantize`).
        mask (Tensor[bool, shape] | None): kept positions; None means all.
        shape: the weight's shape.
        fp16: use the centroids rounded to fp16 (straight-through gradient).
        grad: ``sum``: a centroid's gradient is the sum over its weights (Deep Compression; pair it with a
            small learning rate); ``mean``: their mean, so a fine-tune at the weights' own learning rate moves
            a centroid as much as one of its weights (a 256-centroid layer of 100k weights otherwise takes
            ~400x steps and diverges).
    """

    def __init__(self, codebook: torch.Tensor, indices: torch.Tensor, mask: torch.Tensor | None,
                 shape: tuple[int, ...] | torch.Size, *, fp16: bool = False, grad: str = "sum") -> None:
        super().__init__()
        self.shape = tuple(int(s) for s in shape)
        numel = 1
        for s in self.shape:
            numel *= s
        self.numel, self.fp16 = numel, fp16
        book = codebook.detach().to(torch.float32).clone()
        pos = torch.arange(numel) if mask is None else torch.nonzero(mask.reshape(-1).cpu(), as_tuple=False).reshape(-1)
        idx = indices.detach().to(torch.int64).cpu()
        if pos.numel() != idx.numel():
            raise ConfigError(f"{idx.numel()} indices for {pos.numel()} kept weights; the codebook data is inconsistent")
        flat = (pos // (numel // book.shape[0])) * book.shape[1] + idx if book.dim() == 2 else idx
        self.codebook = nn.Parameter(book)
        self.register_buffer("flat_index", flat)
        self.register_buffer("positions", None if mask is None else pos)
        if grad not in ("sum", "mean"):
            raise ConfigError(f"grad must be sum or mean, got {grad!r}")
        if grad == "mean":
            counts = torch.bincount(flat, minlength=book.numel()).clamp(min=1).to(torch.float32).reshape(book.shape)
            self.register_buffer("members", counts)
            self.codebook.register_hook(lambda g: g / self.members)

    def book(self) -> torch.Tensor:
        """The centroids as used (rounded to fp16 when asked)."""
        b = self.codebook
        return b + (b.detach().half().float() - b.detach()) if self.fp16 else b

    def forward(self, original: torch.Tensor) -> torch.Tensor:
        vals = self.book().reshape(-1)[self.flat_index]
        if self.positions is None:
            return vals.reshape(self.shape).to(original.dtype)
        out = torch.zeros(self.numel, dtype=vals.dtype, device=vals.device).scatter(0, self.positions, vals)
        return out.reshape(self.shape).to(original.dtype)


class KeepZeros(nn.Module):
    """Parametrization ``weight = original * mask`` (removed weights stay exactly zero)."""

    def __init__(self, mask: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mask", mask.detach().clone())

    def forward(self, original: torch.Tensor) -> torch.Tensor:
        return original * self.mask.to(original.dtype)


def codebook_of(weight: torch.Tensor, bits: int, *, per_channel: bool = False,
                layer: str = "") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Read a k-means layer's ``(codebook, indices, mask)`` back from its dense weight.

    Exact zeros are positions k-means left out (pruned, or removed before it:
    :func:`slimcnn.quantize.keep_masks`), not a centroid: they are the ``mask`` (None when there are none)
    and stay zero through a fine-tune.

    Args:
        weight: the layer's weight, holding at most ``2**bits`` distinct non-zero values (per output
            channel with ``per_channel``).
        bits: bits per index.
        per_channel: one codebook per output channel (``codebook`` is then ``[out, K]``, padded).
        layer: the FQN, for messages.

    Raises:
        BrokenPromiseError: more distinct values than ``2**bits``.
    """
    w = weight.detach().cpu().to(torch.float32).reshape(weight.shape[0] if per_channel else 1, -1)
    nonzero = w != 0
    mask = None if bool(nonzero.all()) else nonzero
    limit = 2 ** int(bits)
    books, indices = [], []
    for r in range(w.shape[0]):
        row = w[r][mask[r]] if mask is not None else w[r]
        values, inverse = torch.unique(row, return_inverse=True)
        if values.numel() > limit:
            where = f" (output channel {r})" if per_channel else ""
            raise BrokenPromiseError(f"layer '{layer}' holds {values.numel()} distinct weights{where}, more than "
                                     f"2**{bits} = {limit}: it is not k-means quantised at {bits} bits")
        books.append(values)
        indices.append(inverse.reshape(-1))
    k = max(1, max(b.numel() for b in books))
    book = torch.zeros(len(books), k)
    for r, b in enumerate(books):
        book[r, : b.numel()] = b
    full_mask = None if mask is None else mask.reshape(weight.shape)
    return (book if per_channel else book[0]), torch.cat(indices), full_mask


def _weight(model: nn.Module, layer: str) -> torch.Tensor | None:
    try:
        module = model.get_submodule(layer)
    except AttributeError:
        return None
    w = getattr(module, "weight", None)
    return w if isinstance(w, torch.Tensor) else None


def _shape_of(model: nn.Module, layer: str) -> tuple[int, ...] | None:
    w = _weight(model, layer)
    return tuple(w.shape) if w is not None else None


@contextlib.contextmanager
def keep_promises(model: nn.Module, promises: Iterable[Promise]) -> Iterator[dict[str, nn.Module]]:
    """Hold ``promises`` on ``model`` while the block runs (e.g. around ``task.finetune``).

    Yields ``{layer: parametrization}`` (a :class:`SharedWeight` or :class:`KeepZeros`). Layers a
    later transform replaced (no ``weight`` any more, e.g. a low-rank ``Sequential``) are skipped.
    On exit the parametrizations are removed (``leave_parametrized=True``) and every promise is
    checked on the final weights.

    Raises:
        BrokenPromiseError: a codebook layer already holds too many values, or a promise did not hold.
    """
    by_layer: dict[str, list[Promise]] = {}
    for p in promises:
        if _weight(model, p.layer) is None:
            log.debug("promise on '%s' skipped: the layer has no weight (replaced by a later transform)", p.layer)
            continue
        by_layer.setdefault(p.layer, []).append(p)
    shapes = {layer: _shape_of(model, layer) for layer in by_layer}
    zeros = {layer: _weight(model, layer).detach() == 0 for layer, ps in by_layer.items()  # type: ignore[union-attr]
             if any(p.kind == "zeros" for p in ps)}
    made: dict[str, nn.Module] = {}
    for layer, ps in by_layer.items():
        module = model.get_submodule(layer)
        book = next((p for p in ps if p.kind == "codebook"), None)
        if book is not None:
            codebook, idx, mask = codebook_of(module.weight, int(book.bits or 0), per_channel=book.per_channel,
                                              layer=layer)
            made[layer] = SharedWeight(codebook, idx, mask, module.weight.shape, fp16=book.fp16,
                                       grad="mean").to(module.weight.device)
        elif layer in zeros:
            made[layer] = KeepZeros(~zeros[layer]).to(module.weight.device)
    with hold_weights(model, made):
        yield made
    _check(model, by_layer, shapes, zeros)


@contextlib.contextmanager
def hold_weights(model: nn.Module, parametrizations: dict[str, nn.Module]) -> Iterator[None]:
    """Register ``{layer: parametrization}`` on each layer's ``weight`` for the block, then remove them.

    When a parametrization has parameters of its own (a :class:`SharedWeight`'s codebook) the layer's
    weight is frozen meanwhile; a :class:`KeepZeros` trains the weight itself. On exit each weight holds its parametrized value
    (``leave_parametrized=True``), with its ``requires_grad`` as before.
    """
    done: list[tuple[nn.Module, bool]] = []
    try:
        for layer, param in parametrizations.items():
            module = model.get_submodule(layer)
            flag = bool(module.weight.requires_grad)
            parametrize.register_parametrization(module, "weight", param)
            done.append((module, flag))
            if any(True for _ in param.parameters()):  # it trains its own tensors (a codebook), not the weight
                module.parametrizations.weight.original.requires_grad_(False)  # type: ignore[union-attr,operator]
        yield
    finally:
        for module, flag in done:
            if parametrize.is_parametrized(module, "weight"):
                parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
            module.weight.requires_grad_(flag)


def _check(model: nn.Module, by_layer: dict[str, list[Promise]], shapes: dict[str, tuple[int, ...] | None],
           zeros: dict[str, torch.Tensor]) -> None:
    for layer, ps in by_layer.items():
        w = _weight(model, layer)
        if w is None or tuple(w.shape) != shapes[layer]:
            raise BrokenPromiseError(f"layer '{layer}' changed shape during fine-tuning "
                                     f"({shapes[layer]} -> {None if w is None else tuple(w.shape)})")
        if layer in zeros and bool((w.detach()[zeros[layer].to(w.device)] != 0).any()):
            raise BrokenPromiseError(f"layer '{layer}': removed weights became non-zero during fine-tuning")
        for p in ps:
            if p.kind == "codebook":
                codebook_of(w, int(p.bits or 0), per_channel=p.per_channel, layer=layer)


def check_promises(model: nn.Module, promises: Iterable[Promise]) -> None:
    """Raise :class:`BrokenPromiseError` when a ``codebook`` promise does not hold on ``model`` now.

    (``zeros`` and ``shape`` promises are relative to the model before a fine-tune; :func:`keep_promises`
    checks them on exit.)
    """
    for p in promises:
        w = _weight(model, p.layer)
        if w is not None and p.kind == "codebook":
            codebook_of(w, int(p.bits or 0), per_channel=p.per_channel, layer=p.layer)
