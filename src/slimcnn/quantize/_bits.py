"""Bit-level codecs of the packed file: fixed-width packing, sparse positions, Huffman.

All codecs are vectorised numpy except Huffman decoding, which walks the code chain in a tight
loop over a precomputed per-bit-position lookup (only used when ``--huffman`` is on).
"""

from __future__ import annotations

import heapq

import numpy as np
from numpy.typing import NDArray

from slimcnn.errors import DataError

U8 = NDArray[np.uint8]
I64 = NDArray[np.int64]


def pack_uint(values: NDArray[np.integer], width: int) -> bytes:
    """Pack non-negative integers ``< 2**width`` into a big-endian bit stream, ``width`` bits each."""
    v = np.asarray(values, dtype=np.uint32).reshape(-1)
    if width <= 0 or v.size == 0:
        return b""
    shifts = np.arange(width - 1, -1, -1, dtype=np.uint32)
    bits = ((v[:, None] >> shifts) & 1).astype(np.uint8)
    return np.packbits(bits.reshape(-1)).tobytes()


def unpack_uint(data: bytes, width: int, count: int) -> I64:
    """Inverse of :func:`pack_uint`."""
    if count == 0 or width <= 0:
        return np.zeros(count, dtype=np.int64)
    need = (count * width + 7) // 8
    if len(data) < need:
        raise DataError(f"bit stream holds {len(data)} bytes, expected {need}")
    bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8), count=count * width).reshape(count, width)
    weights = (1 << np.arange(width - 1, -1, -1, dtype=np.int64)).astype(np.int64)
    return bits.astype(np.int64) @ weights


# ----------------------------------------------------------------------------- sparse positions
def relative_entries(positions: I64, width: int) -> I64:
    """Deep Compression relative indexing: gaps in ``width`` bits with filler entries.

    Entry ``e < M = 2**width - 1`` means "skip ``e`` positions, then a kept weight"; ``e == M``
    is a filler meaning "skip ``M`` positions, no weight" (used when a gap overflows).
    """
    m = (1 << width) - 1
    gaps = np.diff(np.concatenate([[-1], positions])) - 1
    fill = gaps // m
    rem = gaps - fill * m
    reps = fill + 1
    out = np.full(int(reps.sum()), m, dtype=np.int64)
    out[np.cumsum(reps) - 1] = rem
    return out


