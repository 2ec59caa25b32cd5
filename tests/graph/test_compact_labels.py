"""Compact channel labels: narrowing constant axes never changes the labels a tensor carries."""

from __future__ import annotations

import pytest
import torch

from slimcnn.graph._labels import compact, constant_along


def _brute_constant(ids: torch.Tensor, d: int) -> bool:
    n = ids.shape[d]
    return n > 1 and all(torch.equal(ids.select(d, 0), ids.select(d, i)) for i in range(n))


@pytest.mark.parametrize("seed", range(10))
def test_constant_along_matches_a_slice_by_slice_check(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 3, (1, 4, 1, 5), generator=g).expand(2, 4, 3, 5).contiguous()
    ids[1, :, :, 2] = ids[1, :, :, 0]  # some axes constant, some not
    for d in range(ids.dim()):
        assert constant_along(ids, d) == _brute_constant(ids, d)


def test_equal_first_and_last_slices_do_not_make_an_axis_constant() -> None:
    ids = torch.tensor([[3, 7, 3]])  # the short-cut sees 3 == 3; the middle differs
    assert not constant_along(ids, 1)
    assert constant_along(torch.tensor([[5, 5, 5]]), 1)


@pytest.mark.parametrize("contiguous", [False, True])
def test_compact_narrows_broadcast_and_constant_axes_and_keeps_the_labels(contiguous: bool) -> None:
    full = torch.arange(6).view(1, 6, 1, 1).expand(2, 6, 4, 4)  # stride-0 axes (a broadcast view)
    full = full.contiguous() if contiguous else full
    small = compact(full)
    assert tuple(small.shape) == (1, 6, 1, 1)
    assert torch.equal(small.expand(full.shape), full)


def test_compact_keeps_a_varying_spatial_axis() -> None:
    ids = torch.arange(6).view(1, 2, 3, 1).expand(1, 2, 3, 5).contiguous()
    small = compact(ids)
    assert tuple(small.shape) == (1, 2, 3, 1)
    assert torch.equal(small.expand(ids.shape), ids)
