"""The run model every command shares: a ``Plan`` of transform steps replayed by ``apply_plan``, a
``RunResult`` written by ``write_run`` into a transactional ``RunDir``, and the ``Manifest`` that decides
when resumable state may be reused. See DESIGN.md §4b and the README's "Runs" section.
"""

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
