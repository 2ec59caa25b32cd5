"""Model sources: ``PREFIX:NAME`` strings -> :class:`LoadedModel`, one registered loader per prefix.

Add a source with :func:`register_model_source`; ``load_model`` in ``slimcnn.models`` dispatches.
Nothing here downloads: torchvision/timm nets are built with random weights, and weights come only
from local files.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import importlib.util
import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from slimcnn.errors import ConfigError, ModelLoadError, SlimcnnError, UnknownNameError, require, unknown_name
from slimcnn.models._user_modules import import_file
from slimcnn.models._weights import check_file, load_weights_file
from slimcnn.models._zoo import GUESS_NOTE, ZOO, LoadedModel, ModelInfo
from slimcnn.paths import data_root
from slimcnn.registry import Registry

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class LoadOptions:
    """The options of :func:`slimcnn.models.load_model`, passed on to a source's loader."""

    weights: str | None = None
    """Local weights file (state_dict) to load strictly into the built model."""
    arch: str | None = None
    """Source string of the architecture a bare state_dict belongs to (``file:`` only)."""
    num_classes: int | None = None
    """Number of output classes when building a model."""
    scale: int | None = None
    """Super-resolution factor (``slimcnn:`` SR models)."""


@dataclass(frozen=True)
class ModelSource:
    """A registered source prefix.

    ``load(name, options)`` gets the part after ``PREFIX:``. When ``handles_weights`` is False,
    ``load_model`` loads ``options.weights`` into the returned model itself.
    """

    prefix: str
    usage: str
    """How the source is written, e.g. ``torchvision:NAME``."""
    example: str
    load: Callable[[str, LoadOptions], LoadedModel]
    handles_weights: bool = False


SOURCES: Registry[ModelSource] = Registry("model source")


def register_model_source(source: ModelSource, *, override: bool = False) -> ModelSource:
    """Register a model source prefix (see :class:`ModelSource`)."""
    SOURCES.add(source.prefix, source, override=override)
    return source


def source_usages() -> str:
    """``"torchvision:NAME (e.g. torchvision:resnet18), ..."`` for error messages."""
    return ", ".join(f"{SOURCES.get(p).usage} (e.g. {SOURCES.get(p).example})" for p in SOURCES.names())


def unknown_in_catalogue(kind: str, name: str, valid: list[str], listing: str) -> UnknownNameError:
    """Like :func:`unknown_name` for catalogues too long to print: close matches and where to list them."""
    if len(valid) <= 40:
        return unknown_name(kind, name, valid)
    close = difflib.get_close_matches(name, valid, n=5, cutoff=0.5)
    hint = f" Did you mean {close}?" if close else ""
    return UnknownNameError(
        f"Unknown {kind} '{name}'.{hint} {len(valid)} are available; list them with {listing}"
    )


def _no_scale(prefix: str, opts: LoadOptions) -> None:
    if opts.scale is not None:
        raise ConfigError(f"--scale only applies to super-resolution models (slimcnn:, python:, file:), "
                          f"not {prefix}: sources")


# --------------------------------------------------------------------------- torchvision


def _torchvision_input(name: str, module: str) -> tuple[int, ...]:
    if name.startswith("inception_v3") or name.endswith("inception_v3"):
        return (1, 3, 299, 299)
    if module == "detection":
        if "ssdlite320" in name or "320" in name:
            return (1, 3, 320, 320)
        return (1, 3, 300, 300) if name.startswith("ssd300") else (1, 3, 640, 640)
    if module == "segmentation":
        return (1, 3, 520, 520)
    if module == "video":
        return (1, 3, 16, 112, 112)
    return (1, 3, 224, 224)


def _load_torchvision(name: str, opts: LoadOptions) -> LoadedModel:
    import torchvision.models as tvm

    _no_scale("torchvision", opts)
    valid = tvm.list_models()
    if name not in valid:
        raise unknown_in_catalogue("torchvision model", name, valid, "torchvision.models.list_models()")
    sub = {
        m: set(tvm.list_models(module=getattr(tvm, m)))
        for m in ("detection", "segmentation", "video", "optical_flow")
    }
    module = next((m for m, names in sub.items() if name in names), "classification")
    kwargs: dict[str, Any] = {"weights": None}
    if module in ("detection", "segmentation"):
        kwargs["weights_backbone"] = None
    if opts.num_classes is not None:
        kwargs["num_classes"] = opts.num_classes
    try:
        model = tvm.get_model(name, **kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"torchvision:{name} cannot be built with {kwargs}: {e}") from e
    task = {"classification": "classification", "detection": "detection"}.get(module)
    normalise = module == "classification"
    info = ModelInfo(
        task=task,  # type: ignore[arg-type]
        input_shape=_torchvision_input(name, module),
        mean=IMAGENET_MEAN if normalise else None,
        std=IMAGENET_STD if normalise else None,
        num_classes=opts.num_classes
        if opts.num_classes is not None
        else (1000 if normalise else 91 if task else None),
        notes=("untrained: torchvision model built with weights=None; pass --weights PATH",),
    )
    return LoadedModel(model, f"torchvision:{name}", info)


