"""k-means layers in the deployable bit layout shared by the ONNX and C exports.

A :class:`PackedLayer` is one quantised weight as a deployment target stores it: a float32
codebook (``rows x k``; one row per layer, or one per output channel), the centroid index of each
kept weight as a big-endian bit stream of fixed ``width`` bits (the ``.slim`` "fixed" coding,
:func:`slimcnn.quantize._bits.pack_uint`) and, for a pruned layer, the keep mask in the smaller of
the ``.slim`` mask codings (a bitmap, or Deep Compression relative indexing). Huffman-coded indices
of a ``.slim`` file are re-coded at fixed width (no runtime decodes Huffman in-graph).

The layers come from a ``.slim`` file (:func:`slim_layers`, read with the file's checksums) or from
an in-memory :class:`~slimcnn.quantize.QuantizeResult` (:func:`pack_layers`); the reference decoder
is :func:`slimcnn.quantize.dequantize`, which :meth:`PackedLayer.decode` calls.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from slimcnn.errors import DataError
from slimcnn.quantize import QuantizedLayer, _bits, dequantize
from slimcnn.quantize._model import KernelWeight, kernel_sparse

MaskKind = Literal["none", "bitmap", "relative"]


@dataclass(frozen=True)
class PackedLayer:
    """One k-means weight in the bit layout of the ONNX and C exports."""

    layer: str
    """Module FQN (``"layer1.0.conv1"``); the tensor is ``f"{layer}.weight"``."""
    shape: tuple[int, ...]
    codebook: np.ndarray
    """float32 ``[rows, k]``; ``rows`` is 1 (per layer) or ``shape[0]`` (per output channel)."""
    width: int
    """Bits per index (``ceil(log2 k)``, at least 1)."""
    count: int
    """Number of indices (kept weights)."""
    indices: bytes
    """``count`` indices, ``width`` bits each, most significant bit first, zero-padded to a byte."""
    mask_kind: MaskKind = "none"
    mask_width: int = 0
    """Bits per relative-index entry (``relative`` only)."""
    mask_entries: int = 0
    """Bitmap bits (= numel) or relative entries (kept weights + fillers)."""
    mask: bytes = b""

    @property
    def numel(self) -> int:
        """Elements of the dense weight."""
        return int(math.prod(self.shape))

    @property
    def rows(self) -> int:
        """Codebook rows (1 or the output channels)."""
        return int(self.codebook.shape[0])

    @property
    def k(self) -> int:
        """Centroids per codebook row."""
        return int(self.codebook.shape[1])

    @property
    def payload_bytes(self) -> int:
        """Bytes of codebook + indices + mask as stored."""
        return int(self.codebook.nbytes) + len(self.indices) + len(self.mask)

    def index_values(self) -> np.ndarray:
        """The indices as int64 ``[count]``."""
        return _bits.unpack_uint(self.indices, self.width, self.count)

    def keep_mask(self) -> np.ndarray | None:
        """The keep mask as bool ``[numel]`` (None when every weight is kept)."""
        if self.mask_kind == "none":
            return None
        return _bits.decode_mask(self.mask, self.mask_kind, self.mask_width, self.mask_entries, self.numel)

    def decode(self) -> torch.Tensor:
        """The dense float32 weight, decoded by :func:`slimcnn.quantize.dequantize` (the Python reference)."""
        m = self.keep_mask()
        book = torch.from_numpy(self.codebook.copy())
        return dequantize(book[0] if self.rows == 1 else book, torch.from_numpy(self.index_values()),
                          None if m is None else torch.from_numpy(m), self.shape)


def pack_layer(layer: str, shape: tuple[int, ...], codebook: torch.Tensor | np.ndarray, indices: torch.Tensor | np.ndarray,
               mask: torch.Tensor | np.ndarray | None) -> PackedLayer:
    """Pack one layer's codebook (``Tensor[k]`` or ``Tensor[out, k]``), indices and keep mask."""
    book = np.asarray(codebook.detach().cpu().numpy() if isinstance(codebook, torch.Tensor) else codebook,
                      dtype=np.float32)
    book = book.reshape(1, -1) if book.ndim == 1 else book
    idx = np.asarray(indices.cpu().numpy() if isinstance(indices, torch.Tensor) else indices).astype(np.int64).reshape(-1)
    k = int(book.shape[1])
    width = max(1, math.ceil(math.log2(k))) if k > 1 else 1
    if idx.size and (int(idx.min()) < 0 or int(idx.max()) >= k):
        raise DataError(f"{layer}: an index points outside its codebook of {k} entries")
    kind: MaskKind = "none"
    mwidth = entries = 0
    mbytes = b""
    if mask is not None:
        flat = np.asarray(mask.cpu().numpy() if isinstance(mask, torch.Tensor) else mask).astype(bool).reshape(-1)
        if not flat.all():
            kind_s, mwidth = _bits.best_sparse_coding(flat)
            kind = "bitmap" if kind_s == "bitmap" else "relative"
            mbytes, entries = _bits.encode_mask(flat, kind_s, mwidth)
            mwidth = mwidth if kind == "relative" else 1
        elif idx.size != flat.size:
            raise DataError(f"{layer}: {idx.size} indices for {flat.size} kept weights")
    return PackedLayer(layer, tuple(int(s) for s in shape), book, width, int(idx.size), _bits.pack_uint(idx, width),
                       kind, mwidth, entries, mbytes)


