"""slimcnn: make trained CNNs small and fast for embedded and edge hardware, with measured proof."""

from __future__ import annotations

from typing import Any

from slimcnn.version import __version__

__all__ = ["__version__", "load_packed"]


def __getattr__(name: str) -> Any:
    # Heavy rooms load on first use: ``slimcnn.load_packed`` without importing torch at ``import slimcnn``.
    if name == "load_packed":
        from slimcnn.quantize import load_packed

        return load_packed
    raise AttributeError(f"module 'slimcnn' has no attribute {name!r}")
