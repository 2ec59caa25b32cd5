"""Pavlitska et al.'s iterative layer selection for concatenation-based nets (IJCNN 2024).

S. Pavlitska et al., "Iterative Filter Pruning for Concatenation-based CNN Architectures"
(https://arxiv.org/abs/2405.03715); ``PAPERS.md`` §3.4. Each iteration: prune one layer at a time
at 25/50/75 % without fine-tuning; score(i, r) = Δcost(i, r) · metric(i, r)^α; keep each layer's
best rate; pick the top layers for params and for FLOPs by a threshold search on the best score;
prune their union; fine-tune; repeat.
"""

from __future__ import annotations

from dataclasses import dataclass

from slimcnn.errors import ConfigError


@dataclass(frozen=True)
class SensitivityPoint:
    """One (layer, rate) probe without fine-tuning."""

    layer: str
    rate: float
    metric: float
    """Metric after pruning (e.g. mAP@.5:.95 in [0, 1]); higher is better."""
    d_params: float
    """Parameters removed."""
    d_macs: float
    """MACs removed."""


@dataclass(frozen=True)
class Selection:
    """A chosen (layer, rate) and why (``params``, ``flops`` or ``both``)."""

    layer: str
    rate: float
    reason: str


def _best_per_layer(points: list[SensitivityPoint], key: str, alpha: float) -> dict[str, tuple[float, float]]:
    best: dict[str, tuple[float, float]] = {}
    for p in points:
        delta = p.d_params if key == "params" else p.d_macs
        score = delta * max(p.metric, 0.0) ** alpha
        if p.layer not in best or score > best[p.layer][0]:
            best[p.layer] = (score, p.rate)
    return best


def _top_layers(best: dict[str, tuple[float, float]], n: int, *, max_iter: int = 100000) -> list[str]:
    """The paper's threshold search: S = {i : best(i) > M/frac}, nudge frac by 0.001 until n-1 ≤ |S| ≤ n."""
    if not best or n <= 0:
        return []
    m = max(score for score, _ in best.values())
    if m <= 0:
        return []
    frac = 2.0
    chosen: list[str] = []
    for _ in range(max_iter):
        chosen = [name for name, (score, _) in best.items() if score > m / frac]
        if len(chosen) < n - 1 and len(chosen) < len(best):
            frac += 0.001
        elif len(chosen) > n:
            frac -= 0.001
            if frac <= 1.0:
                break
        else:
            break
    return sorted(chosen, key=lambda name: -best[name][0])[:n]


def select_layers(
    points: list[SensitivityPoint], *, alpha: float = 20.0, params_layers: int = 6, flops_layers: int = 5
) -> list[Selection]:
    """Union of the top ``params_layers`` by params score and ``flops_layers`` by FLOPs score.

    Each layer takes the rate that maximised its score (the params rate wins for layers picked by both).
    """
    if alpha < 0:
        raise ConfigError(f"alpha must be >= 0, got {alpha}")
    best_p = _best_per_layer(points, "params", alpha)
    best_f = _best_per_layer(points, "flops", alpha)
    top_p = _top_layers(best_p, params_layers)
    top_f = _top_layers(best_f, flops_layers)
    out: list[Selection] = []
    for name in dict.fromkeys(top_p + top_f):
        both = name in top_p and name in top_f
        rate = best_p[name][1] if name in top_p else best_f[name][1]
        out.append(Selection(name, rate, "both" if both else ("params" if name in top_p else "flops")))
    return out
