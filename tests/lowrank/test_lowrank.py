"""Low-rank: the paper's rank formulas, exactness at full rank, best-rank approximations, targeting."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from slimcnn.errors import ConfigError
from slimcnn.lowrank import (
    LowRankSpec,
    choose_rank,
    decompose,
    decompose_linear,
    decompose_pointwise,
    decompose_spatial,
    decompose_tucker2,
    energy_rank,
    freeze_factors_,
    rank_candidates,
    round_rank,
    svd_rank,
    tucker2_factors,
    tucker2_rank,
)


@pytest.mark.parametrize(
    ("shape", "expected"),
    [((512, 512, 3), 309), ((64, 64, 3), 38)],
)
def test_tucker2_rank_reproduces_paper_2x_ranks(shape: tuple[int, int, int], expected: int) -> None:
    c, s, k = shape
    assert tucker2_rank(c, s, k, 2.0) == (expected, expected)


@pytest.mark.parametrize(("c", "s", "expected"), [(2048, 512, 204), (64, 64, 16), (64, 256, 25)])
def test_svd_rank_reproduces_paper_2x_ranks(c: int, s: int, expected: int) -> None:
    assert svd_rank(c, s, 2.0) == expected


def test_tucker2_rank_meets_the_compression_target() -> None:
    r1, r2 = tucker2_rank(256, 128, 3, 3.0)
    assert 256 * r1 + 9 * r1 * r2 + r2 * 128 <= 256 * 128 * 9 / 3.0
    r1p = r1 + 1
    assert 256 * r1p + 9 * r1p * r1p + r1p * 128 > 256 * 128 * 9 / 3.0


def test_round_rank_and_bad_values() -> None:
    assert round_rank(309, 8) == 304
    assert round_rank(5, 8) == 8
    assert round_rank(100, 8, maximum=64) == 64
    with pytest.raises(ConfigError):
        round_rank(10, 0)
    with pytest.raises(ConfigError):
        svd_rank(4, 4, 0)


def test_energy_rank() -> None:
    s = torch.tensor([3.0, 2.0, 1.0, 0.0])
    assert energy_rank(s, 9 / 14) == 1
    assert energy_rank(s, 0.9) == 2
    assert energy_rank(s, 1.0) == 3


def test_full_rank_reproduces_each_layer() -> None:
    x = torch.randn(2, 16, 11, 11)
    conv = nn.Conv2d(16, 24, 3, stride=2, padding=1, dilation=1)
    torch.testing.assert_close(decompose_tucker2(conv, 16, 24)(x), conv(x), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(decompose_spatial(conv, 16 * 3)(x), conv(x), atol=1e-5, rtol=1e-5)
    pw = nn.Conv2d(16, 8, 1, stride=2)
    torch.testing.assert_close(decompose_pointwise(pw, 8)(x), pw(x), atol=1e-5, rtol=1e-5)
    lin = nn.Linear(20, 30)
    v = torch.randn(3, 20)
    torch.testing.assert_close(decompose_linear(lin, 20)(v), lin(v), atol=1e-5, rtol=1e-5)


def test_svd_factors_are_the_best_rank_r_approximation() -> None:
    lin = nn.Linear(40, 30)
    seq = decompose_linear(lin, 7)
    approx = seq[1].weight @ seq[0].weight
    u, s, vh = torch.linalg.svd(lin.weight.detach().double())
    best = (u[:, :7] * s[:7]) @ vh[:7]
    torch.testing.assert_close(approx.double(), best, atol=1e-5, rtol=1e-5)
    # Eckart–Young: the error equals the tail of the spectrum.
    err = torch.linalg.matrix_norm(lin.weight.detach().double() - approx.double())
    assert err.item() == pytest.approx(s[7:].pow(2).sum().sqrt().item(), rel=1e-5)


def test_tucker2_factors_multiply_back_to_the_channel_projection() -> None:
    w = torch.randn(24, 16, 3, 3, dtype=torch.float64)
    first, core, last = tucker2_factors(w, 6, 10)
    recon = torch.einsum("pqkl,sp,qc->sckl", core, last, first)
    u_out = last
    u_in = first.T
    proj = torch.einsum("sckl,sp,tp,cq,dq->tdkl", w, u_out, u_out, u_in, u_in)
    torch.testing.assert_close(recon, proj)
    # HOOI never does worse than the HOSVD start.
    f2, c2, l2 = tucker2_factors(w, 6, 10, iters=5)
    recon2 = torch.einsum("pqkl,sp,qc->sckl", c2, l2, f2)
    assert (w - recon2).norm() <= (w - recon).norm() + 1e-9


def test_choose_rank_picks_the_rank_below_the_cliff() -> None:
    # 64 -> 56 saves 1 ms (a cliff); everything else is flat.
    times = [(64, 3.0), (56, 2.0), (48, 1.95), (40, 1.9)]
    assert choose_rank(times) == 56
    flat = [(64, 2.0), (56, 1.99), (48, 1.98)]
    assert choose_rank(flat) == 64
    assert rank_candidates(64, LowRankSpec(rank_multiple=8, search_window=0.25)) == [64, 56, 48]


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(32, 32, 3, padding=1)
        self.dw = nn.Conv2d(32, 32, 3, padding=1, groups=32)
        self.pw = nn.Conv2d(32, 64, 1)
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pw(self.dw(self.conv(x)).relu())
        return self.fc(x.mean((2, 3)))


def test_only_faster_keeps_layers_that_time_slower() -> None:
    model = _Net()
    x = torch.randn(1, 32, 8, 8)

    def timer(module: nn.Module, shape: tuple[int, ...]) -> float:
        # A fake device: Sequentials (decompositions) of the conv are slow, everything else fast.
        if isinstance(module, nn.Sequential) and isinstance(module[0], nn.Conv2d) and module[-1].out_channels == 32:
            return 5.0
        return 1.0 if not isinstance(module, nn.Sequential) else 0.5

    new, result = decompose(model, x, LowRankSpec(ratio=2.0, rank_multiple=4), timer=timer)
    rows = {r.layer: r for r in result.layers}
    assert not rows["conv"].replaced and "kept" in rows["conv"].reason
    assert not rows["dw"].replaced and "grouped" in rows["dw"].reason
    assert rows["pw"].replaced and rows["fc"].replaced
    assert isinstance(new.pw, nn.Sequential) and isinstance(model.pw, nn.Conv2d)  # caller's model untouched
    assert new(x).shape == model(x).shape
    trainable = freeze_factors_(new, result, "outer")
    assert not new.pw[0].weight.requires_grad and new.pw[1].weight.requires_grad
    assert new.conv.weight.requires_grad and any(p is new.pw[1].weight for p in trainable)


def test_all_mode_replaces_every_shrinking_layer_without_timer() -> None:
    model = _Net()
    x = torch.randn(1, 32, 8, 8)
    new, result = decompose(model, x, LowRankSpec(ratio=2.0, rank_multiple=4, only_faster=False), runtime=None)
    assert set(result.replaced) == {"conv", "pw", "fc"}
    assert new(x).shape == (1, 10)
