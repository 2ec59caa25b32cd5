"""Costs counted as the compact files store them: a ``.slimk``'s removed kernels gone from params and MACs, a
``.slim``'s k-means layers at their bits, as ``slimcnn analyze`` counts those files (compress and search judge a
compressed input, and their result, on these)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from slimcnn.run._artifacts import still_convs
from slimcnn.search.sensitivity import CostFn
from slimcnn.train._promises import Promise
from slimcnn.types import Cost


def stored_cost(model: nn.Module, x: Any, kmeans_bits: dict[str, int] | None = None,
                kernel_layers: Sequence[str] = (), codebook: str = "fp32") -> Cost:
    """Params, MACs, activation bytes by profiling, and weight bytes, as the file the model is written to stores
    them (as ``analyze`` counts that file): with k-means layers, ``model.slim`` — those layers at their bits, the
    other weights without the all-zero kernels it leaves out of them (:func:`~slimcnn.quantize.kernel_stored_weights`),
    those kernels gone from params and MACs in every convolution; else ``model.slimk`` — the all-zero kernels of
    ``kernel_layers`` gone (not stored)."""
    from slimcnn.measure import profile
    from slimcnn.quantize import kernel_stored_weights
    from slimcnn.search.families import kernel_sparse_cost, kmeans_bytes_delta

    c = profile(model, x)
    wbytes = c.weight_bytes
    bits = still_weighted(model, kmeans_bits or {})
    unshared = [n.removesuffix(".weight") for n in kernel_stored_weights(model, bits)] if bits else []
    if layers := still_convs(model, [*bits, *unshared] if bits else kernel_layers):
        params, macs, sparse_bytes = kernel_sparse_cost(model, x, layers, c)
        c = dataclasses.replace(c, params=params, macs=macs)
        wbytes = wbytes if bits else sparse_bytes
    if bits:
        wbytes += kmeans_bytes_delta(model, bits, codebook)
    return dataclasses.replace(c, weight_bytes=wbytes, layers=())


def still_weighted(model: nn.Module, bits: dict[str, int]) -> dict[str, int]:
    """``bits`` of the layers that still hold a ``weight`` tensor."""
    mods = dict(model.named_modules())
    return {k: b for k, b in bits.items() if isinstance(getattr(mods.get(k), "weight", None), torch.Tensor)}


def stored_form(promises: Sequence[Promise]) -> tuple[list[str], dict[str, int], str, bool]:
    """What a compact input's promises say of its file: ``(kernel layers, k-means bits, codebook dtype,
    per-channel codebooks)`` (empty for a plain model)."""
    books = [p for p in promises if p.kind == "codebook"]
    return ([p.layer for p in promises if p.kind == "zeros"], {p.layer: int(p.bits) for p in books},  # type: ignore[arg-type]
            "fp16" if any(p.fp16 for p in books) else "fp32", any(p.per_channel for p in books))


def stored_huffman(promises: Sequence[Promise]) -> bool:
    """Whether a compact input's ``.slim`` Huffman-codes its indices (a re-write of it does too)."""
    return any(p.huffman for p in promises if p.kind == "codebook")


def as_stored(cost_fn: CostFn, example_input: Any, promises: Sequence[Promise], method: str) -> CostFn:
    """``cost_fn`` of a search whose input is a compact file: params and MACs without its removed kernels (and the
    kernel family's own), weight bytes as its format stores them unless the family counts them itself (k-means)."""
    kernels, bits, codebook, _ = stored_form(promises)

    def cost(model: nn.Module, assignment: dict[str, float]) -> tuple[int, int, int]:
        own = [k for k, v in assignment.items() if v > 0] if method == "kernel" else []
        c = stored_cost(model, example_input, bits, [*kernels, *own], codebook)
        wbytes = cost_fn(model, assignment)[2] if method == "kmeans" and assignment else c.weight_bytes
        return c.params, c.macs, wbytes

    return cost


def stored_input_cost(model: nn.Module, example_input: Any, promises: Sequence[Promise]) -> Cost:
    """A compact input's cost as its file stores it (what ``analyze`` gives for it): removed kernels gone from params
    and MACs, weight bytes exactly what the ``.slim`` (re-packed, Huffman-coded when it was; its weights already
    share their codebooks) or the ``.slimk`` holds."""
    from slimcnn.quantize._format import written_weight_bytes
    from slimcnn.search.families import pack

    kernels, bits, codebook, per_channel = stored_form(promises)
    c = stored_cost(model, example_input, bits, kernels, codebook)
    if bits:
        packed = pack(model, bits, codebook, per_channel)
        c = dataclasses.replace(c, weight_bytes=written_weight_bytes(packed, huffman=stored_huffman(promises)))
    return c


def write_as_input(folder: Any, loaded: Any, written: nn.Module, promises: Sequence[Promise]) -> dict[str, Any]:
    """``written`` stored in its compact input's format again, for the layers that are still the input's (a
    low-rank step may have factorised some): ``{"slim": ...}`` / ``{"slimk": ...}`` (see
    :func:`~slimcnn.run._artifacts.write_slim`), ``{}`` for a plain input."""
    from slimcnn.run._artifacts import write_slim, write_slimk
    from slimcnn.search.families import pack

    kernels, bits, codebook, per_channel = stored_form(promises)
    if bits := still_weighted(written, bits):
        packed = pack(written, bits, codebook, per_channel)
        return {"slim": write_slim(folder, loaded, packed, written, huffman=stored_huffman(promises))}
    if layers := still_convs(written, kernels):
        return {"slimk": write_slimk(folder, loaded, written, layers)}
    return {}


def unstored_kernel_layers(folder: Path, stored: dict[str, Any]) -> list[str]:
    """The layers whose all-zero kernels the compact file just written does not store (``analyze`` counts them
    gone): a ``.slim``'s k-means layers (masked out) and the weights it stores as kept kernels, a ``.slimk``'s kernel
    layers; ``stored`` names the file
    (``{"slim": ...}`` / ``{"slimk": ...}``, as :func:`~slimcnn.run._artifacts.write_plan_artifact` returns)."""
    if "slim" in stored:
        from slimcnn.quantize import read_packed

        tensors = read_packed(folder / "model.slim").header["tensors"]
        return [str(k).removesuffix(".weight") for k, e in tensors.items() if e["kind"] in ("kmeans", "kernels")]
    if "slimk" in stored:
        from slimcnn.prune._kernel_format import read_kernel_compact

        header, _ = read_kernel_compact(folder / "model.slimk")
        return [str(e["name"]).removesuffix(".weight") for e in header["tensors"] if e["kind"] == "kernels"]
    return []
