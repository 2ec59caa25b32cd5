"""The ``file:PATH`` source, the file-suffix loader registry and :func:`save_model`.

A model file is a pickled module (``torch.save(model)``), a TorchScript archive, or a state_dict
that needs ``arch=SOURCE``. slimcnn writes ``DIR/model.pt`` with a JSON sidecar ``DIR/model.json``
holding the :class:`ModelInfo`, so ``file:DIR/model.pt`` comes back with the right preprocessing.
Other formats (``.slim`` packed files) register a loader in :data:`FILE_LOADERS` by suffix.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import logging
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from slimcnn._io import save_torch, write_json
from slimcnn.errors import ConfigError, ModelLoadError
from slimcnn.models._user_modules import import_user_modules, user_module_files
from slimcnn.models._weights import (
    check_file,
    extract_state_dict,
    is_torchscript,
    load_state_dict_strict,
    torch_load,
)
from slimcnn.models._zoo import GUESS_NOTE, LoadedModel, ModelInfo
from slimcnn.models.sources import LoadOptions, ModelSource, _first_in_channels, register_model_source
from slimcnn.registry import Registry
from slimcnn.types import from_dict

log = logging.getLogger(__name__)

SIDECAR_FORMAT = "slimcnn-model-info"
SIDECAR_VERSION = 1

FileLoader = Callable[[Path, LoadOptions], LoadedModel]
FILE_LOADERS: Registry[FileLoader] = Registry("model file suffix")
"""Suffix (``".slim"``) -> loader; suffixes not registered go to the default torch loader."""

_PLUGIN_MODULES = {".slim": "slimcnn.quantize", ".slimk": "slimcnn.prune.kernel"}
"""Suffixes whose loader lives in another room, imported on first use."""


def drop_untrained_notes(notes: tuple[str, ...]) -> tuple[str, ...]:
    """``notes`` without the ``"untrained: ..."`` lines (for a model whose weights were loaded or trained)."""
    return tuple(n for n in notes if not n.startswith("untrained"))


NEW_LAYER_NOTE = "is new (random initialisation"
"""Marks the note of a classifier built afresh for other classes than its checkpoint's (``--num-classes``)."""


def trained_notes(notes: tuple[str, ...]) -> tuple[str, ...]:
    """``notes`` of a model that has just been trained: the untrained and new-classifier ones no longer hold."""
    return tuple(n for n in drop_untrained_notes(notes) if NEW_LAYER_NOTE not in n)


def inherited_untrained_notes(notes: tuple[str, ...], path: Path) -> tuple[str, ...]:
    """``notes`` of a file made from an untrained model: still untrained, but the source's advice (``pass
    --weights PATH``) is not for the file, which holds its own weights."""
    def one(n: str) -> str:
        if not n.startswith("untrained: ") or "made from an untrained model" in n:  # a file of a file: said once
            return n
        return f"untrained: {path.name} was made from an untrained model ({n.removeprefix('untrained: ').split(';')[0]})"

    return tuple(one(n) for n in notes)


def _importable_hint(error: Exception, path: Path) -> str:
    """How to make the missing module of an unpickling ``error`` importable: ``python`` puts the folder it runs in on
    ``sys.path`` (the model was likely saved so), the ``slimcnn`` command does not."""
    name = getattr(error, "name", None)
    top = name.split(".")[0] if isinstance(name, str) else None
    for folder in (path.resolve().parent, Path.cwd()):
        if top and ((folder / f"{top}.py").is_file() or (folder / top / "__init__.py").is_file()):
            return f"'{top}' is in {folder}: run with PYTHONPATH={folder}"
    return "make the module that defines its classes importable (PYTHONPATH)"


def register_file_loader(suffix: str, *, override: bool = False) -> Callable[[FileLoader], FileLoader]:
    """Decorator registering a loader for files ending in ``suffix`` (e.g. ``".slim"``)."""
    return FILE_LOADERS.register(suffix.lower(), override=override)