# --------------------------------------------------------------------------- timm


def _load_timm(name: str, opts: LoadOptions) -> LoadedModel:
    timm: Any = require("timm", "timm")
    _no_scale("timm", opts)
    if not timm.is_model(name):
        raise unknown_in_catalogue("timm model", name, timm.list_models(), "timm.list_models('pattern*')")
    kwargs: dict[str, Any] = {"pretrained": False}
    if opts.num_classes is not None:
        kwargs["num_classes"] = opts.num_classes
    model = timm.create_model(name, **kwargs)
    cfg = getattr(model, "pretrained_cfg", None) or {}
    size = tuple(cfg.get("input_size", (3, 224, 224)))
    info = ModelInfo(
        task="classification",
        input_shape=(1, *size),
        mean=tuple(cfg["mean"]) if "mean" in cfg else IMAGENET_MEAN,
        std=tuple(cfg["std"]) if "std" in cfg else IMAGENET_STD,
        num_classes=getattr(model, "num_classes", opts.num_classes),
        notes=("untrained: timm model built with pretrained=False; pass --weights PATH",),
    )
    return LoadedModel(model, f"timm:{name}", info)


# --------------------------------------------------------------------------- python


def _import_target(spec: str) -> Any:
    mod_name, sep, attr = spec.rpartition(":")
    if not sep or not mod_name or not attr:
        raise ConfigError(
            f"python:{spec}: expected python:pkg.module:factory or python:path/to/file.py:factory"
        )
    if mod_name.endswith(".py"):
        module = import_file(check_file(mod_name, "python module"))
    else:
        try:
            module = importlib.import_module(mod_name)
        except ModuleNotFoundError as e:
            # the console script does not put the working folder on sys.path (python -m does)
            local = Path(*mod_name.split(".")).with_suffix(".py")
            fix = (f"name the file instead: python:{local.as_posix()}:{attr}" if local.is_file()
                   else "check the module is on PYTHONPATH")
            raise ModelLoadError(f"python:{spec}: cannot import '{mod_name}' ({e}); {fix}") from e
    if not hasattr(module, attr):
        public = [n for n in dir(module) if not n.startswith("_") and callable(getattr(module, n))]
        raise unknown_name(f"factory in {mod_name}", attr, public)
    return getattr(module, attr)


def _load_python(spec: str, opts: LoadOptions) -> LoadedModel:
    factory = _import_target(spec)
    kwargs: dict[str, Any] = {}
    if opts.num_classes is not None:
        kwargs["num_classes"] = opts.num_classes
    obj = _call_factory(spec, factory, kwargs) if callable(factory) and not isinstance(factory, nn.Module) else factory
    if isinstance(obj, LoadedModel):
        return dataclasses.replace(obj, source=f"python:{spec}")
    if not isinstance(obj, nn.Module):
        raise ModelLoadError(
            f"python:{spec} returned {type(obj).__name__}; the factory must return an nn.Module"
        )
    shape = (1, _first_in_channels(obj) or 3, 224, 224)
    info = ModelInfo(input_shape=shape, input_guessed=True, num_classes=opts.num_classes, scale=opts.scale,
                     notes=(f"{GUESS_NOTE}: {shape} is a guess; pass --input, or --data to take its images' size",))
    return LoadedModel(obj, f"python:{spec}", info)


def _call_factory(spec: str, factory: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
    """``factory(**kwargs)``, its misuse and its own failure as one line each (they were tracebacks)."""
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):  # a builtin or C callable: nothing to check
        params = None
    if params is not None:
        named = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        missing = [p.name for p in params if p.kind in named and p.default is p.empty and p.name not in kwargs]
        if missing:
            raise ModelLoadError(f"python:{spec} needs {', '.join(missing)}, and slimcnn calls a factory without "
                                 "arguments (only num_classes=, with --num-classes): point at one that needs none, e.g. "
                                 f"def make(): return {getattr(factory, '__name__', 'factory')}({missing[0]}=...)")
        takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
        unknown = [k for k in kwargs if not takes_any and k not in {p.name for p in params}]
        if unknown:
            raise ConfigError(f"python:{spec} takes no {unknown[0]} argument, so --num-classes cannot set it: give the "
                              "factory a num_classes parameter, or drop --num-classes")
    try:
        return factory(**kwargs)
    except SlimcnnError:
        raise
    except Exception as e:  # noqa: BLE001 - the user's code raises anything; say what and where
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise ModelLoadError(f"python:{spec} raised {type(e).__name__} while building the model"
                             f"{': ' + first if first else ''} (--debug shows the traceback)") from e


