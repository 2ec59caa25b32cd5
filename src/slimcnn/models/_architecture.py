"""How a compact file (``.slim``, ``.slimk``) records, and rebuilds, the architecture of the model it stores.

The record is a source string whose build matches the model exactly (``slimcnn:lenet5``, a ``python:``
factory with an absolute path, the source a ``file:model.pt`` was made from or its ``--arch``), or else
the module pickled with its weights on the ``meta`` device (a pruned file, a custom net; unpickled like
``file:model.pt``, so only load files you trust).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from slimcnn.errors import ConfigError, DataError, ModelLoadError
from slimcnn.models._user_modules import import_user_modules, user_module_files

log = logging.getLogger(__name__)


def _state_signature(model: nn.Module) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    return {k: (tuple(v.shape), v.dtype) for k, v in model.state_dict().items()}


def _absolute_source(source: str) -> str:
    """``python:nets.py:build`` -> ``python:/abs/nets.py:build`` (so the file reloads from any directory)."""
    if source.startswith("python:"):
        mod, sep, attr = source.removeprefix("python:").rpartition(":")
        if sep and mod.endswith(".py") and Path(mod).is_file():
            return f"python:{Path(mod).resolve()}:{attr}"
    return source


def _build_matching(candidate: str, model: nn.Module, info: Any) -> dict[str, Any] | None:
    """Options with which ``load_model(candidate, **options)`` builds ``model``'s exact architecture, or None."""
    from slimcnn.models import load_model

    want = _state_signature(model)
    implied = {k: getattr(info, k, None) for k in ("scale", "num_classes")}
    implied = {k: v for k, v in implied.items() if v is not None}
    for options in ([implied, {}] if implied else [{}]):
        try:
            built = load_model(candidate, seed=0, **options).model
        except Exception as e:  # a user's factory may fail any way: then this candidate simply does not fit
            log.debug("%s%s cannot rebuild the architecture: %s", candidate, options, e)
            continue
        if type(built).__name__ == type(model).__name__ and _state_signature(built) == want:
            return options
    return None


def _module_skeleton(model: nn.Module) -> bytes | None:
    """The module pickled with every state-dict tensor on the ``meta`` device (structure, no weights)."""
    import io
    import pickle

    memo: dict[int, Any] = {}
    for t in model.state_dict(keep_vars=True).values():
        if id(t) not in memo:
            meta = torch.empty_like(t, device="meta")
            memo[id(t)] = nn.Parameter(meta, requires_grad=t.requires_grad) if isinstance(t, nn.Parameter) else meta
    try:
        skeleton = copy.deepcopy(model, memo)
        buf = io.BytesIO()
        torch.save(skeleton, buf)
    except (pickle.PicklingError, TypeError, AttributeError, RuntimeError) as e:
        log.warning("cannot store the architecture of %s in the packed file: %s", type(model).__name__, e)
        return None
    return buf.getvalue()


def _load_skeleton(data: bytes) -> nn.Module:
    """A module from :func:`_module_skeleton`, its meta tensors replaced by empty CPU ones (ties kept)."""
    import io

    model = torch.load(io.BytesIO(data), map_location="cpu", weights_only=False)
    if not isinstance(model, nn.Module):
        raise DataError("packed file is corrupt: its architecture record is not a module")
    made: dict[int, Any] = {}
    for mod in model.modules():
        for store in (mod._parameters, mod._buffers):
            for name, t in store.items():
                if t is not None and t.is_meta:
                    if id(t) not in made:
                        new = torch.empty_like(t, device="cpu")
                        made[id(t)] = nn.Parameter(new, requires_grad=t.requires_grad) if isinstance(t, nn.Parameter) else new
                    store[name] = made[id(t)]
    return model


def architecture_record(
    model: nn.Module, source: str, info: Any = None, rebuild_from: tuple[str, ...] = ()
) -> tuple[dict[str, Any] | None, bytes | None]:
    """How a ``.slim`` file rebuilds ``model``'s architecture without the original file.

    Preferred: a source string (``source`` unless it is ``file:``, then each of ``rebuild_from``,
    e.g. the source a ``file:model.pt`` was made from or its ``--arch``) whose build has exactly the
    model's class and state-dict names/shapes/dtypes. Otherwise (a pruned ``model.pt``, a custom net)
    the module itself, pickled with its weights on the ``meta`` device (a few KB).

    Returns:
        ``({"kind": "source", "source": S, "options": {...}}, None)``, ``({"kind": "module"}, bytes)``,
        or ``(None, None)`` when neither works (then loading needs ``model=``).
    """
    candidates = [c for c in (source, *rebuild_from) if c and not c.startswith("file:")]
    for cand in dict.fromkeys(_absolute_source(c) for c in candidates):
        options = _build_matching(cand, model, info)
        if options is not None:
            return {"kind": "source", "source": cand, "options": options}, None
    data = _module_skeleton(model)
    if data is None:
        return None, None
    modules = user_module_files(model)  # classes from a python:FILE.py source: re-imported to unpickle
    return {"kind": "module", **({"modules": modules} if modules else {})}, data


def stored_info(header: dict[str, Any]) -> Any:
    """The :class:`~slimcnn.models.ModelInfo` a compact file's header stores (empty for files without one)."""
    from slimcnn.models._zoo import ModelInfo
    from slimcnn.types import from_dict

    info = from_dict(ModelInfo, header["info"]) if header.get("info") else ModelInfo()
    if info.pretrained:
        from slimcnn.models.files import drop_untrained_notes

        info = dataclasses.replace(info, notes=drop_untrained_notes(info.notes))
    return info


def info_record(info: Any) -> dict[str, Any] | None:
    """``info`` as the JSON a compact file's header stores (None when it is no dataclass instance)."""
    return dataclasses.asdict(info) if dataclasses.is_dataclass(info) and not isinstance(info, type) else None


def rebuild_architecture(path: str | Path, arch: dict[str, Any] | None, skeleton: bytes | None, source: str,
                         info: Any) -> nn.Module:
    """The empty architecture of a packed file, from its ``arch`` record and stored ``skeleton`` (or, for old files,
    its source)."""
    from slimcnn.models import load_model

    if arch is not None and arch.get("kind") == "module" and skeleton is not None:
        import_user_modules(dict(arch.get("modules", {})), path)
        try:
            return _load_skeleton(skeleton)
        except (ImportError, AttributeError) as e:  # a class that is not importable here
            raise ModelLoadError(
                f"{path}: cannot rebuild its architecture ({e}); make the model's module importable (PYTHONPATH)"
            ) from e
    if arch is not None and arch.get("kind") == "source":
        return load_model(str(arch["source"]), seed=0, **arch.get("options", {})).model
    if not source or source.startswith("file:"):
        raise ModelLoadError(
            f"{path} stores no architecture (made from '{source}' by an older slimcnn); re-run slimcnn quantize"
        )
    opts = {k: v for k, v in (("scale", info.scale), ("num_classes", info.num_classes)) if v is not None}
    try:
        return load_model(source, **opts).model  # type: ignore[arg-type]
    except ConfigError:
        return load_model(source).model
