"""k-means core: exactness, never worse than scikit-learn, exact reproduction, masks, validation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from slimcnn.errors import ConfigError, DataError
from slimcnn.quantize import _kmeans1d as k1
from slimcnn.quantize import dequantize, fit_kmeans, kmeans_codebook, solve_1d


def _weights(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    heavy = np.where(rng.random(n) < 0.1, 5.0, 1.0)
    return (rng.standard_normal(n) * 0.02 * heavy).astype(np.float32)


@pytest.mark.parametrize(("n", "k"), [(300, 3), (2000, 16), (3000, 64)])
def test_own_dp_matches_kmeans1d(n: int, k: int) -> None:
    kmeans1d = pytest.importorskip("kmeans1d")
    v = _weights(n, n).astype(np.float64).round(4)  # duplicates: exercises the weighted DP
    x, c = np.unique(v, return_counts=True)
    ours = k1.objective(v, None, k1.dp_exact(x, c.astype(float), k))
    ref = k1.objective(v, None, np.asarray(kmeans1d.cluster(v, k)[1]))
    assert ours == pytest.approx(ref, rel=1e-9, abs=1e-12)


def test_two_means_is_optimal() -> None:
    v = np.sort(_weights(500, 1).astype(np.float64))
    best = min(k1.objective(v, None, np.array([v[:s].mean(), v[s:].mean()])) for s in range(1, v.size))
    got = k1.objective(v, None, k1.two_means_exact(v, np.ones_like(v)))
    assert got == pytest.approx(best, rel=1e-12)


@pytest.mark.parametrize("k", [4, 16, 64])
@pytest.mark.parametrize("max_work", [10**9, 1000])  # exact DP, and the binned fallback for huge layers
def test_never_worse_than_sklearn(k: int, max_work: int) -> None:
    sklearn_cluster = pytest.importorskip("sklearn.cluster")
    v = _weights(4000, k).astype(np.float64)
    cents, solver = solve_1d(v, k, max_exact_work=max_work, fallback_bins=256)
    ours = k1.objective(v, None, cents)
    km = sklearn_cluster.KMeans(n_clusters=k, n_init=3, random_state=0).fit(v[:, None])
    theirs = k1.objective(v, None, km.cluster_centers_.ravel())
    assert ours <= theirs * (1 + 1e-9), (solver, ours, theirs)
    assert solver in ({"dp", "kmeans1d"} if max_work > 1000 else {"binned_dp+lloyd"})


def test_lloyd_method_linear_init_converges() -> None:
    v = _weights(3000, 7).astype(np.float64)
    cents, solver = solve_1d(v, 8, method="lloyd")
    exact, _ = solve_1d(v, 8)
    assert solver == "lloyd" and cents.size == 8
    assert k1.objective(v, None, exact) <= k1.objective(v, None, cents) + 1e-12


@pytest.mark.parametrize("per_channel", [False, True])
def test_full_bits_reproduce_exactly(per_channel: bool) -> None:
    w = torch.randint(-20, 20, (6, 3, 3, 3)).float() / 64  # 40 distinct values < 2**6
    book, idx = kmeans_codebook(w, 6, per_channel=per_channel)
    assert torch.equal(dequantize(book, idx, None, w.shape), w)


def test_codebook_size_and_shapes() -> None:
    w = torch.randn(8, 4, 3, 3)
    book, idx = kmeans_codebook(w, 3)
    assert book.shape == (8,) and idx.shape == (w.numel(),) and int(idx.max()) < 8
    book_c, idx_c = kmeans_codebook(w, 2, per_channel=True)
    assert book_c.shape == (8, 4)
    deq = dequantize(book_c, idx_c, None, w.shape)
    for c in range(8):  # each channel only uses its own centroids
        assert set(deq[c].unique().tolist()) <= set(book_c[c].tolist())


def test_pruned_zeros_are_not_clustered() -> None:
    w = torch.randn(16, 16)
    mask = w.abs() > 0.5
    fit = fit_kmeans(w, 1, mask=mask)
    assert fit.indices.numel() == int(mask.sum())
    deq = dequantize(fit.codebook, fit.indices, mask, w.shape)
    assert torch.all(deq[~mask] == 0)
    assert (fit.codebook.abs() > 0.5).all()  # centroids fit the survivors only, not the zeros


def test_deterministic() -> None:
    w = torch.randn(32, 32)
    a = kmeans_codebook(w, 4, seed=1)
    b = kmeans_codebook(w, 4, seed=1)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


@pytest.mark.parametrize("bits", [0, 17, 2.5])
def test_bad_bits(bits: object) -> None:
    with pytest.raises(ConfigError, match="bits"):
        kmeans_codebook(torch.randn(4, 4), bits)  # type: ignore[arg-type]


def test_bad_inputs() -> None:
    with pytest.raises(DataError, match="NaN"):
        kmeans_codebook(torch.tensor([[1.0, float("nan")]]), 1)
    with pytest.raises(ConfigError, match="mask shape"):
        kmeans_codebook(torch.randn(4, 4), 1, mask=torch.ones(3, 3, dtype=torch.bool))
    with pytest.raises(ConfigError, match="method"):
        kmeans_codebook(torch.randn(4, 4), 1, method="kmeans++")  # type: ignore[arg-type]
