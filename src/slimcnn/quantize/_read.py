"""Reading a ``.slim`` file: verify its checksums, decode its tensors, rebuild and load its model.

The layout and the writing side are in :mod:`slimcnn.quantize._format`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from slimcnn.errors import ConfigError, DataError, ModelLoadError
from slimcnn.models._architecture import rebuild_architecture, stored_info
from slimcnn.quantize import _bits
from slimcnn.quantize._format import _PRE, MAGIC, VERSION, _dtype
from slimcnn.quantize._kmeans import dequantize


@dataclass
class PackedFile:
    """A verified ``.slim`` file: its header and the decoded state dict."""

    header: dict[str, Any]
    state_dict: dict[str, torch.Tensor]
    skeleton: bytes | None = None
    """The pickled architecture (weights on ``meta``) when the header's ``arch`` is a module record."""


def stored_weight_bytes(header: dict[str, Any]) -> tuple[int, dict[str, int]]:
    """What a ``.slim`` file stores of the parameters (:attr:`~slimcnn.quantize.PackReport.weight_bytes`), from its
    header: each quantised layer's codebook, indices and mask as written, the kept kernels and keep mask of a
    ``kernels`` weight, + float32 of the rest; and per such layer, the bytes its weight saves against float32."""
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


def _decode_kernels(payload: memoryview, e: dict[str, Any]) -> torch.Tensor:
    """Inverse of :func:`slimcnn.quantize._format._encode_kernels`: the removed kernels come back as ``+0.0``."""
    shape = [int(s) for s in e["shape"]]
    m = e["mask"]
    keep = _bits.decode_mask(_seg(payload, m["seg"]), m["coding"], m["width"], m["entries"], shape[0] * shape[1])
    out = torch.zeros(shape[0] * shape[1], *shape[2:], dtype=_dtype(e["dtype"]))
    n = int(keep.sum())
    kept = _raw(_seg(payload, e["seg"]), e["dtype"], [n, *shape[2:]])
    out[torch.from_numpy(keep)] = kept
    return out.reshape(shape)


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
