"""Modules imported from a user's ``.py`` file (``python:nets.py:build``), and re-importing them to unpickle.

A class defined in such a file (or in a module beside it that it imports) pickles under a module name that
is not importable in another process. Every file slimcnn writes with pickled modules (``model.pt``'s
sidecar, a ``.slim`` architecture record) also lists those modules' files, and a load imports them first.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from torch import nn

from slimcnn.errors import ModelLoadError

PREFIX = "_slimcnn_user_"

_FOLDERS: set[str] = set()
"""The folders of the user files imported in this process (each put on ``sys.path``)."""


def _on_path(folder: Path) -> None:
    _FOLDERS.add(str(folder))
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))


def import_file(path: Path) -> ModuleType:
    """Import ``path`` under a name fixed by its absolute path (the same in every process).

    Its folder goes on ``sys.path`` (as ``python nets.py`` would put it), so it can import the modules beside it
    and their classes unpickle too."""
    path = path.resolve()
    name = f"{PREFIX}{path.stem}_{hashlib.sha1(str(path).encode()).hexdigest()[:8]}"
    if name in sys.modules:
        return sys.modules[name]
    _on_path(path.parent)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ModelLoadError(f"cannot import '{path}' as a python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException as e:
        del sys.modules[name]
        if isinstance(e, Exception):  # the file's own error (syntax, a missing package): one line, not a traceback
            where = f" (line {e.lineno})" if isinstance(e, SyntaxError) and e.lineno else ""
            text = str(e.msg if isinstance(e, SyntaxError) else e).strip()  # a SyntaxError's str repeats the line
            first = text.splitlines()[0] if text else ""
            raise ModelLoadError(f"importing {path} failed{where}: {type(e).__name__}"
                                 f"{': ' + first if first else ''} (--debug shows the traceback)") from e
        raise
    return module


def _root(name: str, file: Path) -> Path:
    """The folder that must be on ``sys.path`` for ``import name`` to find ``file``."""
    root = file.parent.parent if file.name == "__init__.py" else file.parent
    for _ in name.split(".")[1:]:
        root = root.parent
    return root


def user_module_files(model: nn.Module) -> dict[str, str]:
    """``{module name: .py file}`` for the classes of ``model`` that came from a user's file or a module beside it."""
    found = {}
    for name in sorted({type(m).__module__ for m in model.modules()}):
        file = getattr(sys.modules.get(name), "__file__", None)
        if file is None:
            continue
        if name.startswith(PREFIX) or str(_root(name, Path(file)).resolve()) in _FOLDERS:
            found[name] = str(Path(file).resolve())
    return found


def import_user_modules(files: dict[str, str], what: str | Path) -> None:
    """Import the files ``what`` was pickled with (see :func:`user_module_files`) before unpickling it."""
    for name, file in files.items():
        if name in sys.modules:
            continue
        if not Path(file).is_file():
            raise ModelLoadError(f"'{what}' holds classes from {file}, which is not there any more; put the file "
                                 "back where it was (the model's layers are defined in it)")
        if name.startswith(PREFIX):
            import_file(Path(file))
        else:
            _on_path(_root(name, Path(file)))
            importlib.import_module(name)
