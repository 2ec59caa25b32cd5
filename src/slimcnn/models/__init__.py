"""Model sources and the built-in zoo.

``load_model("torchvision:resnet18")``, ``load_model("slimcnn:fsrcnn", scale=3)``,
``load_model("file:out/model.pt")`` ... each returns a :class:`LoadedModel` (module, source string
and :class:`ModelInfo`). Nothing is downloaded: weights come only from local files.
"""

from __future__ import annotations

import dataclasses
import importlib

import torch

from slimcnn.errors import ConfigError, ModelLoadError
from slimcnn.models import _ultralytics  # noqa: F401  (registers the ultralytics: source)
from slimcnn.models._weights import (
    checkpoint_classes,
    load_all_but,
    load_state_dict_strict,
    load_weights_file,
    read_state_dict,
)
from slimcnn.models._zoo import ZOO, LoadedModel, ModelInfo, ZooEntry, register_zoo_model
from slimcnn.models.files import (
    FILE_LOADERS,
    NEW_LAYER_NOTE,
    drop_untrained_notes,
    read_sidecar,
    register_file_loader,
    save_model,
)
from slimcnn.models.sources import SOURCES, LoadOptions, ModelSource, register_model_source, split_source

_ZOO_MODULES: list[str] = [
    "slimcnn.models.sr",
    "slimcnn.models.cifar",
    "slimcnn.models.alexnet",
    "slimcnn.models.small",
    "slimcnn.models.yolo_fastestv2",
]
"""Modules that register zoo models on import; a new zoo module appends its name here."""

for _mod in _ZOO_MODULES:
    importlib.import_module(_mod)

__all__ = [
    "FILE_LOADERS",
    "SOURCES",
    "ZOO",
    "LoadOptions",
    "LoadedModel",
    "ModelInfo",
    "ModelSource",
    "ZooEntry",
    "list_models",
    "load_model",
    "load_state_dict_strict",
    "load_weights_file",
    "read_sidecar",
    "read_state_dict",
    "register_file_loader",
    "register_model_source",
    "register_zoo_model",
    "save_model",
]


def load_model(
    source: str,
    *,
    weights: str | None = None,
    arch: str | None = None,
    num_classes: int | None = None,
    scale: int | None = None,
    seed: int | None = None,
) -> LoadedModel:
    """Build or read a model from a source string, in eval mode on CPU.

    Args:
        source: ``torchvision:NAME``, ``timm:NAME``, ``ultralytics:FILE`` (``.yaml``/``.pt``),
            ``file:PATH``, ``python:pkg.module:factory`` or ``slimcnn:NAME``.
        weights: a local state_dict file loaded strictly into the model (overrides zoo weights).
        arch: for ``file:`` holding a bare state_dict, the source that builds its architecture.
        num_classes: output classes when building a model. With a checkpoint (``weights``, or a ``file:``
            state_dict with ``arch``) whose classifier has other classes, that layer is new (random
            initialisation, said in a note) and everything else is the checkpoint's: transfer learning.
        scale: super-resolution factor (``slimcnn:`` SR models).
        seed: seed torch's RNG while the model is built, so a random initialisation (e.g.
            ``slimcnn:lenet5`` or ``torchvision:resnet18`` without weights) is reproducible. The
            global RNG state is left as it was (``torch.random.fork_rng``). None: not seeded.

    Returns:
        The model with its source and :class:`ModelInfo` (``info.pretrained`` is False for random
        weights, with a note saying so).

    Raises:
        UnknownNameError: unknown prefix or model name (the message lists close matches).
        ModelLoadError: missing, corrupt or mismatching files.
        ConfigError: options that do not apply to the source.

    Example:
        >>> m = load_model("slimcnn:resnet20")
        >>> m.info.input_shape
        (1, 3, 32, 32)
    """
    src, name = split_source(source)
    opts = LoadOptions(weights=weights, arch=arch, num_classes=num_classes, scale=scale)
    if arch is not None and src.prefix != "file":
        raise ConfigError(f"--arch only applies to file: sources holding a state_dict, not {src.prefix}:")
    try:
        return _load(src, name, opts, seed)
    except ModelLoadError:
        mismatch = None if weights is None and arch is None else \
            _classifier_mismatch(source, weights, arch, num_classes, scale, seed)
        if mismatch is None:
            raise
    built, state_dict, (classes, layer), path = mismatch
    if num_classes is not None:  # e.g. an ImageNet checkpoint into a model built for the user's 10 classes
        load_all_but(built.model, state_dict, layer, path)
        note = (f"num_classes={num_classes}: {layer} {NEW_LAYER_NOTE}; the checkpoint's has {classes} outputs) "
                "and the rest is the checkpoint's; train it before its score means anything")
        built.info = dataclasses.replace(built.info, pretrained=True, weights=str(path),
                                         notes=(*drop_untrained_notes(built.info.notes), note))
        return dataclasses.replace(built, source=source)
    # a checkpoint fine-tuned to K classes into an architecture built with its default classifier
    loaded = load_model(source, weights=weights, arch=arch, num_classes=classes, scale=scale, seed=seed)
    loaded.info = dataclasses.replace(loaded.info, notes=(
        *loaded.info.notes, f"num_classes={classes}: the checkpoint's {layer} has {classes} outputs"))
    return loaded


def _classifier_mismatch(source: str, weights: str | None, arch: str | None, num_classes: int | None,
                         scale: int | None, seed: int | None) -> tuple[LoadedModel, dict[str, torch.Tensor], tuple[int, str], str] | None:
    """When a checkpoint (``weights``, or a ``file:`` state_dict with ``arch``) differs from its architecture built
    with ``num_classes`` only in the rows of one layer (:func:`checkpoint_classes`): the model built, the
    checkpoint's state_dict, ``(its classes, that layer)`` and its path. None otherwise: the caller's error stands."""
    path = weights if weights is not None else split_source(source)[1]
    try:
        state_dict = read_state_dict(path)
        built = load_model(arch if arch is not None else source, num_classes=num_classes, scale=scale, seed=seed)
    except (ModelLoadError, ConfigError):
        return None
    found = checkpoint_classes(built.model, state_dict)
    return None if found is None else (built, state_dict, found, path)


def _load(src: ModelSource, name: str, opts: LoadOptions, seed: int | None) -> LoadedModel:
    """:func:`load_model` once its source is split and its options checked."""
    weights = opts.weights
    if seed is None:
        loaded = src.load(name, opts)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            loaded = src.load(name, opts)
    if weights is not None and not src.handles_weights:
        load_weights_file(loaded.model, weights)
        notes = drop_untrained_notes(loaded.info.notes)
        loaded.info = dataclasses.replace(loaded.info, pretrained=True, weights=str(weights), notes=notes)
    loaded.model.eval()
    return loaded


def list_models(pattern: str = "*") -> list[str]:
    """Names of the built-in zoo models (``slimcnn:NAME``) matching an fnmatch ``pattern``."""
    return ZOO.names(pattern)
