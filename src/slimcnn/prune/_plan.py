"""``PrunePlan``: what was kept, as data (JSON round-trip), and ``apply_plan`` to reproduce it."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from slimcnn._io import to_json, write_text
from slimcnn.errors import ConfigError
from slimcnn.graph import rollback_on_error, trace

PLAN_VERSION = 1


def fingerprint(model: nn.Module) -> str:
    """Structural fingerprint: sha256 over module names/types and parameter/buffer names/shapes."""
    lines = []
    for name, m in model.named_modules():
        lines.append(f"{name}|{type(m).__name__}\n")
        # the module's own tensors as named_parameters/named_buffers(recurse=False) list them (each tensor
        # once), read from its dicts: those generators cost more than the hash on models with many modules
        for tensors in (m._parameters, m._buffers):
            seen: set[int] = set()
            for pn, p in tensors.items():
                if p is not None and id(p) not in seen:
                    seen.add(id(p))
                    lines.append(f"  {pn}:{tuple(p.shape)}\n")
    return hashlib.sha256("".join(lines).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class PrunePlan:
    """Kept output channels per producer layer, plus how they were chosen.

    Re-applied with :func:`apply_plan` on a model with the same structural fingerprint.
    """

    layers: dict[str, tuple[int, ...]]
    """{producer FQN: kept output channel indices (sorted)}; layers not listed are unchanged."""
    criterion: str = ""
    source: str = ""
    """The model source string the plan was made on (e.g. ``torchvision:resnet18``)."""
    fingerprint: str = ""
    """:func:`fingerprint` of the *unpruned* model."""
    input_shape: tuple[int, ...] = ()
    options: dict[str, Any] = field(default_factory=dict)
    """ratio / macs target / round_to / scope / exclude / seed used."""
    version: int = PLAN_VERSION

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (``_type``/``_version`` tagged)."""
        d = json.loads(to_json(self))
        return {"_type": "PrunePlan", "_version": self.version, **d}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PrunePlan:
        """Inverse of :meth:`to_dict`; validates the tag and version."""
        if d.get("_type", "PrunePlan") != "PrunePlan":
            raise ConfigError(f"expected a PrunePlan JSON, got _type={d.get('_type')!r}")
        if int(d.get("_version", PLAN_VERSION)) > PLAN_VERSION:
            raise ConfigError(f"plan version {d.get('_version')} is newer than this slimcnn ({PLAN_VERSION})")
        try:
            return cls(
                layers={str(k): tuple(int(i) for i in v) for k, v in d["layers"].items()},
                criterion=str(d.get("criterion", "")),
                source=str(d.get("source", "")),
                fingerprint=str(d.get("fingerprint", "")),
                input_shape=tuple(int(i) for i in d.get("input_shape", ())),
                options=dict(d.get("options", {})),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"malformed PrunePlan JSON: {e}") from e

    def save(self, path: str | Path) -> Path:
        """Write the plan atomically as JSON."""
        return write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> PrunePlan:
        """Read a plan written by :meth:`save`."""
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path} is not valid JSON ({e})") from e


def apply_plan(
    model: nn.Module,
    plan: PrunePlan,
    example_input: Any,
    *,
    strict: bool = True,
    batches: Sequence[Any] = (),
    compensate: bool | str | None = None,
) -> None:
    """Prune ``model`` in place to exactly the channels kept in ``plan``.

    A plan made with compensation (``plan.options["compensate"]``: ``mean`` or ``lsq``) stores no weights or
    biases: the compensation is re-computed from ``batches``, so the result equals the original pruning only when
    they are the same calibration batches (``task.calibration_batches(calib)`` with the plan's
    ``calib`` and seed).

    Args:
        model: the unpruned model (same structural fingerprint as the plan's).
        plan: the plan.
        example_input: input for tracing.
        strict: check the fingerprint.
        batches: calibration inputs for compensation.
        compensate: ``None`` follows the plan; ``False`` applies only the structure (the consumers' weights
            and biases then differ from the pruned model the plan was made with); a mode overrides the plan's.

    Raises:
        ConfigError: the model's fingerprint differs from the plan's (``strict``), the plan's kept
            sets are inconsistent with the model's channel coupling, or the plan needs compensation
            and no ``batches`` were given.
    """
    from slimcnn.prune._compensate import compensation, compensation_mode
    from slimcnn.prune._surgery import kept_channels, prune_

    mode = compensation_mode(plan.options.get("compensate", False) if compensate is None else compensate)
    if mode and not batches:
        raise ConfigError(
            f"the plan was made with {mode} compensation (options.compensate), which needs calibration data "
            "to re-create: pass batches=task.calibration_batches(calib), or compensate=False for the "
            "structure only; on the command line pass the prune run's --task and --data to `slimcnn apply`"
        )
    fp = fingerprint(model)
    if strict and plan.fingerprint and fp != plan.fingerprint:
        raise ConfigError(
            f"model structure {fp} does not match the plan's {plan.fingerprint} (plan made on "
            f"'{plan.source}'); load the same architecture, unpruned, or pass strict=False"
        )
    graph = trace(model, example_input)
    removal: dict[int | str, list[int]] = {}
    for fqn, kept in plan.layers.items():
        n = len(graph.out_roots.get(fqn) or [])
        if n == 0:
            graph.producer_group(fqn)  # raises a helpful unknown-name error
        removal[fqn] = sorted(set(range(n)) - set(kept))
    removed = graph.removed_roots(removal)
    expected = kept_channels(graph, removed)
    for fqn, kept in plan.layers.items():
        if fqn in expected and tuple(expected[fqn]) != tuple(kept):
            raise ConfigError(
                f"plan keeps {len(kept)} channels of '{fqn}' but its coupled layers force {len(expected[fqn])}"
            )
    comp = compensation(model, graph, removed, list(batches), mode)
    with rollback_on_error(model):  # a refusal leaves the model as it was
        prune_(model, example_input, removal, graph=graph)
        comp.apply_(model, graph, removed)
