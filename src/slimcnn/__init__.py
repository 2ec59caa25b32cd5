"""slimcnn: make trained CNNs small and fast for embedded and edge hardware, with measured proof."""

from slimcnn.version import __version__

__all__ = ["__version__"]
