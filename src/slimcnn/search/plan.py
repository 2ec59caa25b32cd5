"""Re-apply a ``plan.json`` written by ``slimcnn search`` (any method, any strategy)."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from slimcnn._io import write_text
from slimcnn.errors import ConfigError


@dataclass(frozen=True)
class SearchPlan:
    """The JSON a search writes: method, per-knob amounts and the concrete facts to reproduce them."""

    raw: dict[str, Any]

    @property
    def layers(self) -> dict[str, Any]:
        """The assignment (knob -> amount)."""
        return dict(self.raw.get("assignment", {}))

    @property
    def criterion(self) -> str:
        return str(self.raw.get("criterion") or "")

    @property
    def options(self) -> dict[str, Any]:
        return {k: self.raw.get(k) for k in ("method", "strategy", "finetune_steps")}

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The example input's shape the search measured costs at (``()`` in older plans)."""
        return tuple(self.raw.get("input_shape") or ())

    def save(self, path: str | Path) -> Path:
        """Write the plan atomically."""
        return write_text(path, json.dumps(self.raw, indent=2) + "\n")


def apply_search_plan(model: nn.Module, plan: SearchPlan, example_input: Any) -> nn.Module:
    """A copy of ``model`` transformed as ``plan`` says (structure only: weights are neither fine-tuned
    nor mean-compensated here).

    Prune plans replay the exact kept channels (one plan per iteration for the iterative strategy);
    low-rank and k-means plans re-run the deterministic transform per knob.

    Raises:
        ConfigError: the model's structure differs from the one the plan was made on.
    """
    from slimcnn.prune import PrunePlan, apply_plan, fingerprint

    raw = plan.raw
    if raw.get("fingerprint") and raw["fingerprint"] != fingerprint(model):
        raise ConfigError(
            f"model structure {fingerprint(model)} does not match the plan's {raw['fingerprint']} "
            f"(made on '{raw.get('source')}'); load the same unpruned model"
        )
    method = raw.get("method")
    new = copy.deepcopy(model)
    if method == "prune":
        steps = [s for s in raw.get("steps") or [] if s] or [raw.get("details", {}).get("prune_plan")]
        for step in steps:
            if step:
                apply_plan(new, PrunePlan.from_dict(step), example_input, strict=False, compensate=False)
        return new
    from slimcnn.search.families import FAMILIES

    family = FAMILIES.get(str(method))(example_input=example_input)
    return family.apply_many(new, {k: float(v) for k, v in raw.get("assignment", {}).items()})


def load_plan(path: str | Path) -> SearchPlan | Any:
    """A :class:`SearchPlan` or a ``PrunePlan``, by the file's ``_type``."""
    from slimcnn.prune import PrunePlan

    try:
        raw = json.loads(Path(path).read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path} is not valid JSON ({e})") from e
    if raw.get("_type") == "SearchPlan":
        return SearchPlan(raw)
    return PrunePlan.from_dict(raw)
