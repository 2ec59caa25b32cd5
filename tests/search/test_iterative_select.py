"""Pavlitska et al.'s selection score and threshold search."""

from __future__ import annotations

from slimcnn.search.iterative import SensitivityPoint, select_layers


def _points() -> list[SensitivityPoint]:
    pts = []
    for i in range(10):
        for rate in (0.25, 0.5, 0.75):
            metric = 0.5 - 0.02 * i * rate  # deeper layers hurt more
            pts.append(SensitivityPoint(f"l{i}", rate, metric, d_params=1000 * (10 - i) * rate, d_macs=500 * (i + 1) * rate))
    return pts


def test_score_prefers_cheap_losses_and_picks_counts() -> None:
    sel = select_layers(_points(), alpha=20, params_layers=3, flops_layers=2)
    by_reason = {s.reason for s in sel}
    names = [s.layer for s in sel]
    assert len(names) == len(set(names)) <= 5
    params_sel = [s for s in sel if s.reason in ("params", "both")]
    assert 2 <= len(params_sel) <= 3
    assert "l0" in names  # most params removed at the smallest metric loss
    assert by_reason <= {"params", "flops", "both"}


def test_alpha_zero_ignores_metric_and_takes_the_largest_rate() -> None:
    sel = select_layers(_points(), alpha=0, params_layers=1, flops_layers=1)
    assert all(s.rate == 0.75 for s in sel)


def test_high_alpha_penalises_metric_loss() -> None:
    pts = [
        SensitivityPoint("a", 0.75, 0.30, 1000, 1000),  # big saving, big loss
        SensitivityPoint("a", 0.25, 0.50, 300, 300),
        SensitivityPoint("b", 0.5, 0.49, 500, 500),
    ]
    low = {s.layer: s.rate for s in select_layers(pts, alpha=1, params_layers=2, flops_layers=0)}
    high = {s.layer: s.rate for s in select_layers(pts, alpha=20, params_layers=2, flops_layers=0)}
    assert low["a"] == 0.75 and high["a"] == 0.25
