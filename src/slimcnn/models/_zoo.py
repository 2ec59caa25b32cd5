"""The built-in zoo's registry and the model metadata every loader returns."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from torch import nn

from slimcnn.registry import Registry

TaskKind = Literal["classification", "sr", "detection"]


GUESS_NOTE = "input size not declared"
"""How the note on a model that does not say its input size starts (dropped once it is settled)."""


@dataclass(frozen=True)
class ModelInfo:
    """What a task needs to know to feed and judge a model, carried with every loaded model."""

    task: TaskKind | None = None
    """The task the model was built for, if known."""
    input_shape: tuple[int, ...] = (1, 3, 224, 224)
    """Default example input (batch 1) for analysis, export and latency; a classifier's data is decoded at it."""
    input_guessed: bool = False
    """True when the source does not say its input size (``python:``, ``file:`` without a sidecar): a
    classification task then takes the size its data is stored at (see :func:`slimcnn.tasks.fit_input`)."""
    mean: tuple[float, ...] | None = None
    """Per-channel normalisation applied to [0, 1] inputs (classification), or None."""
    std: tuple[float, ...] | None = None
    scale: int | None = None
    """Super-resolution upscaling factor."""
    sr_input: Literal["upsampled", "lr"] | None = None
    """SR nets: 'upsampled' take the bicubic-upscaled Y (SRCNN, VDSR); 'lr' take the LR Y (FSRCNN, ESPCN)."""
    num_classes: int | None = None
    classes: tuple[str, ...] | None = None
    """Class names in output order, when known (the CIFAR-10 zoo models); evaluation refuses data whose
    class folders are these names in another order or a subset."""
    pretrained: bool = False
    """True when trained weights were loaded; otherwise every command says the model is untrained."""
    weights: str | None = None
    """Path of the weights that were loaded."""
    notes: tuple[str, ...] = ()


@dataclass
class LoadedModel:
    """A model, the source string it came from and its metadata."""

    model: nn.Module
    source: str
    info: ModelInfo = field(default_factory=ModelInfo)


@dataclass(frozen=True)
class ZooEntry:
    """A built-in model: a builder and the metadata that goes with it.

    ``build(**options)`` returns an untrained module; ``weights`` is a path relative to
    ``$SLIMCNN_DATA/weights`` (or None) and ``load_weights(model, path)`` loads it strictly.
    """

    name: str
    build: Callable[..., nn.Module]
    info: ModelInfo
    weights: Callable[..., str | None] | None = None
    """Maps the build options (e.g. scale) to a weights path relative to ``$SLIMCNN_DATA/weights``."""
    load_weights: Callable[[nn.Module, str], None] | None = None
    description: str = ""


ZOO: Registry[ZooEntry] = Registry("slimcnn zoo model")


def register_zoo_model(entry: ZooEntry) -> ZooEntry:
    """Add a model to the built-in zoo (``slimcnn:NAME``)."""
    ZOO.add(entry.name, entry)
    return entry
