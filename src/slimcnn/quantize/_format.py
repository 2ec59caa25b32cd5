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
``file:model.slim`` loads on its own whatever the model came from.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from slimcnn._io import atomic_write
from slimcnn.errors import ConfigError, DataError, ModelLoadError
from slimcnn.models._architecture import architecture_record, info_record, rebuild_architecture, stored_info
from slimcnn.quantize import _bits
from slimcnn.quantize._kmeans import dequantize
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


def _decode_kernels(payload: memoryview, e: dict[str, Any]) -> torch.Tensor:
    """Inverse of :func:`_encode_kernels`: the removed kernels come back as ``+0.0``."""
    shape = [int(s) for s in e["shape"]]
    m = e["mask"]
    keep = _bits.decode_mask(_seg(payload, m["seg"]), m["coding"], m["width"], m["entries"], shape[0] * shape[1])
    out = torch.zeros(shape[0] * shape[1], *shape[2:], dtype=_dtype(e["dtype"]))
    n = int(keep.sum())
    kept = _raw(_seg(payload, e["seg"]), e["dtype"], [n, *shape[2:]])
    out[torch.from_numpy(keep)] = kept
    return out.reshape(shape)


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


@dataclass
class PackedFile:
    """A verified ``.slim`` file: its header and the decoded state dict."""

    header: dict[str, Any]
    state_dict: dict[str, torch.Tensor]
    skeleton: bytes | None = None
    """The pickled architecture (weights on ``meta``) when the header's ``arch`` is a module record."""


def stored_weight_bytes(header: dict[str, Any]) -> tuple[int, dict[str, int]]:
    """What a ``.slim`` file stores of the parameters (:attr:`PackReport.weight_bytes`), from its header: each
    quantised layer's codebook, indices and mask as written, the kept kernels and keep mask of a ``kernels``
    weight, + float32 of the rest; and per such layer, the bytes its weight saves against float32."""
    saved = {str(r["name"]): int(r["original_bytes"]) - int(r["stored_bytes"]) for r in header["layers"]}
    for key, e in header["tensors"].items():
        if e["kind"] == "kernels":
            dense = math.prod(e["shape"]) * _dtype(e["dtype"]).itemsize
            saved[str(key).removesuffix(".weight")] = dense - int(e["seg"][1]) - int(e["mask"]["seg"][1])
    return int(header["original_bytes"]) - sum(saved.values()), saved


def read_packed(path: str | Path) -> PackedFile:
    """Read, verify (sizes, SHA-256) and decode a ``.slim`` file without building a model.

    Raises:
        DataError: not a slim file, unsupported version, truncated or corrupt (one-line message).
    """
    p = Path(path)
    blob = p.read_bytes()
    if len(blob) < _PRE.size or blob[:8] != MAGIC:
        raise DataError(f"{p} is not a slimcnn packed file (bad magic)")
    _, version, _, hlen = _PRE.unpack_from(blob)
    if not 1 <= version <= VERSION:
        raise DataError(f"{p} has packed-format version {version}; this slimcnn reads versions 1 to {VERSION}")
    start = _PRE.size
    if len(blob) < start + hlen + 32:
        raise DataError(f"{p} is truncated ({len(blob)} bytes; the header alone needs {start + hlen + 32})")
    hbytes = blob[start : start + hlen]
    if hashlib.sha256(hbytes).digest() != blob[start + hlen : start + hlen + 32]:
        raise DataError(f"{p} is corrupt: header checksum mismatch")
    header = json.loads(hbytes)
    payload = memoryview(blob)[start + hlen + 32 :]
    if len(payload) != header["payload_size"]:
        raise DataError(f"{p} is truncated or padded: payload is {len(payload)} bytes, header says {header['payload_size']}")
    if hashlib.sha256(payload).hexdigest() != header["payload_sha256"]:
        bad = [k for k, e in header["tensors"].items() if "seg" in e and hashlib.sha256(_seg(payload, e["seg"])).hexdigest() != e["seg"][2]]
        where = f" (first bad tensor: {bad[0]})" if bad else ""
        raise DataError(f"{p} is corrupt: payload checksum mismatch{where}")
    sd: dict[str, torch.Tensor] = {}
    for key, e in header["tensors"].items():
        if e["kind"] == "raw":
            sd[key] = _raw(_seg(payload, e["seg"]), e["dtype"], e["shape"])
        elif e["kind"] == "kmeans":
            sd[key] = _decode_kmeans(payload, e)
        elif e["kind"] == "kernels":
            sd[key] = _decode_kernels(payload, e)
    for key, e in header["tensors"].items():
        if e["kind"] == "alias":
            sd[key] = sd[e["of"]]
    arch = header.get("arch") or {}
    skeleton = _seg(payload, arch["seg"]) if "seg" in arch else None
    return PackedFile(header, {k: sd[k] for k in header["tensors"]}, skeleton)