def sidecar_path(path: str | Path) -> Path:
    """``DIR/model.pt`` -> ``DIR/model.json``."""
    return Path(path).with_suffix(".json")


class Sidecar(NamedTuple):
    """What ``model.json`` beside a model file holds."""

    info: ModelInfo
    source: str | None
    """The source the model was made from."""
    modules: dict[str, str]
    """User ``.py`` files its pickled classes come from (see :func:`save_model`), imported before unpickling."""


def read_sidecar(path: str | Path) -> Sidecar | None:
    """The :class:`ModelInfo`, original source and user modules stored next to ``path``, or None when absent.

    Raises:
        ModelLoadError: when the sidecar exists but is not a slimcnn model-info file.
    """
    side = sidecar_path(path)
    if not side.is_file():
        return None
    try:
        data = json.loads(side.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ModelLoadError(f"sidecar '{side}' is not valid JSON ({e}); delete or fix it") from e
    if not isinstance(data, dict) or data.get("format") != SIDECAR_FORMAT:
        log.debug("ignoring %s: not a slimcnn model-info sidecar", side)
        return None
    if int(data.get("version", 0)) > SIDECAR_VERSION:
        raise ModelLoadError(
            f"sidecar '{side}' has version {data.get('version')}; upgrade slimcnn to read it"
        )
    try:
        info = from_dict(ModelInfo, data.get("info", {}))
    except TypeError as e:
        raise ModelLoadError(f"sidecar '{side}' has unexpected fields ({e}); delete or fix it") from e
    modules = data.get("modules")
    return Sidecar(info, data.get("source"),
                   {str(k): str(v) for k, v in modules.items()} if isinstance(modules, dict) else {})


def save_model(loaded: LoadedModel, path: str | Path) -> Path:
    """Write ``loaded.model`` as a pickled module to ``path`` plus the :class:`ModelInfo` sidecar.

    Both files are written atomically. ``path`` may be a directory, which gets ``model.pt``.

    Args:
        loaded: the model and its metadata.
        path: ``DIR/model.pt`` (or ``DIR``).

    Returns:
        The path of the written ``.pt`` file.

    Example:
        >>> save_model(load_model("slimcnn:tiny_cnn"), "out/model.pt")  # doctest: +SKIP
        >>> load_model("file:out/model.pt").info.input_shape  # doctest: +SKIP
        (1, 3, 32, 32)
    """
    p = Path(path)
    if p.is_dir() or p.suffix == "":
        p = p / "model.pt"
    save_torch(p, loaded.model)
    modules = user_module_files(loaded.model)  # classes from a python:FILE.py source: re-imported to unpickle
    write_json(
        sidecar_path(p),
        {"format": SIDECAR_FORMAT, "version": SIDECAR_VERSION, "source": loaded.source, "info": loaded.info,
         **({"modules": modules} if modules else {})},
    )
    return p


def _load_torch_file(path: Path, opts: LoadOptions) -> LoadedModel:
    """Pickled module, TorchScript archive, or state_dict (+ ``opts.arch``)."""
    from slimcnn.models import load_model

    if is_torchscript(path):
        try:
            model: nn.Module = torch.jit.load(str(path), map_location="cpu")
        except RuntimeError as e:
            raise ModelLoadError(
                f"cannot read TorchScript archive '{path}' ({str(e).splitlines()[0]}); re-export it"
            ) from e
        return LoadedModel(model, f"file:{path}", ModelInfo(pretrained=True, weights=str(path)))
    try:
        obj: Any = torch_load(path, weights_only=True)
    except pickle.UnpicklingError:
        # Holds classes: a pickled module. Only the user's own file reaches here, so unpickle it.
        try:
            obj = torch_load(path, weights_only=False)
        except (ImportError, AttributeError) as e:  # a class whose module is not importable here
            raise ModelLoadError(f"cannot unpickle '{path}' ({e}); {_importable_hint(e, path)}, or save a state_dict "
                                 "and load it with --arch") from e
    if isinstance(obj, dict):
        inner = next((obj[k] for k in ("ema", "model") if isinstance(obj.get(k), nn.Module)), None)
        if isinstance(inner, nn.Module):
            obj = inner
    if isinstance(obj, nn.Module):
        if opts.arch is not None:
            raise ConfigError(f"'{path}' holds a whole model; drop --arch (it is only for bare state_dicts)")
        return LoadedModel(obj.float(), f"file:{path}", ModelInfo(pretrained=True, weights=str(path)))
    state_dict = extract_state_dict(obj, path)
    if opts.arch is None:
        raise ConfigError(
            f"'{path}' holds a state_dict ({len(state_dict)} tensors), not a model; "
            "pass --arch with the architecture, e.g. --arch torchvision:resnet18 or --arch slimcnn:resnet56"
        )
    if opts.arch.startswith("file:"):
        raise ConfigError(
            f"--arch must build an architecture (torchvision:, slimcnn:, ...), got '{opts.arch}'"
        )
    base = load_model(opts.arch, num_classes=opts.num_classes, scale=opts.scale, weights=None)
    load_state_dict_strict(base.model, state_dict, path)
    info = dataclasses.replace(base.info, pretrained=True, weights=str(path), notes=drop_untrained_notes(base.info.notes))
    return LoadedModel(base.model, f"file:{path}", info)


def _load_file(name: str, opts: LoadOptions) -> LoadedModel:
    path = check_file(name, "model")
    suffix = path.suffix.lower()
    if suffix in _PLUGIN_MODULES and suffix not in FILE_LOADERS:
        importlib.import_module(_PLUGIN_MODULES[suffix])  # registers its loader
    loader = FILE_LOADERS.get(suffix) if suffix in FILE_LOADERS else _load_torch_file
    side = read_sidecar(path)
    if side is not None:  # a model built from a user's .py file unpickles only once that file is imported
        import_user_modules(side.modules, path)
    loaded = loader(path, opts)
    if side is not None:
        info = side.info
        if info.pretrained:  # trained (e.g. by `slimcnn train`): the base model's 'untrained' note is stale
            info = dataclasses.replace(info, notes=drop_untrained_notes(info.notes))
        loaded = dataclasses.replace(loaded, info=dataclasses.replace(info, weights=str(path)))
    elif loaded.info.task is None and opts.arch is None:
        ch = _first_in_channels(loaded.model) or 3
        note = (f"{GUESS_NOTE} (no sidecar {sidecar_path(path).name}): (1, {ch}, 224, 224) and the preprocessing "
                "are guesses; pass --input, or --data to take its images' size")
        loaded = dataclasses.replace(
            loaded,
            info=dataclasses.replace(
                loaded.info, input_shape=(1, ch, 224, 224), input_guessed=True, notes=(*loaded.info.notes, note)
            ),
        )
    if opts.num_classes is not None and opts.arch is None:
        raise ConfigError(
            "--num-classes cannot change a saved model; use --arch with a state_dict to rebuild it"
        )
    if opts.scale is not None and loaded.info.scale not in (None, opts.scale):
        raise ConfigError(f"'{path}' is a x{loaded.info.scale} model; --scale {opts.scale} cannot change it")
    if opts.scale is not None and loaded.info.scale is None:  # a model that does not say its factor: the user's
        loaded = dataclasses.replace(loaded, info=dataclasses.replace(loaded.info, scale=opts.scale))
    if not loaded.info.pretrained:
        loaded = dataclasses.replace(loaded, info=dataclasses.replace(
            loaded.info, notes=inherited_untrained_notes(loaded.info.notes, path)))
    loaded.model.eval()
    return loaded


register_model_source(ModelSource("file", "file:PATH", "file:out/model.pt", _load_file))


@register_file_loader(".onnx")
def _load_onnx_file(path: Path, opts: LoadOptions) -> LoadedModel:
    """``file:model.onnx``: ONNX Runtime behind an ``nn.Module`` (:class:`slimcnn.export.OrtModule`)."""
    from slimcnn.export._ort import load_onnx_file

    loaded: LoadedModel = load_onnx_file(path, opts)
    return loaded
