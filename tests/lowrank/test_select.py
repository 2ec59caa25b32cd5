"""Layer targeting: quick scan, side-by-side confirmation, --all reporting slower layers, candidates."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from slimcnn.errors import ConfigError
from slimcnn.lowrank import LowRankSpec, build_factors, decompose, rank_candidates, timing_factors
from slimcnn.lowrank.select import decide_layer


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(32, 32, 3, padding=1)
        self.b = nn.Conv2d(32, 64, 1)
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.b(self.a(x).relu()).mean((2, 3)))


def _fast_scan(module: nn.Module, shape: tuple[int, ...]) -> float:
    """Scan: every decomposition looks twice as fast."""
    return 1.0 if isinstance(module, nn.Sequential) else 2.0


def test_confirmation_overrules_a_lucky_scan() -> None:
    calls: list[str] = []

    def compare(orig: nn.Module, rep: nn.Module, shape: tuple[int, ...]) -> tuple[float, float]:
        calls.append(type(orig).__name__)
        # side by side only the pointwise/linear factors are really faster
        return (2.0, 1.0) if getattr(orig, "kernel_size", (1, 1)) == (1, 1) else (2.0, 1.99)

    new, result = decompose(_Net(), torch.randn(1, 32, 8, 8), LowRankSpec(rank_multiple=4), timer=_fast_scan, compare=compare)
    rows = {r.layer: r for r in result.layers}
    assert not rows["a"].replaced and "confirm" in rows["a"].reason and isinstance(new.a, nn.Conv2d)
    assert rows["b"].replaced and rows["fc"].replaced and "confirmed" in rows["b"].reason
    assert rows["b"].ms_before == 2.0 and rows["b"].ms_after == 1.0 and rows["b"].speedup == 2.0
    assert len(calls) == 3 and rows["a"].ranks_tried  # the scan is kept in the report


def test_no_confirmation_when_the_scan_shows_no_gain() -> None:
    def compare(orig: nn.Module, rep: nn.Module, shape: tuple[int, ...]) -> tuple[float, float]:
        raise AssertionError("must not confirm a layer the scan already rejected")

    _, result = decompose(_Net(), torch.randn(1, 32, 8, 8), LowRankSpec(rank_multiple=4), timer=lambda m, s: 1.0, compare=compare)
    assert result.replaced == [] and all("scan" in r.reason for r in result.layers)


def test_min_speedup_margin_is_required() -> None:
    layer = nn.Conv2d(32, 64, 1)
    spec = LowRankSpec(rank_multiple=4, min_speedup=1.1)
    row, factors = decide_layer("b", layer, (1, 32, 8, 8), spec, _fast_scan, lambda o, r, s: (1.05, 1.0))
    assert factors is None and not row.replaced
    row, factors = decide_layer("b", layer, (1, 32, 8, 8), spec, _fast_scan, lambda o, r, s: (1.2, 1.0))
    assert factors is not None and row.replaced
    with pytest.raises(ConfigError, match="min-speedup"):
        LowRankSpec(min_speedup=0)


def test_all_mode_reports_slower_layers() -> None:
    def compare(orig: nn.Module, rep: nn.Module, shape: tuple[int, ...]) -> tuple[float, float]:
        return (1.0, 1.5) if isinstance(orig, nn.Linear) else (2.0, 1.0)

    spec = LowRankSpec(rank_multiple=4, only_faster=False)
    new, result = decompose(_Net(), torch.randn(1, 32, 8, 8), spec, timer=_fast_scan, compare=compare)
    assert set(result.replaced) == {"a", "b", "fc"} and result.slower == ["fc"]
    rows = {r.layer: r for r in result.layers}
    assert "SLOWER" in rows["fc"].reason and rows["fc"].slower and not rows["a"].slower


def test_timing_factors_match_the_real_factors_in_shape() -> None:
    spec = LowRankSpec()
    for layer, method in ((nn.Conv2d(32, 48, 3, stride=2, padding=1), "tucker2"), (nn.Conv2d(32, 48, 3, padding=1), "spatial"),
                          (nn.Conv2d(32, 48, 1, stride=2), "svd"), (nn.Linear(32, 48), "svd")):
        real, shell = build_factors(layer, method, 8, spec), timing_factors(layer, method, 8, spec)  # type: ignore[arg-type]
        assert repr(real) == repr(shell)
        assert [p.shape for p in real.parameters()] == [p.shape for p in shell.parameters()]


def test_rank_candidates_grid() -> None:
    assert rank_candidates(304, LowRankSpec()) == [304, 288, 256]
    assert rank_candidates(152, LowRankSpec()) == [152, 144, 128]
    assert rank_candidates(64, LowRankSpec()) == [64, 56, 48]
    assert rank_candidates(16, LowRankSpec()) == [16]
    assert rank_candidates(304, LowRankSpec(scan_step=8, search_window=0.05)) == [304, 296]
    with pytest.raises(ConfigError, match="scan_step"):
        LowRankSpec(scan_step=0)
