"""CPO's oracle on real models: prune by reducing factors, retrain a few steps, measure the drop."""

from __future__ import annotations

from typing import Any

from torch import nn

from slimcnn.graph import trace


class PruneOracle:
    """Answers :class:`~slimcnn.search.cpo.CPOOracle` questions for the search context ``ctx``.

    Drops are measured on the validation data (``ctx.spec.limit`` images) after ``finetune_steps`` of
    retraining; every measured point also goes into the Pareto record.
    """

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx
        self._sizes: dict[tuple[tuple[str, float], ...], dict[str, float]] = {}
        self._macs: dict[tuple[tuple[str, float], ...], float] = {}
        self._groups: dict[str, int] = {}
        for g in trace(ctx.model, ctx.example_input).groups():
            producers = [m.layer for m in g.producers]
            if g.prunable and producers:
                self._groups[producers[0]] = g.size

    def layers(self) -> list[str]:
        """Prunable layers (group leaders) whose producer is a convolution."""
        knobs = self.ctx.family.knobs(self.ctx.model, self.ctx.example_input)
        return [k.name for k in knobs if isinstance(self.ctx.model.get_submodule(k.name), nn.Conv2d)]

    def filters(self, layer: str) -> int:
        return self._groups[layer]

    def _key(self, ratios: dict[str, float]) -> tuple[tuple[str, float], ...]:
        return tuple(sorted((k, float(v)) for k, v in ratios.items() if v > 0))

    def _measure_structure(self, ratios: dict[str, float]) -> None:
        key = self._key(ratios)
        if key in self._sizes:
            return
        model = self.ctx.family.apply_many(self.ctx.model, dict(key))
        self._sizes[key] = {name: float(model.get_submodule(name).weight[0].numel()) for name in self._groups}
        self._macs[key] = float(self.ctx.cost_fn(model, dict(key))[1])

    def filter_size(self, layer: str, ratios: dict[str, float]) -> float:
        self._measure_structure(ratios)
        return self._sizes[self._key(ratios)][layer]

    def cost(self, ratios: dict[str, float]) -> float:
        self._measure_structure(ratios)
        return self._macs[self._key(ratios)]

    def drop(self, ratios: dict[str, float]) -> float:
        return self.ctx.measure(dict(self._key(ratios))).drop
