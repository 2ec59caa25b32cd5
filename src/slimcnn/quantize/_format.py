"""The ``.slim`` packed file: versioned header, checksummed payload, bit-packed k-means layers.

Layout (little-endian)::

    b"SLIMCNN\\0"  magic (8 bytes)
    u16 version, u16 reserved, u64 header length H
    H bytes of UTF-8 JSON header (source, arch, model info, spec, tensor table, per-layer report)
    32 bytes SHA-256 of the header
    payload (segments addressed by [offset, length] in the header, each with its SHA-256)

A k-means tensor holds its codebook (fp16/fp32), its indices (fixed ``ceil(log2 K)``-bit packing
or canonical Huffman) and, when pruned, the keep mask as the smaller of a bitmap and Deep
Compression relative indexing. A weight k-means does not share but whose whole k×k kernels are zero (a kernel
stage removed them) is stored as its kept kernels and their keep mask (``kernels``, version 2) when that is
smaller. Every other state-dict entry is stored raw; tied tensors once.

``arch`` says how the architecture is rebuilt (:mod:`slimcnn.models._architecture`), so
``file:model.slim`` loads on its own whatever the model came from. This module writes the file;
:mod:`slimcnn.quantize._read` verifies, decodes and loads it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from slimcnn._io import atomic_write
from slimcnn.errors import DataError
from slimcnn.models._architecture import architecture_record, info_record
from slimcnn.quantize import _bits
from slimcnn.quantize._model import KernelWeight, QuantizedLayer, QuantizeResult, index_width, kernel_sparse

MAGIC = b"SLIMCNN\x00"
VERSION = 2
"""The newest version written; 2 adds the ``kernels`` tensor kind (a file without one is written as version 1)."""
_PRE = struct.Struct("<8sHHQ")


@dataclass(frozen=True)
class PackedLayerBytes:
    """Bytes one quantised layer takes in the file, by part."""

    name: str
    codebook_bytes: int
    index_bytes: int
    mask_bytes: int
    index_coding: str
    mask_coding: str


@dataclass(frozen=True)
class PackReport:
    """Sizes of a written ``.slim`` file."""

    path: str
    file_bytes: int
    """``os.path.getsize`` of the file: everything (header, codebooks, masks, raw tensors)."""
    payload_bytes: float
    """Σ bits x kept weights / 8 + float32 bytes of every parameter not quantised (no codebooks or masks)."""
    paper_payload_bytes: float
    """Paper accounting (Tomè et al.): Σ bits x kept weights / 8 over the quantised layers only."""
    weight_bytes: int
    """What the file stores of the parameters: every quantised layer's codebook, indices and keep mask as
    written, + float32 bytes of every parameter not quantised (the header and buffers are in ``file_bytes``)."""
    raw_bytes: int
    """Bytes of tensors stored as-is (biases, BN statistics, unquantised layers)."""
    header_bytes: int
    layers: tuple[PackedLayerBytes, ...]


def _dtype_name(dt: torch.dtype) -> str:
    return str(dt).removeprefix("torch.")


def _dtype(name: str) -> torch.dtype:
    dt = getattr(torch, name, None)
    if not isinstance(dt, torch.dtype):
        raise DataError(f"packed file names an unknown dtype '{name}'")
    return dt


def _tensor_bytes(t: torch.Tensor) -> bytes:
    t = t.detach().to("cpu").contiguous()
    return t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""


class _Payload:
    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.size = 0

    def add(self, data: bytes) -> list[Any]:
        seg = [self.size, len(data), hashlib.sha256(data).hexdigest()]
        self.parts.append(data)
        self.size += len(data)
        return seg


def _encode_layer(q: QuantizedLayer, pay: _Payload, *, codebook_dtype: str, huffman: bool) -> tuple[dict[str, Any], PackedLayerBytes]:
    book = q.codebook.to(torch.float16 if codebook_dtype == "fp16" else torch.float32)
    k = int(q.codebook.shape[-1])
    width = index_width(k)
    idx = q.indices.numpy().astype(np.int64)
    coding, idx_bytes, lengths_seg = "fixed", b"", None
    if huffman and k <= 4096 and idx.size:
        lengths = _bits.huffman_lengths(np.bincount(idx, minlength=k).astype(np.int64))
        # smaller with its code-length table (k bytes): else a "Huffman" layer took up to k bytes more than fixed
        if int(lengths.max()) <= _bits.MAX_CODE_LEN and -(-int(lengths[idx].sum()) // 8) + k < -(-idx.size * width // 8):
            coding, idx_bytes = "huffman", _bits.huffman_encode(idx, lengths)
            lengths_seg = pay.add(lengths.astype(np.uint8).tobytes())
    if coding == "fixed":
        idx_bytes = _bits.pack_uint(idx, width)
    entry: dict[str, Any] = {
        "kind": "kmeans",
        "shape": list(q.shape),
        "dtype": _dtype_name(q.dtype),
        "bits": q.bits,
        "codebook": {"dtype": codebook_dtype, "shape": list(book.shape), "seg": pay.add(_tensor_bytes(book))},
        "indices": {"coding": coding, "width": width, "count": int(idx.size), "seg": pay.add(idx_bytes)},
        "mask": None,
    }
    if lengths_seg is not None:
        entry["indices"]["lengths"] = lengths_seg
    mask_bytes, mask_coding = 0, "none"
    if q.mask is not None:
        flat = q.mask.reshape(-1).numpy().astype(bool)
        kind, mwidth = _bits.best_sparse_coding(flat)
        data, n_entries = _bits.encode_mask(flat, kind, mwidth)
        entry["mask"] = {"coding": kind, "width": mwidth, "entries": n_entries, "seg": pay.add(data)}
        mask_bytes, mask_coding = len(data), f"{kind}" + (f"/{mwidth}bit" if kind == "relative" else "")
    sizes = PackedLayerBytes(
        q.name, int(entry["codebook"]["seg"][1]), len(idx_bytes) + (k if lengths_seg else 0), mask_bytes, coding, mask_coding
    )
    return entry, sizes


def _encode_kernels(kw: KernelWeight, pay: _Payload) -> dict[str, Any]:
    """The ``kernels`` entry of a weight k-means does not share: its kept kernels and their keep mask."""
    return {"kind": "kernels", "dtype": _dtype_name(kw.values.dtype), "shape": list(kw.shape),
            "seg": pay.add(_tensor_bytes(kw.values)),
            "mask": {"coding": kw.mask_kind, "width": kw.mask_width, "entries": kw.mask_entries, "seg": pay.add(kw.mask)}}


def written_weight_bytes(result: QuantizeResult, *, huffman: bool = False) -> int:
    """:attr:`PackReport.weight_bytes` of ``save_packed(path, result, huffman=huffman)`` without writing it (with
    ``huffman`` the indices are encoded to count them; :attr:`QuantizeResult.weight_bytes` counts fixed width)."""
    if not huffman:
        return result.weight_bytes
    pay = _Payload()
    layers = [_encode_layer(q, pay, codebook_dtype=result.spec.codebook_dtype, huffman=True)[1]
              for q in result.layers.values()]
    return _weight_bytes(result, layers)


def _weight_bytes(result: QuantizeResult, layers: list[PackedLayerBytes]) -> int:
    """What the file stores of the parameters: each shared layer as encoded, the rest float32 less the kernels it
    leaves out."""
    shared = sum(lb.codebook_bytes + lb.index_bytes + lb.mask_bytes for lb in layers)
    return shared + result.float_bytes - result.kernel_saved_bytes


def _tied_key(t: torch.Tensor) -> tuple[int, int, tuple[int, ...], tuple[int, ...], str]:
    return (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), tuple(t.stride()), str(t.dtype))


def save_packed(
    path: str | Path,
    result: QuantizeResult,
    *,
    source: str,
    info: Any = None,
    huffman: bool = False,
    rebuild_from: tuple[str, ...] = (),
) -> PackReport:
    """Write ``result`` as a ``.slim`` file (atomically) and report its sizes.

    Args:
        path: output file.
        result: from :func:`~slimcnn.quantize.quantize_model`.
        source: the model source string the architecture is rebuilt from at load time
            (``slimcnn:alexnet_bvlc``, ``torchvision:resnet18``...).
        info: the model's ``ModelInfo`` (stored for the loader), or None.
        huffman: Huffman-code the indices of a layer when that is smaller than fixed width.
        rebuild_from: more source strings that may build the architecture (for a ``file:`` source:
            the source it was made from, its ``--arch``); see :func:`architecture_record`.
    """
    pay = _Payload()
    tensors: dict[str, Any] = {}
    layer_bytes: list[PackedLayerBytes] = []
    by_param = {f"{n}.weight": q for n, q in result.layers.items()}
    seen: dict[tuple[int, int, tuple[int, ...], tuple[int, ...], str], str] = {}
    params = dict(result.model.named_parameters())
    raw = 0
    for key, t in result.model.state_dict(keep_vars=False).items():
        tk = _tied_key(t)
        if tk in seen and t.numel():
            tensors[key] = {"kind": "alias", "of": seen[tk]}
            continue
        seen[tk] = key
        if key in by_param:
            entry, lb = _encode_layer(by_param[key], pay, codebook_dtype=result.spec.codebook_dtype, huffman=huffman)
            layer_bytes.append(lb)
            tensors[key] = entry
        elif key in params and (kw := kernel_sparse(key, t)) is not None:
            tensors[key] = _encode_kernels(kw, pay)
            raw += kw.stored_bytes
        else:
            data = _tensor_bytes(t)
            raw += len(data)
            tensors[key] = {"kind": "raw", "dtype": _dtype_name(t.dtype), "shape": list(t.shape), "seg": pay.add(data)}
    arch, skeleton = architecture_record(result.model, source, info, rebuild_from)
    if arch is not None and skeleton is not None:
        arch["seg"] = pay.add(skeleton)
    payload = b"".join(pay.parts)
    written = {lb.name: lb.codebook_bytes + lb.index_bytes + lb.mask_bytes for lb in layer_bytes}
    # only a file that uses a kind version 1 lacks says version 2: every other file stays readable by older slimcnn
    version = VERSION if any(e["kind"] == "kernels" for e in tensors.values()) else 1
    header = {
        "format": "slimcnn.packed",
        "version": version,
        "source": source,
        "arch": arch,
        "info": info_record(info),
        "spec": dataclasses.asdict(result.spec),
        "paper_payload_bytes": result.paper_payload_bytes,
        "payload_bytes": result.payload_bytes,
        "original_bytes": result.original_bytes,
        "payload_size": len(payload),
        "payload_sha256": hashlib.sha256(payload).hexdigest(),
        "tensors": tensors,
        # no timings in the file: the same model and spec give the same bytes (result.json has them)
        # stored_bytes as written (Huffman-coded indices where smaller), which stored_weight_bytes reads back
        "layers": [{k: v for k, v in dataclasses.asdict(r).items() if k != "seconds"}
                   | {"stored_bytes": written[r.name]} for r in result.reports()],
    }
    hbytes = json.dumps(header, separators=(",", ":")).encode()

    def write(p: Path) -> None:
        with open(p, "wb") as f:
            f.write(_PRE.pack(MAGIC, version, 0, len(hbytes)))
            f.write(hbytes)
            f.write(hashlib.sha256(hbytes).digest())
            f.write(payload)

    atomic_write(path, write)
    return PackReport(
        path=str(path),
        file_bytes=os.path.getsize(path),
        payload_bytes=result.payload_bytes,
        paper_payload_bytes=result.paper_payload_bytes,
        weight_bytes=_weight_bytes(result, layer_bytes),
        raw_bytes=raw,
        header_bytes=_PRE.size + len(hbytes) + 32,
        layers=tuple(layer_bytes),
    )
