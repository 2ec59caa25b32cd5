"""Reading checkpoints and loading state_dicts strictly, with errors that name the file and the fix."""

from __future__ import annotations

import logging
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from slimcnn.errors import ModelLoadError

log = logging.getLogger(__name__)

_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net", "params", "weights")
"""Keys under which training scripts commonly nest the state_dict (tried in this order)."""
_PREFIXES = ("module.", "_orig_mod.", "model.")
"""Prefixes added by DataParallel/DDP, torch.compile and wrapper modules; stripped when on every key."""


def _is_tensor_mapping(obj: object) -> bool:
    return (
        isinstance(obj, Mapping) and len(obj) > 0 and all(isinstance(v, torch.Tensor) for v in obj.values())
    )


def is_torchscript(path: Path) -> bool:
    """True when ``path`` is a TorchScript archive (a zip holding ``code/`` and ``constants.pkl``)."""
    if not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except (OSError, zipfile.BadZipFile):
        return False
    return any(n.endswith("constants.pkl") for n in names) and any("/code/" in n for n in names)


def check_file(path: str | Path, what: str = "checkpoint") -> Path:
    """Return ``path`` as a :class:`Path`, or raise :class:`ModelLoadError` when it is not a readable file."""
    p = Path(path).expanduser()
    if not p.exists():
        raise ModelLoadError(f"{what} file '{p}' does not exist; check the path (nothing is downloaded)")
    if not p.is_file():
        raise ModelLoadError(f"{what} '{p}' is not a file; pass the path of the .pt/.pth/.th file itself")
    return p


