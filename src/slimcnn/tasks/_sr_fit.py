"""How an SR model that does not say so is fed, measured by :func:`fit_sr` (split out to keep sr.py small)."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from slimcnn.errors import ConfigError
from slimcnn.models._zoo import ModelInfo
from slimcnn.tasks import settled_guess

__all__ = ["DEFAULT_SCALE", "SR_PROBE_SIDE", "fit_sr"]

DEFAULT_SCALE = 2
"""The factor of a model that does not say one (an ``upsampled`` net works at any)."""


SR_PROBE_SIDE = 32
"""Side of the zero image :func:`fit_sr` runs an SR model on (divisible by every stride up to 32)."""


def fit_sr(model: Any, info: ModelInfo) -> tuple[ModelInfo, str | None]:
    """``info`` with how an SR model that does not say it is fed, measured from one forward pass.

    A model that keeps its input's size takes the bicubic-upscaled image (``sr_input="upsampled"``, at
    ``info.scale`` or the task's x2); one whose output is ``k`` times its input takes the low-resolution
    image at ``x k``. Before, a ``python:`` x3 upscaler was fed a x2 bicubic image and scored on a crop of
    its 3x-too-large output (11 dB after training) without a word.

    Returns:
        The info to use and a line saying what was measured, or ``(info, None)`` when the model says it
        already or the forward pass fails (the task's own first forward then says why, in one line).

    Raises:
        ConfigError: the model's factor contradicts the declared ``info.scale`` (the user's ``--scale``).
    """
    if info.sr_input is not None:
        return info, None
    side = SR_PROBE_SIDE
    was_training = model.training
    try:
        with torch.no_grad():
            out = model.eval()(torch.zeros(1, 1, side, side))
    except (RuntimeError, ValueError, TypeError, IndexError):
        return info, None
    finally:
        model.train(was_training)
    if not isinstance(out, torch.Tensor) or out.dim() != 4:
        return info, None
    h, w = int(out.shape[-2]), int(out.shape[-1])
    factor = h // side
    if h != w or h % side or factor < 1:
        return info, None
    shape = dict(input_shape=(1, 1, side, side), **settled_guess(info)) if info.input_guessed else {}
    if factor == 1:
        scale = info.scale or DEFAULT_SCALE
        told = "" if info.scale else " (the default; pass --scale N for another)"
        return (dataclasses.replace(info, sr_input="upsampled", scale=scale, **shape),
                f"sr: the model keeps a {side}x{side} input's size, so it is fed the bicubic-upscaled image, "
                f"x{scale}{told}")
    if info.scale not in (None, factor):
        raise ConfigError(f"the model upscales x{factor} (a {side}x{side} input gives {h}x{w}), not the --scale "
                          f"{info.scale} given; pass --scale {factor} or leave it out")
    return (dataclasses.replace(info, sr_input="lr", scale=factor, **shape),
            f"sr: the model upscales a {side}x{side} input to {h}x{w}, so it is fed the low-resolution image, x{factor}")
