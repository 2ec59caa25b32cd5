"""The run model every command shares: a ``Plan`` of transform steps replayed by ``apply_plan``, a
``RunResult`` written by ``write_run`` into a transactional ``RunDir``, and the ``Manifest`` that decides
when resumable state may be reused. See DESIGN.md §4b and the README's "Runs" section.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from slimcnn.run._manifest import Manifest, data_fingerprint, model_fingerprint, sha256_file
    from slimcnn.run._outdir import RunDir, check_out_path
    from slimcnn.run._plan import TRANSFORMS, ApplyContext, Plan, PlanStep, apply_plan
    from slimcnn.run._result import (
        RESULT_SCHEMA,
        Artifact,
        Measured,
        RunResult,
        environment,
        read_result,
        write_run,
    )

# Loaded on first use: the CLI imports ``slimcnn.run._outdir`` before any command, and ``_plan``/``_result`` bring
# torch (seconds), which ``slimcnn --help`` or a mistyped option should not wait for.
_HOME = {
    **dict.fromkeys(("Manifest", "data_fingerprint", "model_fingerprint", "sha256_file"), "_manifest"),
    **dict.fromkeys(("RunDir", "check_out_path"), "_outdir"),
    **dict.fromkeys(("TRANSFORMS", "ApplyContext", "Plan", "PlanStep", "apply_plan"), "_plan"),
    **dict.fromkeys(("RESULT_SCHEMA", "Artifact", "Measured", "RunResult", "environment", "read_result", "write_run"),
                    "_result"),
}


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module 'slimcnn.run' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"slimcnn.run.{_HOME[name]}"), name)
    globals()[name] = value
    return value


__all__ = [
    "RESULT_SCHEMA",
    "TRANSFORMS",
    "ApplyContext",
    "Artifact",
    "Manifest",
    "Measured",
    "Plan",
    "PlanStep",
    "RunDir",
    "RunResult",
    "apply_plan",
    "check_out_path",
    "data_fingerprint",
    "environment",
    "model_fingerprint",
    "read_result",
    "sha256_file",
    "write_run",
]
