"""Where local data and weights live. Nothing is ever downloaded."""

from __future__ import annotations

import os
from pathlib import Path


def data_root() -> Path | None:
    """``$SLIMCNN_DATA``, else ``../shared/data`` relative to the working directory or this checkout.

    Returns ``None`` when neither exists (a user's machine without the benchmark data).
    """
    env = os.environ.get("SLIMCNN_DATA")
    if env:
        p = Path(env).expanduser()
        return p if p.is_dir() else None
    here = Path(__file__).resolve()
    for cand in (Path.cwd() / ".." / "shared" / "data", here.parents[2].parent / "shared" / "data"):
        if cand.is_dir():
            return cand.resolve()
    return None


def shared_path(*parts: str) -> Path | None:
    """A path under :func:`data_root`, or ``None`` when it does not exist."""
    root = data_root()
    if root is None:
        return None
    p = root.joinpath(*parts)
    return p if p.exists() else None