def torch_load(path: Path, *, weights_only: bool) -> Any:
    """``torch.load`` on CPU, turning unreadable files into one-line :class:`ModelLoadError`.

    ``pickle.UnpicklingError`` from a ``weights_only=True`` load is re-raised untouched, so callers can
    decide whether the file (which holds classes, not only tensors) may be unpickled fully.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=weights_only)
    except pickle.UnpicklingError:
        if weights_only:
            raise
        raise ModelLoadError(
            f"cannot read '{path}': not a PyTorch checkpoint (corrupt or another format); re-save it with torch.save"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, IndexError, KeyError, zipfile.BadZipFile) as e:
        # a damaged file surfaces as whichever error the unpickler hit first
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelLoadError(
            f"cannot read '{path}' ({first}); the file is empty, truncated or not a PyTorch checkpoint: re-save it with torch.save"
        ) from e


def extract_state_dict(obj: Any, path: Path | str = "<memory>") -> dict[str, torch.Tensor]:
    """Find the state_dict in a loaded checkpoint (plain, or nested under ``state_dict``/``model``/...).

    Wrapper prefixes (``module.``) are kept here; :func:`load_state_dict_strict` strips them when needed.

    Raises:
        ModelLoadError: when no mapping of tensors is found.
    """
    if isinstance(obj, nn.Module):
        return dict(obj.state_dict())
    sd: Mapping[str, Any] | None = obj if _is_tensor_mapping(obj) else None
    if sd is None and isinstance(obj, Mapping):
        for key in _WRAPPER_KEYS:
            inner = obj.get(key)
            if isinstance(inner, nn.Module):
                return dict(inner.state_dict())
            if _is_tensor_mapping(inner):
                sd = inner
                break
    if sd is None:
        kind = (
            f"a dict with keys {sorted(map(str, obj))[:6]}"
            if isinstance(obj, Mapping)
            else type(obj).__name__
        )
        raise ModelLoadError(
            f"'{path}' holds {kind}, not a state_dict; save model.state_dict() (or a dict with a 'state_dict' key)"
        )
    return {str(k): v for k, v in sd.items()}


def _match_prefix(own: Mapping[str, object], sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Strip a wrapper prefix shared by every key when that makes the keys fit ``own`` better."""
    best = dict(sd)
    best_hits = sum(k in own for k in best)
    for prefix in _PREFIXES:
        if best and all(k.startswith(prefix) for k in best):
            cand = {k[len(prefix) :]: v for k, v in best.items()}
            hits = sum(k in own for k in cand)
            if hits > best_hits:
                best, best_hits = cand, hits
    return best


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state_dict from a local file safely (``weights_only=True``).

    Raises:
        ModelLoadError: missing/corrupt file, or a file that holds pickled classes rather than tensors.
    """
    p = check_file(path, "weights")
    if p.suffix.lower() == ".onnx":
        raise ModelLoadError(f"'{p}' is an ONNX file, not a state_dict: load it as a model with file:{p} (evaluate, "
                             "analyze), or pass the model.pt written beside it")
    if is_torchscript(p):
        raise ModelLoadError(f"'{p}' is a TorchScript archive, not a state_dict: save model.state_dict() from the eager "
                             f"model, or evaluate the archive itself with file:{p}")
    try:
        obj = torch_load(p, weights_only=True)
    except pickle.UnpicklingError:
        raise ModelLoadError(
            f"'{p}' holds pickled Python objects, not only tensors; load it as a model with file:{p} "
            "or save model.state_dict() instead"
        ) from None
    return extract_state_dict(obj, p)


def _preview(keys: list[str], n: int = 3) -> str:
    more = f" (+{len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(repr(k) for k in keys[:n]) + more


def load_state_dict_strict(
    model: nn.Module, state_dict: Mapping[str, torch.Tensor], origin: str | Path
) -> None:
    """Load ``state_dict`` into ``model`` requiring identical keys and shapes.

    A prefix on every key (``module.`` from DataParallel, ``_orig_mod.`` from torch.compile) is
    stripped when that makes the keys fit.

    Raises:
        ModelLoadError: naming the first missing/unexpected keys or the first shape mismatch.
    """
    own = model.state_dict()
    state_dict = _match_prefix(own, state_dict)
    # BatchNorm's num_batches_tracked is bookkeeping; old checkpoints lack it.
    optional = {k for k in own if k.endswith("num_batches_tracked")}
    missing = [k for k in own if k not in state_dict and k not in optional]
    unexpected = [k for k in state_dict if k not in own]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys {_preview(missing)}")
        if unexpected:
            parts.append(f"unexpected keys {_preview(unexpected)}")
        raise ModelLoadError(
            f"weights '{origin}' do not fit {type(model).__name__}: {'; '.join(parts)}; "
            "pass the architecture the checkpoint was trained with (--arch / the right model name)"
        )
    for k, v in state_dict.items():
        if tuple(own[k].shape) != tuple(v.shape):
            raise ModelLoadError(
                f"weights '{origin}' do not fit {type(model).__name__}: '{k}' has shape {tuple(v.shape)} "
                f"in the file but {tuple(own[k].shape)} in the model; load it into the architecture it was trained with (--arch, --scale)"
            )
    full = dict(state_dict)
    for k in optional:
        full.setdefault(k, own[k])
    model.load_state_dict(full, strict=True)
    log.debug("loaded %d tensors from %s into %s", len(state_dict), origin, type(model).__name__)


def checkpoint_classes(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> tuple[int, str] | None:
    """``(K, layer)`` when ``state_dict`` differs from ``model`` only in the rows of one layer, all K: a
    classifier fine-tuned to K classes (ResNet's ``fc``). None when anything else differs."""
    own = model.state_dict()
    sd = _match_prefix(own, state_dict)
    optional = {k for k in own if k.endswith("num_batches_tracked")}
    if set(own) - optional != set(sd) - optional:
        return None
    diff = [k for k in sd if k in own and tuple(own[k].shape) != tuple(sd[k].shape)]
    layers = {k.rpartition(".")[0] for k in diff}
    rows = {sd[k].shape[0] if sd[k].dim() else None for k in diff}
    if len(layers) != 1 or len(rows) != 1 or None in rows or any(sd[k].shape[1:] != own[k].shape[1:] for k in diff):
        return None
    return int(rows.pop()), layers.pop()  # type: ignore[arg-type]


def load_all_but(model: nn.Module, state_dict: Mapping[str, torch.Tensor], layer: str, origin: str | Path) -> None:
    """Load ``state_dict`` strictly into ``model``, except the tensors of ``layer``, which keep the model's own
    (a classifier built for other classes than the checkpoint's: see :func:`checkpoint_classes`)."""
    own = model.state_dict()
    kept = {k: v for k, v in own.items() if k.rpartition(".")[0] == layer}
    rest = {k: v for k, v in _match_prefix(own, state_dict).items() if k.rpartition(".")[0] != layer}
    load_state_dict_strict(model, rest | kept, origin)


def load_weights_file(model: nn.Module, path: str | Path) -> None:
    """Read ``path`` (any common checkpoint layout) and load it strictly into ``model``."""
    load_state_dict_strict(model, read_state_dict(path), path)