def relative_cost_bits(positions: I64, width: int) -> int:
    """Bits of :func:`relative_entries` without building it."""
    m = (1 << width) - 1
    gaps = np.diff(np.concatenate([[-1], positions])) - 1
    return int((gaps // m).sum() + positions.size) * width


def decode_relative(entries: I64, width: int) -> I64:
    """Positions from :func:`relative_entries`."""
    m = (1 << width) - 1
    is_w = entries < m
    step = entries + is_w.astype(np.int64)
    return (np.cumsum(step) - 1)[is_w]


def _cheapest_coding(mask_flat: NDArray[np.bool_]) -> tuple[str, int, int]:
    """``(kind, width, bits)`` of the cheaper of a bitmap and relative indexing (best width 1..16)."""
    n = mask_flat.size
    pos = np.flatnonzero(mask_flat)
    gaps = np.diff(pos, prepend=-1) - 1
    hist = np.bincount(gaps)  # gap-length histogram: each width costs O(max gap), not O(n)
    lengths = np.arange(hist.size)
    best = ("bitmap", 1, n)
    for width in range(1, 17):
        fillers = int(np.dot(hist, lengths // ((1 << width) - 1)))
        c = (fillers + pos.size) * width
        if c < best[2]:
            best = ("relative", width, c)
    return best


def best_sparse_coding(mask_flat: NDArray[np.bool_]) -> tuple[str, int]:
    """The cheaper of a bitmap and relative indexing (best width 1..16): ``(kind, width)``."""
    kind, width, _ = _cheapest_coding(mask_flat)
    return kind, width


def mask_bytes(mask_flat: NDArray[np.bool_]) -> int:
    """Bytes :func:`encode_mask` writes for ``mask_flat`` in its :func:`best_sparse_coding`."""
    return -(-_cheapest_coding(mask_flat)[2] // 8)


def encode_mask(mask_flat: NDArray[np.bool_], kind: str, width: int) -> tuple[bytes, int]:
    """Encode a keep mask; returns (bytes, number of entries)."""
    if kind == "bitmap":
        return np.packbits(mask_flat.astype(np.uint8)).tobytes(), mask_flat.size
    entries = relative_entries(np.flatnonzero(mask_flat).astype(np.int64), width)
    return pack_uint(entries, width), entries.size


def decode_mask(data: bytes, kind: str, width: int, entries: int, numel: int) -> NDArray[np.bool_]:
    """Inverse of :func:`encode_mask`."""
    if kind == "bitmap":
        if len(data) * 8 < numel:
            raise DataError("sparsity bitmap is shorter than the tensor")
        return np.unpackbits(np.frombuffer(data, dtype=np.uint8), count=numel).astype(bool)
    pos = decode_relative(unpack_uint(data, width, entries), width)
    if pos.size and (pos[-1] >= numel or pos[0] < 0):
        raise DataError("sparse positions point outside the tensor")
    mask = np.zeros(numel, dtype=bool)
    mask[pos] = True
    return mask


# ----------------------------------------------------------------------------- Huffman
MAX_CODE_LEN = 24


def huffman_lengths(counts: NDArray[np.int64]) -> I64:
    """Code length per symbol (0 for unused symbols) of an optimal prefix code."""
    lengths = np.zeros(counts.size, dtype=np.int64)
    used = [int(i) for i in np.flatnonzero(counts)]
    if len(used) == 1:
        lengths[used[0]] = 1
        return lengths
    heap: list[tuple[int, int, list[int]]] = [(int(counts[i]), i, [i]) for i in used]
    heapq.heapify(heap)
    while len(heap) > 1:
        c1, t1, s1 = heapq.heappop(heap)
        c2, t2, s2 = heapq.heappop(heap)
        for s in s1 + s2:
            lengths[s] += 1
        heapq.heappush(heap, (c1 + c2, min(t1, t2), s1 + s2))
    return lengths


def canonical_codes(lengths: I64) -> I64:
    """Canonical code values for the given lengths (symbols sorted by (length, symbol))."""
    codes = np.zeros(lengths.size, dtype=np.int64)
    order = sorted((int(lengths[i]), i) for i in np.flatnonzero(lengths))
    code, prev = 0, 0
    for ln, s in order:
        code <<= ln - prev
        codes[s] = code
        code += 1
        prev = ln
    return codes


def huffman_encode(symbols: I64, lengths: I64) -> bytes:
    """Concatenate the canonical codes of ``symbols`` into a byte string."""
    codes = canonical_codes(lengths)
    ln = lengths[symbols]
    cd = codes[symbols]
    starts = np.concatenate([[0], np.cumsum(ln)[:-1]])
    total = int(ln.sum())
    bits = np.zeros(total, dtype=np.uint8)
    for j in range(int(ln.max()) if ln.size else 0):
        sel = ln > j
        bits[starts[sel] + j] = (cd[sel] >> (ln[sel] - 1 - j)) & 1
    return np.packbits(bits).tobytes()


def huffman_decode(data: bytes, lengths: I64, count: int) -> I64:
    """Decode ``count`` symbols of :func:`huffman_encode` output."""
    if count == 0:
        return np.zeros(0, dtype=np.int64)
    codes = canonical_codes(lengths)
    lmax = int(lengths.max())
    table_sym = np.full(1 << lmax, -1, dtype=np.int64)
    table_len = np.zeros(1 << lmax, dtype=np.int64)
    for s in np.flatnonzero(lengths):
        ln = int(lengths[s])
        lo = int(codes[s]) << (lmax - ln)
        table_sym[lo : lo + (1 << (lmax - ln))] = s
        table_len[lo : lo + (1 << (lmax - ln))] = ln
    bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8)).astype(np.int64)
    bits = np.concatenate([bits, np.zeros(lmax, dtype=np.int64)])
    nwin = bits.size - lmax
    win = np.zeros(nwin, dtype=np.int64)
    for j in range(lmax):
        win = (win << 1) | bits[j : j + nwin]
    step = table_len[win].tolist()
    out_pos = np.empty(count, dtype=np.int64)
    p = 0
    for i in range(count):
        if p >= nwin or step[p] == 0:
            raise DataError("Huffman stream is corrupt or truncated")
        out_pos[i] = p
        p += step[p]
    if p > nwin:
        raise DataError("Huffman stream is truncated")
    return table_sym[win[out_pos]]
