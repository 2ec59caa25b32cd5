"""Exactness of the fast CHIP channel-independence methods against the definition.

Tolerance: CI is a *difference* of two nuclear norms, so a relative error on CI itself is
meaningless for unimportant channels (CI ~ 0). We compare with an absolute tolerance relative to
the scale of the quantities being subtracted, ``mean_n ||A_n||_*``:
``|CI_method - CI_direct| <= 1e-5 * mean_n ||A_n||_*`` (the public contract is 1e-4; measured
agreement is ~1e-9 or better).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from slimcnn.errors import ConfigError
from slimcnn.prune.chip import ChipMethod, chip_scores

FAST: tuple[ChipMethod, ...] = ("gram", "secular", "auto")
ALL: tuple[ChipMethod, ...] = ("direct", *FAST)
TOL = 1e-5


def _nuclear_scale(features: torch.Tensor) -> float:
    n, c = features.shape[:2]
    a = features.reshape(n, c, -1).double()
    return float(torch.linalg.svdvals(a).sum(-1).mean())


def _official_style(features: torch.Tensor, decimals: int | None) -> torch.Tensor:
    """The definition, written the slow obvious way: one nuclear norm per (image, channel)."""
    n, c = features.shape[:2]
    out = torch.zeros(c, dtype=torch.float64)
    for k in range(n):
        a = features[k].reshape(c, -1).numpy()
        if decimals is not None:
            a = np.round(a, decimals)
        a = torch.from_numpy(np.asarray(a, dtype=np.float64))
        full = torch.linalg.matrix_norm(a, "nuc")
        for i in range(c):
            b = a.clone()
            b[i] = 0
            out[i] += full - torch.linalg.matrix_norm(b, "nuc")
    return out / n


def _features(kind: str, n: int, c: int, hw: int) -> torch.Tensor:
    side = int(round(hw**0.5))
    shape = (n, c, side, hw // side)
    if kind == "gauss":
        return torch.randn(shape)
    if kind == "relu":  # post-ReLU: nonnegative, ~half zeros, heavy-ish tail
        return torch.relu(torch.randn(shape) * 1.5 + 0.2) ** 1.5
    if kind == "sparse":  # ReLU-like and mostly zero
        x = torch.relu(torch.randn(shape) - 1.0)
        return x * (torch.rand(shape) < 0.3)
    if kind == "lowrank":  # rank 2 across channels
        u = torch.randn(n, c, 2)
        v = torch.randn(n, 2, hw)
        return (u @ v).reshape(shape)
    if kind == "degenerate":  # duplicate rows, an all-zero channel, a scaled copy
        x = torch.relu(torch.randn(shape))
        x[:, 0] = 0
        if c > 2:
            x[:, 2] = x[:, 1]
        if c > 3:
            x[:, 3] = 2 * x[:, 1]
        return x
    raise ValueError(kind)


SHAPES = [(c, hw) for c in (4, 16, 64) for hw in (4, 64, 1024) if c * hw <= 16 * 1024]
KINDS = ["gauss", "relu", "sparse", "lowrank", "degenerate"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("c", "hw"), SHAPES)
def test_fast_methods_match_direct(kind: str, c: int, hw: int) -> None:
    feats = _features(kind, 2, c, hw)
    ref = chip_scores(feats, method="direct")
    scale = _nuclear_scale(feats)
    for method in FAST:
        got = chip_scores(feats, method=method)
        assert got.shape == (c,) and got.dtype == torch.float64
        err = float((got - ref).abs().max())
        assert err <= TOL * scale, f"{method}: max|diff|={err:.3g}, scale={scale:.3g}"


def test_direct_matches_one_norm_per_channel() -> None:
    feats = _features("relu", 3, 8, 16)
    ref = _official_style(feats, None)
    got = chip_scores(feats, method="direct")
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-9 * _nuclear_scale(feats))


def test_c64_hw64_all_methods_and_batching() -> None:
    feats = _features("relu", 3, 64, 64)
    ref = chip_scores(feats, method="direct", batch_size=2)
    scale = _nuclear_scale(feats)
    for method in FAST[:2]:
        for bs in (1, 2):
            got = chip_scores(feats, method=method, batch_size=bs)
            assert float((got - ref).abs().max()) <= TOL * scale


def test_chunks_on_several_cores_give_the_single_thread_result_and_restore_threads() -> None:
    feats = torch.relu(torch.randn(40, 16, 4, 4, generator=torch.Generator().manual_seed(3)))
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = chip_scores(feats, batch_size=3)
        torch.set_num_threads(2)
        two = chip_scores(feats, batch_size=3)  # 14 chunks over 2 worker threads
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(previous)
    assert torch.equal(one, two)
    assert torch.allclose(one, chip_scores(feats, method="direct"), rtol=1e-6, atol=1e-9)

def test_known_values() -> None:
    # Orthogonal rows: ||A||_* = sum of row norms, so CI(i) = ||row i||.
    a = torch.zeros(1, 3, 2, 2)
    a[0, 0, 0, 0] = 3.0
    a[0, 1, 0, 1] = 4.0
    a[0, 2, 1, 0] = 0.5
    for method in ALL:
        torch.testing.assert_close(
            chip_scores(a, method=method), torch.tensor([3.0, 4.0, 0.5], dtype=torch.float64)
        )
    # Two identical rows r: ||A||_* = sqrt(2)|r|, removing one leaves |r|.
    b = torch.ones(1, 2, 1, 4)
    for method in ALL:
        torch.testing.assert_close(
            chip_scores(b, method=method), torch.full((2,), 2 * (2**0.5 - 1), dtype=torch.float64)
        )


def test_zero_channel_scores_zero_and_ranks_lowest() -> None:
    feats = _features("degenerate", 4, 16, 64)
    for method in ALL:
        ci = chip_scores(feats, method=method)
        assert abs(float(ci[0])) <= 1e-7 * _nuclear_scale(feats)
        assert int(ci.argmin()) == 0


def test_all_zero_and_single_channel() -> None:
    zeros = torch.zeros(2, 5, 3, 3)
    one = torch.rand(2, 1, 3, 3)
    expected = torch.linalg.vector_norm(one.reshape(2, -1).double(), dim=1).mean()
    for method in ALL:
        assert torch.equal(chip_scores(zeros, method=method), torch.zeros(5, dtype=torch.float64))
        torch.testing.assert_close(chip_scores(one, method=method)[0], expected)


def test_scale_equivariance_and_dtypes() -> None:
    feats = _features("relu", 2, 16, 64)
    base = chip_scores(feats)
    torch.testing.assert_close(chip_scores(feats * 1e4), base * 1e4, rtol=1e-7, atol=0.0)
    torch.testing.assert_close(chip_scores(feats * 1e-4), base * 1e-4, rtol=1e-7, atol=0.0)
    torch.testing.assert_close(chip_scores(feats.double()), base)
    half = feats.half()
    torch.testing.assert_close(chip_scores(half), chip_scores(half.double()))


def test_round_decimals_reproduces_official_rounding() -> None:
    feats = _features("relu", 3, 8, 16) * 0.37
    rounded = chip_scores(feats, round_decimals=4)
    torch.testing.assert_close(rounded, chip_scores(torch.round(feats.double(), decimals=4)))
    torch.testing.assert_close(rounded, _official_style(feats, 4), rtol=0, atol=1e-7)
    assert not torch.equal(rounded, chip_scores(feats))
    # rounding coarse enough to zero every entry gives all-zero scores
    assert torch.equal(chip_scores(feats * 1e-6, round_decimals=2), torch.zeros(8, dtype=torch.float64))


@pytest.mark.parametrize(
    ("features", "kwargs", "match"),
    [
        (torch.rand(4, 8, 8), {}, "shape"),
        (torch.rand(2, 3, 4, 4, 1), {}, "shape"),
        (torch.ones(2, 3, 4, 4, dtype=torch.int64), {}, "floating"),
        (torch.rand(0, 3, 4, 4), {}, "N >= 1"),
        (torch.rand(2, 0, 4, 4), {}, "C >= 1"),
        (torch.rand(2, 3, 0, 4), {}, "H\\*W >= 1"),
        (torch.rand(2, 3, 4, 4), {"method": "svd"}, "Unknown CHIP method"),
        (torch.rand(2, 3, 4, 4), {"round_decimals": 4.0}, "round_decimals"),
        (torch.rand(2, 3, 4, 4), {"round_decimals": True}, "round_decimals"),
        (torch.rand(2, 3, 4, 4), {"batch_size": 0}, "batch_size"),
        (torch.full((2, 3, 4, 4), float("nan")), {}, "NaN"),
        *[(torch.rand(2, 3, 4, 4).index_put_((torch.tensor(1), torch.tensor(2), torch.tensor(3), torch.tensor(0)),
                                             torch.tensor(bad)), {"method": m}, "NaN or Inf")
          for bad in (float("nan"), float("inf")) for m in ("secular", "gram", "direct")],
        ("not a tensor", {}, "torch.Tensor"),
    ],
)
def test_bad_input_raises_config_error(features: object, kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        chip_scores(features, **kwargs)  # type: ignore[arg-type]


def _wide_spectrum_features(kind: str, gen: torch.Generator) -> torch.Tensor:
    if kind == "graded":  # channel scales over 6 decades: Gram condition number ~1e12
        return torch.randn(3, 32, 8, 8, generator=gen) * torch.logspace(0, -6, 32)[None, :, None, None]
    if kind == "graded_relu":
        return torch.relu(torch.randn(3, 32, 8, 8, generator=gen)) * torch.logspace(0, -5, 32)[None, :, None, None]
    if kind == "flat":  # all eigenvalues close together: the grid is short, the tails carry much of the integral
        return torch.eye(64).reshape(1, 64, 8, 8) + 1e-3 * torch.randn(2, 64, 8, 8, generator=gen)
    if kind == "singular":  # H*W < C: 48 zero eigenvalues, N/D -> 0 below the grid
        return torch.relu(torch.randn(3, 64, 4, 4, generator=gen))
    raise ValueError(kind)


@pytest.mark.parametrize("kind", ["graded", "graded_relu", "flat", "singular"])
def test_secular_grid_and_closed_form_tails_keep_1e9_accuracy(kind: str) -> None:
    # "secular" evaluates the integrand only across each image's spectrum and sums the rest of the
    # trapezoid rule in closed form; dropping either tail would be off by >1e-3 of the scale here.
    feats = _wide_spectrum_features(kind, torch.Generator().manual_seed(7))
    ref = chip_scores(feats, method="direct")
    err = float((chip_scores(feats, method="secular") - ref).abs().max())
    assert err <= 1e-9 * _nuclear_scale(feats), f"max|diff|={err:.3g}, scale={_nuclear_scale(feats):.3g}"
