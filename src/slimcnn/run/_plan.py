"""``Plan``: the ordered transform steps of a run, as data, and ``apply_plan`` that replays any of them.

Every command that changes a model writes one ``plan.json`` in this format; ``slimcnn apply`` and
:func:`apply_plan` replay it on the unchanged model. A step names a registered transform and holds
the concrete facts that make it deterministic (kept channels, kept kernels, ranks, bits), never
objects. Fine-tuning is not a step: a plan replays the structure and the transform's own weights
(pruning, factors, codebooks), bit-identical to the run's model when the run did not fine-tune.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from slimcnn._io import to_json, write_text
from slimcnn.errors import ConfigError
from slimcnn.registry import Registry

PLAN_VERSION = 2


@dataclass(frozen=True)
class PlanStep:
    """One transform applied to named layers.

    ``transform`` is a name in :data:`TRANSFORMS`: ``prune_channels``, ``prune_kernels``,
    ``group_kernels``, ``lowrank``, ``kmeans`` or ``int8`` (ONNX Runtime int8, last); ``params`` are its
    JSON arguments.
    """

    transform: str
    layers: tuple[str, ...] = ()
    """Module FQNs the step changes (for reading; ``params`` is what replays)."""
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Plan:
    """What a run did to a model, in order; :func:`apply_plan` reproduces it from the original."""

    steps: tuple[PlanStep, ...] = ()
    source: str = ""
    """The model source the plan was made on."""
    fingerprint: str = ""
    """Structural fingerprint (:func:`slimcnn.prune.fingerprint`) of the unchanged model."""
    input_shape: tuple[int, ...] = ()
    """The example input the run traced and measured with."""
    finetuned: bool = False
    """The run fine-tuned the weights after the steps: a replay gives the structure, not those weights."""
    version: int = PLAN_VERSION

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict, tagged ``_type: Plan``."""
        d = json.loads(to_json(self))
        d.pop("version")
        return {"_type": "Plan", "_version": self.version, **d}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Plan:
        """Inverse of :meth:`to_dict`; also reads the older per-command plan files."""
        kind = d.get("_type", "PrunePlan") if isinstance(d, dict) else None
        if kind != "Plan":
            return _from_legacy(d, kind)
        if int(d.get("_version", PLAN_VERSION)) > PLAN_VERSION:
            raise ConfigError(f"plan version {d.get('_version')} is newer than this slimcnn reads ({PLAN_VERSION}); "
                              "upgrade slimcnn")
        try:
            steps = tuple(PlanStep(str(s["transform"]), tuple(s.get("layers", ())), dict(s.get("params", {})))
                          for s in d.get("steps", ()))
        except (KeyError, TypeError, AttributeError) as e:
            raise ConfigError(f"malformed plan: a step lacks {e}; use a plan.json written by slimcnn") from None
        for s in steps:
            TRANSFORMS.get(s.transform)
        return cls(steps, str(d.get("source", "")), str(d.get("fingerprint", "")),
                   tuple(int(i) for i in d.get("input_shape") or ()), bool(d.get("finetuned", False)))

    def save(self, path: str | Path) -> Path:
        """Write atomically as JSON."""
        return write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Plan:
        """Read a ``plan.json`` (this format or an older one); one-line errors for anything else."""
        p = Path(path)
        if p.is_dir():
            p = p / "plan.json"
        try:
            d = json.loads(p.read_text())
        except FileNotFoundError:
            raise ConfigError(f"plan file {p} does not exist; pass the plan.json of a slimcnn run") from None
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ConfigError(f"{p} is not JSON; pass the plan.json of a slimcnn run") from None
        if isinstance(d, dict) and d.get("_type") == "RunResult":
            raise ConfigError(f"{p} is a result.json; pass the plan.json next to it")
        if not isinstance(d, dict) or "_type" not in d:
            raise ConfigError(f"{p} is not a slimcnn plan (no _type); pass the plan.json of a slimcnn run")
        return cls.from_dict(d)


