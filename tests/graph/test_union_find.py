"""The trace's batched union-find gives the components a one-union-at-a-time union-find gives."""

from __future__ import annotations

import numpy as np
import pytest

from slimcnn.graph._state import UnionFind


def _reference(n: int, edges: list[tuple[int, int]]) -> list[int]:
    parent = list(range(n))

    def find(x: int) -> int:
        while parent[x] != x:
            x = parent[x]
        return x

    for x, y in edges:
        rx, ry = find(x), find(y)
        if rx != ry:
            parent[max(rx, ry)] = min(rx, ry)
    return [find(i) for i in range(n)]


@pytest.mark.parametrize("seed", range(20))
def test_roots_match_a_sequential_union_find(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 400))
    edges = [(int(a), int(b)) for a, b in rng.integers(0, n, size=(int(rng.integers(0, 2 * n)), 2))]
    uf = UnionFind()
    assert uf.add(n) == 0
    for a, b in edges[: len(edges) // 2]:
        uf.union(a, b)
    rest = edges[len(edges) // 2 :]
    uf.union_many([a for a, _ in rest], [b for _, b in rest])
    assert uf.roots() == _reference(n, edges)


def test_a_long_chain_and_ids_added_after_resolving() -> None:
    uf = UnionFind()
    uf.add(1000)
    uf.union_many(list(range(999, 0, -1)), list(range(998, -1, -1)))  # one path, unioned from the far end
    assert set(uf.roots()) == {0}
    first = uf.add(3)
    uf.union(first + 1, first + 2)
    assert uf.roots()[first:] == [first, first + 1, first + 1]
    assert uf.find(first + 2) == first + 1
