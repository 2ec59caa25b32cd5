"""Modules imported from a user's ``.py`` file (``python:nets.py:build``), and re-importing them to unpickle.

A class defined in such a file pickles under the module name it was imported as. That name is not
importable in another process, so every file slimcnn writes with pickled modules (``model.pt``'s
sidecar, a ``.slim`` architecture record) also lists the files, and a load imports them first.
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from torch import nn

from slimcnn.errors import ModelLoadError

PREFIX = "_slimcnn_user_"


def import_file(path: Path) -> ModuleType:
    """Import ``path`` under a name fixed by its absolute path (the same in every process)."""
    path = path.resolve()
    name = f"{PREFIX}{path.stem}_{hashlib.sha1(str(path).encode()).hexdigest()[:8]}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ModelLoadError(f"cannot import '{path}' as a python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def user_module_files(model: nn.Module) -> dict[str, str]:
    """``{module name: .py file}`` for the classes of ``model`` that came from a user's file."""
    names = {type(m).__module__ for m in model.modules()}
    return {n: str(sys.modules[n].__file__) for n in sorted(names)
            if n.startswith(PREFIX) and n in sys.modules and getattr(sys.modules[n], "__file__", None)}


def import_user_modules(files: dict[str, str], what: str | Path) -> None:
    """Import the files ``what`` was pickled with (see :func:`user_module_files`) before unpickling it."""
    for name, file in files.items():
        if name in sys.modules:
            continue
        if not Path(file).is_file():
            raise ModelLoadError(f"'{what}' holds classes from {file}, which is not there any more; put the file "
                                 "back where it was (the model's layers are defined in it)")
        import_file(Path(file))
