"""Atomic file writes and JSON helpers: outputs never half-written, inputs never overwritten."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if hasattr(obj, "item") and callable(obj.item):  # numpy / torch scalars
        return _jsonable(obj.item())
    return obj


def to_json(obj: Any) -> str:
    """Serialise dataclasses, tuples, paths and numpy/torch scalars to stable, diffable JSON."""
    return json.dumps(_jsonable(obj), indent=2, sort_keys=False)


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` then rename onto ``path`` so readers never see a partial file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp makes 0600; outputs are ordinary files
    try:
        write(tmp_path)
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()
    return path


def write_text(path: str | Path, text: str) -> Path:
    """Atomically write ``text``."""
    return atomic_write(path, lambda p: p.write_text(text))


def write_json(path: str | Path, obj: Any) -> Path:
    """Atomically write ``obj`` as JSON (dataclasses allowed)."""
    return write_text(path, to_json(obj) + "\n")


def save_torch(path: str | Path, obj: Any) -> Path:
    """Atomically ``torch.save`` ``obj``."""
    import torch

    return atomic_write(path, lambda p: torch.save(obj, p))


def open_image(fp: Any) -> Any:
    """``PIL.Image.open(fp)`` as PIL defines it, also after another library replaced it.

    ultralytics replaces ``Image.open`` on import with a version that, for a file PIL cannot identify, runs its
    requirements check for a HEIF plugin: two log lines ("attempting AutoUpdate...", "AutoUpdate skipped
    (offline)") before our one-line error, and a pip install where the network is reachable.
    """
    from PIL import Image

    pil_open = Image.open
    if getattr(pil_open, "__module__", None) != "PIL.Image":
        pil_open = getattr(sys.modules.get("ultralytics.utils.patches"), "_image_open", None) or pil_open
    return pil_open(fp)


UNREADABLE_IMAGE: tuple[type[Exception], ...] = (OSError, ImportError)
"""What opening a file that is not a readable image raises: PIL's UnidentifiedImageError is an OSError, and an
ImportError comes from a format plugin another library's patched ``Image.open`` tries."""

UNREADABLE_HINT = "remove it from the data, or replace it with a readable copy"


def unreadable_reason(e: BaseException) -> str:
    """Why an image could not be read, for a person: PIL's "cannot identify image file <_io.BytesIO object at
    0x7f...>" becomes "not an image file PIL can read", and so does the ImportError of the plugin ultralytics'
    patched ``Image.open`` then tries; other messages keep their first line."""
    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    if (type(e).__name__ == "UnidentifiedImageError" or text.startswith("cannot identify image file")
            or isinstance(e, ImportError)):
        return "not an image file PIL can read"
    return text
