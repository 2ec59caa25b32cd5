"""Training: the shared fine-tune loop (:func:`fit_`, DDP under torchrun, mixed precision), its learning-rate schedules, recovery by
distillation (:func:`kd_logits_loss`, :func:`teacher_on`) and fine-tuning that keeps each
transform's promise (:func:`keep_promises`)."""

from __future__ import annotations

from slimcnn.train._distill import (
    OUTPUT_LOSSES,
    RECOVERIES,
    FeatureTap,
    Recovery,
    check_recovery,
    check_weight,
    feature_distill_loss,
    kd_logits_loss,
    output_distill_loss,
    teacher_on,
)
from slimcnn.train._distributed import (
    all_gather_objects,
    alone,
    is_main,
    join_from_env,
    local_part,
    synced_batchnorm,
    world,
)
from slimcnn.train._loop import AMP_DTYPES, OPTIMIZERS, TrainingDivergedError, autocast, fit_, to_device
from slimcnn.train._promises import (
    PROMISE_KINDS,
    BrokenPromiseError,
    KeepZeros,
    Promise,
    SharedWeight,
    check_promises,
    codebook_of,
    hold_weights,
    keep_promises,
)
from slimcnn.train._schedule import SCHEDULES, lr_at

__all__ = [
    "AMP_DTYPES",
    "OPTIMIZERS",
    "OUTPUT_LOSSES",
    "PROMISE_KINDS",
    "RECOVERIES",
    "SCHEDULES",
    "BrokenPromiseError",
    "FeatureTap",
    "KeepZeros",
    "Promise",
    "Recovery",
    "SharedWeight",
    "TrainingDivergedError",
    "all_gather_objects",
    "alone",
    "autocast",
    "check_promises",
    "check_recovery",
    "check_weight",
    "codebook_of",
    "feature_distill_loss",
    "fit_",
    "hold_weights",
    "is_main",
    "join_from_env",
    "keep_promises",
    "kd_logits_loss",
    "local_part",
    "lr_at",
    "output_distill_loss",
    "synced_batchnorm",
    "teacher_on",
    "to_device",
    "world",
]
