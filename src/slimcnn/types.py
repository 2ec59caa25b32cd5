"""Data that crosses rooms: frozen dataclasses that round-trip through JSON."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")


def from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """Rebuild a (possibly nested) dataclass from :func:`slimcnn._io.to_json` output."""
    kwargs: dict[str, Any] = {}
    hints = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    for name, f in hints.items():
        if name not in data:
            continue
        value = data[name]
        sub = _NESTED.get((cls.__name__, name))
        if sub is not None and value is not None:
            value = [from_dict(sub, v) for v in value] if isinstance(value, list) else from_dict(sub, value)
        elif isinstance(value, list) and str(f.type).startswith("tuple"):
            value = tuple(value)
        kwargs[name] = value
    return cls(**kwargs)


@dataclass(frozen=True)
class Score:
    """A task metric. A *drop* is measured in the metric's own unit (dB, points) unless relative."""

    metric: str
    """Name of the headline metric, e.g. ``"psnr"``, ``"top1"``, ``"map50_95"``."""
    value: float
    higher_is_better: bool = True
    metrics: dict[str, float] = field(default_factory=dict)
    """All metrics the task computed (the headline one included)."""
    n: int = 0
    """Number of samples (images) evaluated."""
    dataset: str = ""

    def drop_to(self, other: Score, *, relative: bool = False) -> float:
        """How much worse ``other`` is than ``self`` (positive = worse), in the metric's unit."""
        d = (self.value - other.value) if self.higher_is_better else (other.value - self.value)
        if relative:
            return d / abs(self.value) if self.value else float("inf")
        return d


@dataclass(frozen=True)
class LatencyStats:
    """One latency measurement and the conditions it was taken under."""

    median_ms: float
    p10_ms: float
    p90_ms: float
    n: int
    runtime: str
    threads: int
    device: str
    batch: int
    input_shape: tuple[int, ...]
    warmup: int = 0


@dataclass(frozen=True)
class LayerCost:
    """Per-layer cost row (``name`` is the module FQN)."""

    name: str
    type: str
    params: int
    macs: int
    weight_bytes: int
    activation_bytes: int
    output_shape: tuple[int, ...] = ()
    latency_ms: float | None = None


@dataclass(frozen=True)
class Cost:
    """What a model costs. ``macs`` counts multiply-accumulates for one forward of ``input_shape``."""

    params: int
    macs: int
    weight_bytes: int
    activation_bytes: int
    input_shape: tuple[int, ...] = ()
    latency: LatencyStats | None = None
    layers: tuple[LayerCost, ...] = ()


_NESTED: dict[tuple[str, str], type] = {
    ("Cost", "latency"): LatencyStats,
    ("Cost", "layers"): LayerCost,
}
