"""Budgets: a quality constraint plus any hardware constraints, absolute (``4MB``) or relative (``0.5x``)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from slimcnn.errors import ConfigError
from slimcnn.types import Cost, Score

CostKey = Literal["macs", "params", "weight_bytes", "latency_ms"]
COST_KEYS: tuple[CostKey, ...] = ("macs", "params", "weight_bytes", "latency_ms")

_UNITS = {
    "": 1.0, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12,
    "b": 1.0, "kb": 1e3, "mb": 1e6, "gb": 1e9, "kib": 1024.0, "mib": 1024.0**2, "gib": 1024.0**3,
    "ms": 1.0, "s": 1e3, "us": 1e-3,
}


@dataclass(frozen=True)
class Amount:
    """A limit: ``value`` in the quantity's unit, or a fraction of the baseline when ``relative``."""

    value: float
    relative: bool = False

    def limit(self, baseline: float) -> float:
        """The absolute limit given the baseline value."""
        return self.value * baseline if self.relative else self.value

    def __str__(self) -> str:
        return f"{self.value:g}x" if self.relative else f"{self.value:g}"


def parse_amount(text: str | float | int, what: str) -> Amount:
    """Parse ``0.5x`` (relative), ``4MB``/``4MiB``/``512KB`` (bytes), ``12ms``, ``1.2G``/``300M`` (counts).

    Example:
        >>> parse_amount("4MB", "weight_bytes")
        Amount(value=4000000.0, relative=False)
        >>> parse_amount("0.5x", "macs")
        Amount(value=0.5, relative=True)
    """
    if isinstance(text, (int, float)):
        return Amount(float(text))
    s = text.strip().lower().replace(" ", "")
    m = re.fullmatch(r"([0-9]*\.?[0-9]+(?:e-?[0-9]+)?)(x|%|[a-z]*)", s)
    if not m or (m.group(2) not in _UNITS and m.group(2) not in ("x", "%")):
        raise ConfigError(
            f"--{what.replace('_', '-')} expects a number with an optional unit (e.g. 0.5x, 4MB, 12ms, 300M), got '{text}'"
        )
    number, unit = float(m.group(1)), m.group(2)
    if unit == "x":
        return Amount(number, relative=True)
    if unit == "%":
        return Amount(number / 100.0, relative=True)
    return Amount(number * _UNITS[unit])


def parse_drop(text: str | float) -> Amount:
    """``0.2`` = 0.2 in the metric's unit (dB, points); ``1%`` = 1 % of the baseline metric."""
    if isinstance(text, (int, float)):
        return Amount(float(text))
    s = text.strip()
    if s.endswith("%"):
        return Amount(float(s[:-1]) / 100.0, relative=True)
    try:
        return Amount(float(s))
    except ValueError:
        raise ConfigError(f"--max-drop expects a number in the metric's unit (0.2) or a percentage (1%), got '{text}'") from None


@dataclass(frozen=True)
class ConstraintCheck:
    """One constraint measured on a model."""

    name: str
    value: float
    limit: float
    met: bool


@dataclass(frozen=True)
class Budget:
    """What the user asked for: at most ``max_drop`` quality loss and at most each given cost."""

    max_drop: Amount | None = None
    limits: dict[str, Amount] = field(default_factory=dict)
    """Cost limits keyed by ``macs``, ``params``, ``weight_bytes``, ``latency_ms``."""
    objective: CostKey = "macs"
    """What to minimise once the constraints hold."""

    def __post_init__(self) -> None:
        for key in self.limits:
            if key not in COST_KEYS:
                raise ConfigError(f"unknown budget '{key}'; valid: {', '.join(COST_KEYS)}")
        if self.objective not in COST_KEYS:
            raise ConfigError(f"unknown objective '{self.objective}'; valid: {', '.join(COST_KEYS)}")

    @classmethod
    def from_options(
        cls,
        *,
        max_drop: str | float | None = None,
        macs: str | None = None,
        params: str | None = None,
        weight_bytes: str | None = None,
        latency: str | None = None,
        objective: CostKey | None = None,
    ) -> Budget:
        """Build from CLI strings; the objective defaults to the first hardware limit given (else MACs)."""
        raw = {"macs": macs, "params": params, "weight_bytes": weight_bytes, "latency_ms": latency}
        limits = {k: parse_amount(v, k) for k, v in raw.items() if v is not None}
        if objective is None:
            objective = "latency_ms" if "latency_ms" in limits else next(iter(limits), "macs")  # type: ignore[assignment]
        return cls(parse_drop(max_drop) if max_drop is not None else None, limits, objective)  # type: ignore[arg-type]

    def drop_limit(self, base: Score) -> float | None:
        """The allowed drop in the metric's unit."""
        if self.max_drop is None:
            return None
        return self.max_drop.value * abs(base.value) if self.max_drop.relative else self.max_drop.value

    def check(self, base_cost: Cost, base_score: Score | None, cost: Cost, score: Score | None) -> list[ConstraintCheck]:
        """Each constraint measured on a final model (``met`` is what the report shows)."""
        rows = []
        if self.max_drop is not None and base_score is not None and score is not None:
            lim = self.drop_limit(base_score)
            drop = base_score.drop_to(score)
            rows.append(ConstraintCheck("max_drop", drop, float(lim), drop <= float(lim) + 1e-12))  # type: ignore[arg-type]
        for key, amount in self.limits.items():
            base, value = cost_value(base_cost, key), cost_value(cost, key)
            lim = amount.limit(base)
            rows.append(ConstraintCheck(key, value, lim, value <= lim))
        return rows


def cost_value(cost: Cost, key: str) -> float:
    """Read one quantity from a :class:`Cost` (``latency_ms`` is the median)."""
    if key == "latency_ms":
        if cost.latency is None:
            raise ConfigError("a latency budget needs a measured latency; pass --runtime onnxruntime|torch")
        return cost.latency.median_ms
    return float(getattr(cost, key))
