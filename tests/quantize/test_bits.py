"""Bit-level codecs: fixed-width packing, sparse position coding, Huffman."""

from __future__ import annotations

import numpy as np
import pytest

from slimcnn.quantize import _bits


@pytest.mark.parametrize("width", [1, 3, 8, 9, 16])
def test_pack_roundtrip(width: int) -> None:
    v = np.random.default_rng(width).integers(0, 2**width, 1001)
    data = _bits.pack_uint(v, width)
    assert len(data) == (1001 * width + 7) // 8
    assert np.array_equal(_bits.unpack_uint(data, width, 1001), v)


@pytest.mark.parametrize("width", [1, 2, 4, 8])
def test_relative_positions_with_fillers(width: int) -> None:
    rng = np.random.default_rng(width)
    mask = rng.random(5000) < 0.05
    mask[4999] = True
    mask[:700] = False  # a long gap: needs filler entries
    pos = np.flatnonzero(mask)
    entries = _bits.relative_entries(pos, width)
    assert entries.size * width == _bits.relative_cost_bits(pos, width)
    assert np.array_equal(_bits.decode_relative(entries, width), pos)
    data, n = _bits.encode_mask(mask, "relative", width)
    assert np.array_equal(_bits.decode_mask(data, "relative", width, n, mask.size), mask)


def test_best_coding_prefers_relative_when_sparse_and_bitmap_when_dense() -> None:
    rng = np.random.default_rng(0)
    assert _bits.best_sparse_coding(rng.random(100_000) < 0.02)[0] == "relative"
    assert _bits.best_sparse_coding(rng.random(100_000) < 0.5)[0] == "bitmap"


def test_huffman_roundtrip_and_gain() -> None:
    rng = np.random.default_rng(0)
    sym = np.minimum(rng.geometric(0.3, 20_000) - 1, 255).astype(np.int64)
    lengths = _bits.huffman_lengths(np.bincount(sym, minlength=256).astype(np.int64))
    data = _bits.huffman_encode(sym, lengths)
    assert len(data) < sym.size  # < 8 bits per symbol
    assert np.array_equal(_bits.huffman_decode(data, lengths, sym.size), sym)
