"""Training: the shared fine-tune loop (:func:`fit_`) and its learning-rate schedules."""

from __future__ import annotations

from slimcnn.train._loop import OPTIMIZERS, TrainingDivergedError, fit_, to_device
from slimcnn.train._schedule import SCHEDULES, lr_at

__all__ = ["OPTIMIZERS", "SCHEDULES", "TrainingDivergedError", "fit_", "lr_at", "to_device"]
