"""``compress``: one run from (model, data, quality target, hardware targets) to the best combined model.

Stages are searches (channel pruning greedy/CPO/iterative, kernel, low-rank, k-means) run in order, each
given the budget that is left; the drop is always measured against the original. ``slimcnn.compress`` is
also callable: ``slimcnn.compress(model, task, budget, recipe="prune,kmeans")``.
"""

from __future__ import annotations

import sys
import types
from typing import Any

from slimcnn.compress._outputs import write_compress_run
from slimcnn.compress._recipe import MOVES, StageSpec, assign_targets, auto_recipe, parse_recipe
from slimcnn.compress._run import (
    CompressResult,
    CompressSpec,
    StageResult,
    compress,
)
from slimcnn.search.families import kmeans_spec, pack

__all__ = [
    "MOVES",
    "CompressResult",
    "CompressSpec",
    "StageResult",
    "StageSpec",
    "assign_targets",
    "auto_recipe",
    "compress",
    "kmeans_spec",
    "pack",
    "parse_recipe",
    "write_compress_run",
]


class _CallableModule(types.ModuleType):
    """Lets ``slimcnn.compress(...)`` call :func:`compress` while ``slimcnn.compress`` stays the package."""

    def __call__(self, *args: Any, **kwargs: Any) -> CompressResult:
        return compress(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
