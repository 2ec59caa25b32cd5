"""1-D k-means solvers on *sorted, weighted* data (values with multiplicities).

All solvers take ``x`` sorted ascending (float64, usually the unique values of a layer) and
``w`` their multiplicities, and return sorted centroids. Clustering ``(x, w)`` is the same problem
as clustering the raw values, so the exact solvers here are exact for the raw data too.

* :func:`dp_exact` - the optimal dynamic programme (Wang & Song, "Ckmeans.1d.dp", R Journal 2011)
  with a divide-and-conquer row solver (the cost matrix is totally monotone), vectorised level by
  level in numpy: ``O(k * n log n)`` numpy work.
* :func:`two_means_exact` - ``k = 2`` by scanning every split point: ``O(n)``.
* :func:`lloyd_sorted` - Lloyd's iteration on sorted data; each iteration is ``O(k log n)``
  (boundaries by binary search, means by prefix sums), so it converges fast even on 37 M values.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

F64 = NDArray[np.float64]


def _prefix(x: F64, w: F64) -> tuple[F64, F64, F64]:
    zero = np.zeros(1)
    return (
        np.concatenate([zero, np.cumsum(w)]),
        np.concatenate([zero, np.cumsum(w * x)]),
        np.concatenate([zero, np.cumsum(w * x * x)]),
    )


def _cost(pw: F64, p1: F64, p2: F64, a: NDArray[np.int64], b: NDArray[np.int64]) -> F64:
    """Weighted SSE of the points ``[a, b)`` around their mean (``b > a``)."""
    cw = pw[b] - pw[a]
    c1 = p1[b] - p1[a]
    out = (p2[b] - p2[a]) - c1 * c1 / np.maximum(cw, 1e-300)
    return np.maximum(out, 0.0)


def objective(values: F64, weights: F64 | None, centroids: F64) -> float:
    """Weighted sum of squared distances from each value to its nearest centroid."""
    c = np.sort(np.asarray(centroids, dtype=np.float64))
    idx = nearest(values, c)
    d = values - c[idx]
    return float(np.sum(d * d if weights is None else weights * d * d))


def nearest(values: NDArray[np.floating], centroids_sorted: F64) -> NDArray[np.int64]:
    """Index of the nearest of the sorted ``centroids`` for every value (ties go left)."""
    if centroids_sorted.size == 1:
        return np.zeros(values.shape, dtype=np.int64)
    mids = (centroids_sorted[:-1] + centroids_sorted[1:]) / 2.0
    return np.searchsorted(mids, values, side="left").astype(np.int64)


def two_means_exact(x: F64, w: F64) -> F64:
    """Optimal 2-means of sorted weighted data by scanning all ``n - 1`` split points."""
    pw, p1, p2 = _prefix(x, w)
    n = x.size
    lw, l1, l2 = pw[1:n], p1[1:n], p2[1:n]
    rw, r1, r2 = pw[n] - lw, p1[n] - l1, p2[n] - l2
    total = (l2 - l1 * l1 / lw) + (r2 - r1 * r1 / rw)
    s = 1 + int(np.argmin(total))
    return np.array([p1[s] / pw[s], (p1[n] - p1[s]) / (pw[n] - pw[s])])


def dp_exact(x: F64, w: F64, k: int) -> F64:
    """Globally optimal weighted 1-D k-means (``k < n``) by dynamic programming.

    ``D[m][i]`` is the least cost of covering the first ``i`` points with ``m`` clusters and
    ``D[m][i] = min_j D[m-1][j] + cost(j, i)``. The minimising ``j`` is non-decreasing in ``i``, so
    each level is solved by divide and conquer; all sub-problems of one recursion depth are done
    in one vectorised step (ragged candidate lists + ``minimum.reduceat``).
    """
    n = x.size
    pw, p1, p2 = _prefix(x, w)
    prev = np.full(n + 1, np.inf)
    ii = np.arange(1, n + 1, dtype=np.int64)
    prev[1:] = _cost(pw, p1, p2, np.zeros_like(ii), ii)
    opts: list[NDArray[np.int64]] = []
    for m in range(2, k + 1):
        cur = np.full(n + 1, np.inf)
        opt = np.zeros(n + 1, dtype=np.int64)
        if m == k:  # only D[k][n] is needed
            j = np.arange(k - 1, n, dtype=np.int64)
            v = prev[j] + _cost(pw, p1, p2, j, np.full_like(j, n))
            a = int(np.argmin(v))
            cur[n], opt[n] = v[a], j[a]
        else:
            _level(prev, cur, opt, pw, p1, p2, lo=m, hi=n, optlo=m - 1, opthi=n - 1)
        opts.append(opt)
        prev = cur
    # backtrack the cluster boundaries
    bounds = [n]
    i = n
    for opt in reversed(opts):
        i = int(opt[i])
        bounds.append(i)
    bounds.append(0)
    b = np.array(bounds[::-1], dtype=np.int64)
    return (p1[b[1:]] - p1[b[:-1]]) / (pw[b[1:]] - pw[b[:-1]])


def _level(
    prev: F64, cur: F64, opt: NDArray[np.int64], pw: F64, p1: F64, p2: F64, *, lo: int, hi: int, optlo: int, opthi: int
) -> None:
    s_lo = np.array([lo], dtype=np.int64)
    s_hi = np.array([hi], dtype=np.int64)
    s_olo = np.array([optlo], dtype=np.int64)
    s_ohi = np.array([opthi], dtype=np.int64)
    while s_lo.size:
        mid = (s_lo + s_hi) // 2
        top = np.minimum(s_ohi, mid - 1)
        lens = top - s_olo + 1  # >= 1 by construction
        starts = np.concatenate([[0], np.cumsum(lens)[:-1]])
        total = int(lens.sum())
        seg = np.repeat(np.arange(mid.size), lens)
        j = s_olo[seg] + (np.arange(total) - starts[seg])
        v = prev[j] + _cost(pw, p1, p2, j, mid[seg])
        vmin = np.minimum.reduceat(v, starts)
        first = np.where(v == vmin[seg], np.arange(total), total)
        pos = np.minimum.reduceat(first, starts)
        best = j[pos]
        cur[mid] = vmin
        opt[mid] = best
        left = s_lo <= mid - 1
        right = mid + 1 <= s_hi
        s_lo, s_hi, s_olo, s_ohi = (
            np.concatenate([s_lo[left], (mid + 1)[right]]),
            np.concatenate([(mid - 1)[left], s_hi[right]]),
            np.concatenate([s_olo[left], best[right]]),
            np.concatenate([best[left], s_ohi[right]]),
        )


def lloyd_sorted(x: F64, w: F64, init: F64, *, max_iter: int = 1000) -> F64:
    """Lloyd's k-means on sorted weighted data from ``init`` centroids, to convergence.

    Assignments are contiguous runs, so one iteration is ``k`` binary searches plus ``k``
    prefix-sum differences. Empty clusters keep their centroid.
    """
    pw, p1, _ = _prefix(x, w)
    c = np.sort(np.asarray(init, dtype=np.float64))
    cuts_old: NDArray[np.int64] | None = None
    for _ in range(max_iter):
        mids = (c[:-1] + c[1:]) / 2.0
        cuts = np.concatenate([[0], np.searchsorted(x, mids, side="left"), [x.size]]).astype(np.int64)
        if cuts_old is not None and np.array_equal(cuts, cuts_old):
            break
        cw = pw[cuts[1:]] - pw[cuts[:-1]]
        c1 = p1[cuts[1:]] - p1[cuts[:-1]]
        c = np.where(cw > 0, c1 / np.maximum(cw, 1e-300), c)
        c = np.sort(c)
        cuts_old = cuts
    return c


def linear_init(x: F64, k: int) -> F64:
    """Deep Compression's linear initialisation: ``k`` points evenly spaced over ``[min, max]``."""
    return np.linspace(float(x[0]), float(x[-1]), k)


def binned(x: F64, w: F64, bins: int) -> tuple[F64, F64]:
    """Collapse sorted weighted data into runs (means, weights) for the large-layer fallback.

    Run edges are the union of ``bins`` equal-weight edges (resolution where the mass is) and
    ``bins`` equal-width edges (resolution in the sparse tails, where 1-D k-means puts many
    centroids); so at most ``2 * bins`` runs.
    """
    pw, p1, _ = _prefix(x, w)
    e_weight = np.searchsorted(pw, np.linspace(0.0, pw[-1], bins + 1), side="left")
    e_width = np.searchsorted(x, np.linspace(x[0], x[-1], bins + 1), side="left")
    edges = np.unique(np.concatenate([e_weight, e_width, [0, x.size]]).clip(0, x.size))
    bw = pw[edges[1:]] - pw[edges[:-1]]
    keep = bw > 0
    bm = (p1[edges[1:]] - p1[edges[:-1]])[keep] / bw[keep]
    return bm, bw[keep]