@dataclass
class ApplyContext:
    """What a step handler may need besides the model."""

    example_input: Any
    batches: Sequence[Any] = ()
    """Calibration inputs (compensation of channel pruning)."""


StepHandler = Callable[[nn.Module, PlanStep, ApplyContext], nn.Module]
TRANSFORMS: Registry[StepHandler] = Registry("plan transform")


def apply_plan(model: nn.Module, plan: Plan, example_input: Any = None, *, batches: Sequence[Any] = (),
               strict: bool = True) -> nn.Module:
    """A copy of ``model`` with every step of ``plan`` applied in order (``model`` is not changed).

    Args:
        model: the unchanged model the plan was made on.
        plan: the plan.
        example_input: input for tracing (default: a seeded random tensor of ``plan.input_shape``).
        batches: calibration inputs for a channel-pruning step made with compensation.
        strict: refuse a model whose structural fingerprint differs from the plan's.

    Raises:
        ConfigError: the model is not the one the plan was made on, or a step cannot be replayed.
    """
    import torch

    from slimcnn.prune import fingerprint

    if strict and plan.fingerprint and fingerprint(model) != plan.fingerprint:
        raise ConfigError(
            f"the model's structure ({fingerprint(model)}) is not the one the plan was made on ({plan.fingerprint}, "
            f"'{plan.source}'); pass that model, unchanged"
        )
    if example_input is None:
        if not plan.input_shape:
            raise ConfigError("the plan records no input shape; pass --input (e.g. 1x3x224x224)")
        example_input = torch.randn(plan.input_shape, generator=torch.Generator().manual_seed(0))
    ctx = ApplyContext(example_input, batches)
    new = copy.deepcopy(model).eval()
    for step in plan.steps:
        new = TRANSFORMS.get(step.transform)(new, step, ctx)
    return new


# --- the transforms ------------------------------------------------------------------------------


@TRANSFORMS.register("prune_channels")
def _prune_channels(model: nn.Module, step: PlanStep, ctx: ApplyContext) -> nn.Module:
    """``params``: a ``PrunePlan`` dict (kept output channels per producer, options)."""
    from slimcnn.prune import PrunePlan
    from slimcnn.prune import apply_plan as apply_prune_plan

    prune_plan = PrunePlan.from_dict(step.params)
    mode = prune_plan.options.get("compensate") or False
    if mode and not ctx.batches and not step.params.get("structure_only"):
        raise ConfigError(f"this plan's channel pruning used compensation (--compensate {'mean' if mode is True else mode})"
                          ": pass the run's --task and --data to re-create it")
    apply_prune_plan(model, prune_plan, ctx.example_input, batches=ctx.batches, compensate=mode if ctx.batches else False)
    return model


@TRANSFORMS.register("prune_kernels")
def _prune_kernels(model: nn.Module, step: PlanStep, ctx: ApplyContext) -> nn.Module:
    """``params``: ``{"kept": {layer: kept kernels (:func:`slimcnn.prune.kernel.kept_to_json`)}, "drop_channels":
    bool}``."""
    from slimcnn.prune.kernel import apply_kernel_masks_, drop_removable_channels_, kept_mask

    masks = {}
    for layer, kept in step.params.get("kept", {}).items():
        w = _weight(model, layer)
        masks[layer] = kept_mask(kept, (w.shape[0], w.shape[1]), layer)
    apply_kernel_masks_(model, masks)
    if step.params.get("drop_channels"):
        drop_removable_channels_(model, ctx.example_input)
    return model


@TRANSFORMS.register("group_kernels")
def _group_kernels(model: nn.Module, step: PlanStep, ctx: ApplyContext) -> nn.Module:
    """``params``: ``{"groups": {layer: G}, "criterion": "l1"}``."""
    from slimcnn.prune.kernel import group_kernels_

    groups = {str(k): int(v) for k, v in step.params.get("groups", {}).items()}
    group_kernels_(model, groups, str(step.params.get("criterion", "l1")), example_input=ctx.example_input)
    return model