def pack_layers(layers: dict[str, QuantizedLayer]) -> dict[str, PackedLayer]:
    """:func:`pack_layer` for each layer of a :class:`~slimcnn.quantize.QuantizeResult` (``result.layers``)."""
    return {n: pack_layer(n, q.shape, q.codebook, q.indices, q.mask) for n, q in layers.items()}


def slim_layers(path: str | Path) -> dict[str, PackedLayer]:
    """The k-means layers of a ``.slim`` file, by module FQN, verified by the file's checksums.

    Raises:
        DataError: the file is not a packed file, is corrupt, or holds no k-means layer.
    """
    from slimcnn.quantize import read_packed
    from slimcnn.quantize._format import _PRE
    from slimcnn.quantize._read import _seg, decode_indices

    pf = read_packed(path)  # verifies magic, version, header and payload checksums
    blob = Path(path).read_bytes()
    _, _, _, hlen = _PRE.unpack_from(blob)
    payload = memoryview(blob)[_PRE.size + hlen + 32:]
    out: dict[str, PackedLayer] = {}
    for key, e in pf.header["tensors"].items():
        if e.get("kind") != "kmeans":
            continue
        cb = e["codebook"]
        dt = np.float16 if cb["dtype"] == "fp16" else np.float32
        book = np.frombuffer(_seg(payload, cb["seg"]), dtype=dt).astype(np.float32).reshape(cb["shape"])
        idx = decode_indices(payload, e["indices"])
        shape = tuple(int(s) for s in e["shape"])
        mask = None
        if e["mask"] is not None:
            m = e["mask"]
            mask = _bits.decode_mask(_seg(payload, m["seg"]), m["coding"], m["width"], m["entries"], math.prod(shape))
        layer = key.removesuffix(".weight")
        out[layer] = pack_layer(layer, shape, book, idx, mask)
    if not out:
        raise DataError(f"{path} holds no k-means layer")
    return out


def kernel_weights(state_dict: dict[str, torch.Tensor], skip: set[str]) -> dict[str, KernelWeight]:
    """The float weights of ``state_dict`` (but ``skip``, the k-means ones) the exports store as float32 kept
    kernels and keep mask, as ``model.slim`` stores them (:func:`~slimcnn.quantize._model.kernel_sparse`)."""
    out = {}
    for key, t in state_dict.items():
        if key not in skip and key.endswith(".weight") and t.is_floating_point():
            if (kw := kernel_sparse(key, t.detach().cpu().float())) is not None:
                out[key] = kw
    return out


def c_identifier(name: str) -> str:
    """A C identifier for a module FQN: ``layer1.0.conv1`` -> ``layer1_0_conv1``."""
    s = "".join(ch if ch.isalnum() else "_" for ch in name)
    return s if s and not s[0].isdigit() else f"t_{s}"


def describe(layers: dict[str, PackedLayer]) -> list[dict[str, Any]]:
    """Per-layer rows (JSON-ready) of the packed layout."""
    return [{"layer": p.layer, "shape": list(p.shape), "k": p.k, "rows": p.rows, "width": p.width, "kept": p.count,
             "mask": p.mask_kind + (f"/{p.mask_width}bit" if p.mask_kind == "relative" else ""),
             "codebook_bytes": int(p.codebook.nbytes), "index_bytes": len(p.indices), "mask_bytes": len(p.mask)}
            for p in layers.values()]
