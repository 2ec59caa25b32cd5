"""Typed errors. User mistakes raise a subclass of :class:`SlimcnnError`; the CLI turns them into
one line on stderr and exit code 2."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class SlimcnnError(Exception):
    """Base of every error that is the user's to fix (bad input, missing file, unknown name)."""


class ConfigError(SlimcnnError, ValueError):
    """An option or combination of options is invalid."""


class UnknownNameError(SlimcnnError, KeyError):
    """A registry lookup failed; the message lists close matches and the valid names."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class DataError(SlimcnnError, ValueError):
    """A dataset or file is missing, unreadable or in an unexpected layout."""


class ModelLoadError(SlimcnnError, ValueError):
    """A model source, checkpoint or weights file could not be loaded."""


class MissingDependencyError(SlimcnnError, ImportError):
    """An optional dependency is not installed; the message names the extra to install."""


class UnsupportedLayerError(SlimcnnError, TypeError):
    """A transform met a layer or op it cannot handle correctly."""


class BudgetError(SlimcnnError, ValueError):
    """A budget cannot be met; carries the closest point reached."""


def unknown_name(kind: str, name: str, valid: Iterable[str]) -> UnknownNameError:
    """Build the standard "Unknown X 'y'. Did you mean [...]? Available: ..." error."""
    names = sorted(valid)
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
    hint = f" Did you mean {close}?" if close else ""
    return UnknownNameError(f"Unknown {kind} '{name}'.{hint} Available: {', '.join(names)}")


def require(module: str, extra: str) -> object:
    """Import an optional dependency or raise an actionable :class:`MissingDependencyError`."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingDependencyError(
            f"'{module}' is not installed; run: pip install 'slimcnn[{extra}]'"
        ) from e