def _seg(payload: memoryview, seg: list[Any]) -> bytes:
    off, n = int(seg[0]), int(seg[1])
    if off + n > len(payload):
        raise DataError("packed file is truncated: a segment runs past the end")
    return bytes(payload[off : off + n])


def _raw(data: bytes, dtype: str, shape: list[int]) -> torch.Tensor:
    dt = _dtype(dtype)
    if not data:
        return torch.zeros(shape, dtype=dt)
    return torch.frombuffer(bytearray(data), dtype=torch.uint8).view(dt).reshape(shape).clone()


def decode_indices(payload: memoryview, ix: dict[str, Any]) -> np.ndarray:
    """A k-means layer's centroid indices from its ``indices`` header entry (fixed-width or Huffman)."""
    data = _seg(payload, ix["seg"])
    if ix["coding"] == "huffman":
        lengths = np.frombuffer(_seg(payload, ix["lengths"]), dtype=np.uint8).astype(np.int64)
        return _bits.huffman_decode(data, lengths, ix["count"])
    return _bits.unpack_uint(data, ix["width"], ix["count"])


def _decode_kmeans(payload: memoryview, e: dict[str, Any]) -> torch.Tensor:
    cb = e["codebook"]
    book = _raw(_seg(payload, cb["seg"]), "float16" if cb["dtype"] == "fp16" else "float32", cb["shape"]).float()
    idx = decode_indices(payload, e["indices"])
    shape = tuple(e["shape"])
    numel = int(np.prod(shape)) if shape else 1
    mask = None
    if e["mask"] is not None:
        m = e["mask"]
        flat = _bits.decode_mask(_seg(payload, m["seg"]), m["coding"], m["width"], m["entries"], numel)
        mask = torch.from_numpy(flat).reshape(shape)
    if idx.size and int(idx.max()) >= book.shape[-1]:
        raise DataError("packed file is corrupt: an index points past its codebook")
    return dequantize(book, torch.from_numpy(idx), mask, shape).to(_dtype(e["dtype"]))


def load_packed(path: str | Path, *, model: nn.Module | None = None) -> Any:
    """Load a ``.slim`` file as a :class:`~slimcnn.models.LoadedModel`.

    The architecture is rebuilt from the header's ``arch`` record (a source string for
    ``slimcnn.models.load_model``, or the stored module skeleton) unless ``model`` is given; files
    without one (older slimcnn) use the stored source. The decoded weights are bit-identical to the
    in-memory quantised model.

    Raises:
        DataError: the file is truncated, corrupt or not a packed file.
        ModelLoadError: the architecture cannot be rebuilt from the stored source.
    """
    pf = read_packed(path)
    source = str(pf.header.get("source") or "")
    from slimcnn.models._zoo import LoadedModel

    info = stored_info(pf.header)
    if model is None:
        model = rebuild_architecture(path, pf.header.get("arch"), pf.skeleton, source, info)
    try:
        model.load_state_dict(pf.state_dict, strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise ModelLoadError(f"{path}: weights do not fit the architecture from '{source}': {first}") from e
    info = dataclasses.replace(info, weights=str(path))
    return LoadedModel(model=model.eval(), source=source, info=info)


def _slim_file_loader(path: Path, opts: Any) -> Any:
    """``file:model.slim`` for every command (registered in ``slimcnn.models.FILE_LOADERS``)."""
    if getattr(opts, "arch", None) is not None:
        raise ConfigError(f"'{path}' is a packed file that names its own architecture; drop --arch")
    loaded = load_packed(path)
    return dataclasses.replace(loaded, source=f"file:{path}")


def register_slim_loader() -> None:
    """Register :func:`_slim_file_loader` for ``.slim`` (idempotent)."""
    from slimcnn.models.files import FILE_LOADERS, register_file_loader

    if ".slim" not in FILE_LOADERS:
        register_file_loader(".slim")(_slim_file_loader)