@TRANSFORMS.register("lowrank")
def _lowrank(model: nn.Module, step: PlanStep, ctx: ApplyContext) -> nn.Module:
    """``params``: ``{"layers": {layer: {"method": "svd|tucker2|spatial", "rank": r, "spec": LowRankSpec}}}``."""
    from slimcnn.lowrank import LowRankSpec, build_factors
    from slimcnn.types import from_dict

    for layer, how in step.params.get("layers", {}).items():
        spec = from_dict(LowRankSpec, dict(how.get("spec", {})))
        old = _module(model, layer)
        new = build_factors(old, how["method"], int(how["rank"]), spec).to(old.weight.device)
        parent, _, leaf = layer.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, leaf, new)
    return model


@TRANSFORMS.register("kmeans")
def _kmeans(model: nn.Module, step: PlanStep, ctx: ApplyContext) -> nn.Module:
    """``params``: a ``KMeansQuantSpec`` dict (bits and pruning rules, method, codebook dtype)."""
    from slimcnn.quantize import quantize_model

    return quantize_model(model, kmeans_step_spec(step)).model.eval()


def kmeans_step_spec(step: PlanStep) -> Any:
    """The ``KMeansQuantSpec`` a ``kmeans`` step holds."""
    from slimcnn.quantize import KMeansQuantSpec
    from slimcnn.types import from_dict

    raw = dict(step.params)
    raw["bits"] = tuple((str(p), int(b)) for p, b in raw.get("bits", ()))
    raw["prune"] = tuple((str(p), float(f)) for p, f in raw.get("prune", ()))
    return from_dict(KMeansQuantSpec, raw)


@TRANSFORMS.register("int8")
def _int8(model: nn.Module, step: PlanStep, ctx: ApplyContext) -> nn.Module:
    """``params``: ``{"spec": Int8Spec dict, "float_layers": [layer, ...], "ranges": ORT calibration cache}``.

    Returns an :class:`slimcnn.export.OrtModule` holding the int8 ONNX model (the run's bytes, bit for
    bit: the recorded activation ranges replace the calibration data). It must be the last step.
    """
    from slimcnn.export import OrtModule
    from slimcnn.export._int8 import replay_int8

    return OrtModule(replay_int8(model, step.params, ctx.example_input), float_model=model).eval()


def _module(model: nn.Module, layer: str) -> nn.Module:
    try:
        return model.get_submodule(layer)
    except AttributeError:
        raise ConfigError(f"the plan names layer '{layer}', which this model does not have; pass the model the "
                          "plan was made on") from None


def _weight(model: nn.Module, layer: str) -> Any:
    return _module(model, layer).weight  # type: ignore[union-attr]


# --- older plan files ------------------------------------------------------------------------------


def _from_legacy(d: Any, kind: Any) -> Plan:
    """PrunePlan (v1), SearchPlan and KernelPlan files written before the one-Plan format."""
    if not isinstance(d, dict):
        raise ConfigError("not a slimcnn plan; pass the plan.json of a slimcnn run")
    shape = tuple(int(i) for i in d.get("input_shape") or ())
    if kind == "PrunePlan":
        return Plan((PlanStep("prune_channels", tuple(d.get("layers", {})), d),), str(d.get("source", "")),
                    str(d.get("fingerprint", "")), shape)
    if kind == "SearchPlan" and d.get("method") == "prune":
        steps = [s for s in d.get("steps") or [] if s] or [d.get("details", {}).get("prune_plan")]
        return Plan(tuple(PlanStep("prune_channels", tuple(s.get("layers", {})), {**s, "structure_only": True})
                          for s in steps if s),
                    str(d.get("source", "")), str(d.get("fingerprint", "")), shape,
                    finetuned=bool(d.get("finetune_steps")))
    raise ConfigError(f"plan type {kind!r} (method {d.get('method')!r}) is from an older slimcnn that this version "
                      "cannot replay; re-run the command that made it")