def _first_in_channels(model: nn.Module) -> int | None:
    for m in model.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            return int(m.in_channels)
    return None


# --------------------------------------------------------------------------- slimcnn (the zoo)


def _zoo_options(
    name: str, build: Callable[..., nn.Module], info: ModelInfo, opts: LoadOptions
) -> dict[str, Any]:
    params = inspect.signature(build).parameters
    out: dict[str, Any] = {}
    for key, value, default in (
        ("scale", opts.scale, info.scale),
        ("num_classes", opts.num_classes, info.num_classes),
    ):
        if key in params:
            chosen = value if value is not None else default
            if chosen is not None:
                out[key] = chosen
        elif value is not None:
            flag = "--" + key.replace("_", "-")
            raise ConfigError(
                f"slimcnn:{name} has no {flag} option (it takes: {', '.join(params) or 'none'})"
            )
    return out


def _load_zoo(name: str, opts: LoadOptions) -> LoadedModel:
    entry = ZOO.get(name)
    build_opts = _zoo_options(name, entry.build, entry.info, opts)
    model = entry.build(**build_opts)
    info = dataclasses.replace(entry.info, **build_opts)
    if info.classes is not None and len(info.classes) != info.num_classes:  # e.g. --num-classes 100
        info = dataclasses.replace(info, classes=None)
    if info.task is None and opts.num_classes is not None:
        info = dataclasses.replace(info, task="classification")
    load = entry.load_weights or load_weights_file
    if opts.weights is not None:
        load(model, opts.weights)
        info = dataclasses.replace(info, pretrained=True, weights=str(opts.weights))
    else:
        rel = entry.weights(**build_opts) if entry.weights is not None else None
        root = data_root()
        path = (root / "weights" / rel) if (rel and root is not None) else None
        if path is not None and path.is_file():
            load(model, str(path))
            info = dataclasses.replace(info, pretrained=True, weights=str(path))
        else:
            if rel:
                note = f"untrained: no weights found at $SLIMCNN_DATA/weights/{rel}; pass --weights PATH"
            else:
                opts_text = "".join(f" {k}={v}" for k, v in build_opts.items())
                note = (
                    f"untrained: slimcnn ships no weights for slimcnn:{name}{opts_text}; pass --weights PATH"
                )
            log.info("slimcnn:%s is %s", name, note)  # the CLI prints info.notes once
            info = dataclasses.replace(info, pretrained=False, notes=(*info.notes, note))
    model.eval()
    return LoadedModel(model, f"slimcnn:{name}", info)


register_model_source(
    ModelSource("torchvision", "torchvision:NAME", "torchvision:resnet18", _load_torchvision)
)
register_model_source(ModelSource("timm", "timm:NAME", "timm:mobilenetv3_small_100", _load_timm))
register_model_source(
    ModelSource("python", "python:pkg.module:factory", "python:mypkg.nets:build", _load_python)
)
register_model_source(
    ModelSource("slimcnn", "slimcnn:NAME", "slimcnn:resnet56", _load_zoo, handles_weights=True)
)


def split_source(source: str) -> tuple[ModelSource, str]:
    """Split ``PREFIX:REST`` and look the prefix up, with an error listing every valid prefix."""
    prefix, sep, rest = source.partition(":")
    if not sep or prefix not in SOURCES:
        hint = ""
        if not sep:
            cands = []
            if source in ZOO:
                cands.append(f"slimcnn:{source}")
            if Path(source).exists():
                cands.append(f"file:{source}")
            if source.endswith((".yaml", ".yml")):
                cands.append(f"ultralytics:{source}")
            import torchvision.models as tvm

            if source in tvm.list_models():
                cands.append(f"torchvision:{source}")
            hint = f" Did you mean {' or '.join(cands)}?" if cands else " A source needs a prefix."
        raise UnknownNameError(f"Unknown model source '{source}'.{hint} Valid prefixes: {source_usages()}")
    if not rest:
        src = SOURCES.get(prefix)
        raise ConfigError(f"model source '{source}' names no model; write it like {src.example}")
    return SOURCES.get(prefix), rest
