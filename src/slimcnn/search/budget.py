"""Budgets: a quality constraint plus any hardware constraints, absolute (``4MB``) or relative (``0.5x``)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from slimcnn.errors import ConfigError
from slimcnn.types import Cost, Score

CostKey = Literal["macs", "params", "weight_bytes", "latency_ms", "activation_bytes"]
COST_KEYS: tuple[CostKey, ...] = ("macs", "params", "weight_bytes", "latency_ms", "activation_bytes")

_COUNT_UNITS = {"k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}
_UNIT_NAMES = {"count": "k, M, G, T", "bytes": "B, KB, MB, GB, KiB, MiB, GiB", "time": "us, ms, s"}
_WHAT = {"macs": "MACs", "params": "parameters", "weight_bytes": "weight bytes", "activation_bytes": "activation bytes",
         "latency_ms": "latency"}
_BYTE_UNITS = {"b": 1.0, "kb": 1e3, "mb": 1e6, "gb": 1e9, "kib": 1024.0, "mib": 1024.0**2, "gib": 1024.0**3}
_TIME_UNITS = {"ms": 1.0, "s": 1e3, "us": 1e-3}
_KIND = {"macs": "count", "params": "count", "weight_bytes": "bytes", "activation_bytes": "bytes", "latency_ms": "time"}
_UNITS_OF = {"count": _COUNT_UNITS, "bytes": _BYTE_UNITS, "time": _TIME_UNITS}
_EXAMPLE = {"count": "300M", "bytes": "4MB", "time": "12ms"}
_FLAG = {"latency_ms": "latency"}


def flag(what: str) -> str:
    """The CLI option of a budget key (``latency_ms`` -> ``--latency``)."""
    return "--" + _FLAG.get(what, what).replace("_", "-")


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

    def shown(self, name: str) -> str:
        """For a person: a fraction to 4 significant digits (a compress stage's share read ``1.27625x``), a count or
        byte size whole with separators (:func:`check_amount`)."""
        return f"{self.value:.4g}x" if self.relative else check_amount(name, self.value)


def parse_amount(text: str | float | int, what: str) -> Amount:
    """The one budget grammar of every command: ``0.5x`` (or ``50%``) is a fraction of the original,
    ``300M`` / ``4MB`` / ``12ms`` an absolute value with a unit that suits ``what``.

    ``what`` is ``macs`` or ``params`` (counts: k, M, G, T), ``weight_bytes`` or ``activation_bytes``
    (B, KB, MB, GB, KiB, MiB, GiB) or ``latency_ms`` (us, ms, s). A bare number is refused (is ``0.5``
    a ratio or half a MAC?); so are ratios outside (0, 1] and absolute values <= 0.

    Example:
        >>> parse_amount("4MB", "weight_bytes")
        Amount(value=4000000.0, relative=False)
        >>> parse_amount("0.5x", "macs")
        Amount(value=0.5, relative=True)
    """
    kind = _KIND.get(what)
    if kind is None:
        raise ConfigError(f"unknown budget '{what}'; valid: {', '.join(_KIND)}")
    option, example = flag(what), _EXAMPLE[kind]
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        if text > 1:  # Python callers: a number above 1 is absolute, one at most 1 a ratio
            return Amount(float(text))
        text = f"{text}x"
    s = str(text).strip().lower().replace(" ", "")
    m = re.fullmatch(r"([+-]?[0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)([a-z%]*)", s)
    if not m:
        raise ConfigError(f"{option} expects a ratio like 0.5x or a value like {example}, got '{text}'")
    number, unit = float(m.group(1)), m.group(2)
    if unit == "" and number <= 0:
        raise ConfigError(f"{option} {text} must be above 0 (e.g. {example} or 0.5x)")
    if unit == "":
        ratio = f"write {text}x for a fraction of the original or " if number <= 1 else ""
        raise ConfigError(f"{option} {text} is ambiguous: {ratio}add a unit (e.g. {example}; a bare number is refused)")
    if unit in ("x", "%"):
        ratio = number / 100.0 if unit == "%" else number
        if not 0 < ratio <= 1:
            raise ConfigError(f"{option} {text}: a ratio must be above 0x and at most 1x (e.g. 0.5x)")
        return Amount(ratio, relative=True)
    units = _UNITS_OF[kind]
    if unit not in units:
        typed = str(text).strip().replace(" ", "")[-len(unit):]
        raise ConfigError(f"{option} {text}: '{typed}' is not a unit of {_WHAT.get(what, what)}; use one of "
                          f"{_UNIT_NAMES[kind]} (e.g. {example}) or a ratio like 0.5x")
    if number <= 0:
        raise ConfigError(f"{option} {text} must be above 0 (e.g. {example} or 0.5x)")
    return Amount(number * units[unit])


def parse_drop(text: str | float) -> Amount:
    """``--max-drop``: ``0.2`` (or ``0.2dB`` / ``0.5pt``) in the metric's unit; ``1%`` of the baseline metric.

    Negative drops and percentages of 100 % or more are refused (they cannot mean a quality target).
    """
    s = str(text).strip().lower().replace(" ", "")
    m = re.fullmatch(r"([+-]?[0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)(%|db|pt|pts|points?)?", s)
    if not m:
        raise ConfigError(f"--max-drop expects a number in the metric's unit (0.2, 0.2dB, 1pt) or a percentage (1%), "
                          f"got '{text}'")
    number = float(m.group(1))
    if number < 0:
        raise ConfigError(f"--max-drop {text}: a drop must be >= 0 (0.2 allows 0.2 dB/points of loss)")
    if m.group(2) == "%":
        if number >= 100:
            raise ConfigError(f"--max-drop {text}: a percentage must be below 100% (e.g. 1%)")
        return Amount(number / 100.0, relative=True)
    return Amount(number)


@dataclass(frozen=True)
class ConstraintCheck:
    """One constraint measured on a model."""

    name: str
    value: float
    limit: float
    met: bool

    def amounts(self) -> str:
        """``value/limit`` as a person reads them: counts and bytes whole with separators, drops and times to 4
        significant digits (a progress line printed ``weight_bytes 5.124e+04/4.099e+04``)."""
        return f"{check_amount(self.name, self.value)}/{check_amount(self.name, self.limit)}"

    def line(self) -> str:
        """``"weight_bytes: 51,236 (limit 40,989) NOT MET"``: one check of a command's summary."""
        return (f"{self.name}: {check_amount(self.name, self.value)} (limit {check_amount(self.name, self.limit)}) "
                f"{'met' if self.met else 'NOT MET'}")


def check_amount(name: str, v: float) -> str:
    """A checked quantity: a count (MACs, params, bytes) whole with separators, anything else to 4 significant
    digits."""
    return f"{v:,.0f}" if name in _COUNTS and abs(v) >= 1000 else f"{v:.4g}"


_COUNTS = frozenset({"macs", "params", "weight_bytes", "activation_bytes"})


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
            raise ConfigError(f"--objective must be one of {', '.join(COST_KEYS)}, got '{self.objective}'")

    @classmethod
    def from_options(
        cls,
        *,
        max_drop: str | float | None = None,
        macs: str | None = None,
        params: str | None = None,
        weight_bytes: str | None = None,
        latency: str | None = None,
        activation_bytes: str | None = None,
        objective: CostKey | None = None,
    ) -> Budget:
        """Build from CLI strings; the objective defaults to the first hardware limit given (else MACs)."""
        raw = {"macs": macs, "params": params, "weight_bytes": weight_bytes, "latency_ms": latency,
               "activation_bytes": activation_bytes}
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
        drop = base_score.drop_to(score) if base_score is not None and score is not None else None
        return self.check_values(base_cost, base_score, drop, {key: cost_value(cost, key) for key in self.limits})

    def check_values(self, base_cost: Cost, base_score: Score | None, drop: float | None,
                     values: dict[str, float]) -> list[ConstraintCheck]:
        """:meth:`check` from a model's drop and cost values (one per limit), e.g. a point measured before."""
        rows = []
        lim = self.drop_limit(base_score) if base_score is not None else None
        if lim is not None and drop is not None:
            rows.append(ConstraintCheck("max_drop", drop, float(lim), drop <= float(lim) + 1e-12))
        for key, amount in self.limits.items():
            lim = amount.limit(cost_value(base_cost, key))
            rows.append(ConstraintCheck(key, values[key], lim, values[key] <= lim))
        return rows


def cost_value(cost: Cost, key: str) -> float:
    """Read one quantity from a :class:`Cost` (``latency_ms`` is the median)."""
    if key == "latency_ms":
        if cost.latency is None:
            raise ConfigError("a latency budget needs a measured latency; pass --runtime onnxruntime|torch")
        return cost.latency.median_ms
    return float(getattr(cost, key))
