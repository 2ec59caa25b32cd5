"""Training recipes for the SR model families (patch size, optimiser, learning rate, clipping).

A recipe is data: :class:`SRRecipe` in the :data:`SR_RECIPES` registry, picked by
:func:`recipe_for` from the model's family and whether it is already trained.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from torch import nn

from slimcnn.models._zoo import ModelInfo
from slimcnn.registry import Registry

__all__ = ["SR_RECIPES", "SRRecipe", "paper_init_", "recipe_for"]


@dataclass(frozen=True)
class SRRecipe:
    """How to train one SR model family (patches, optimiser, clipping)."""

    patch: int
    """Input patch side: bicubic-image pixels for ``upsampled`` nets, LR pixels for ``lr`` nets."""
    batch_size: int
    optimizer: Literal["sgd", "adam", "adamw"]
    lr: float
    momentum: float = 0.9
    weight_decay: float = 0.0
    grad_clip: float | None = None
    """Global gradient-norm clip, or None."""
    schedule: Literal["cosine", "constant", "step"] = "cosine"
    warmup_steps: int = 0
    min_patch_std: float = 0.0
    """Redraw training crops whose HR target is flatter than this (std on [0, 1]); 0 keeps all."""
    note: str = ""


SR_RECIPES: Registry[SRRecipe] = Registry("SR training recipe")
SR_RECIPES.add(
    "vdsr",
    SRRecipe(
        patch=41,
        batch_size=16,
        optimizer="adam",
        lr=1e-4,
        grad_clip=0.4,
        warmup_steps=10,
        note="Fine-tuning a trained/compressed VDSR. The paper trains from scratch with SGD m=0.9, lr 0.1 and "
        "adjustable clipping to [-0.4/lr, 0.4/lr] (recipe 'vdsr_scratch'); at fine-tuning time that lr "
        "destroys the weights, so we use Adam 1e-4 (cosine) with global-norm clip 0.4.",
    ),
)
SR_RECIPES.add(
    "vdsr_scratch",
    SRRecipe(
        patch=41,
        batch_size=64,
        optimizer="sgd",
        lr=0.1,
        weight_decay=1e-4,
        grad_clip=0.4 / 0.1,
        schedule="step",
        note="VDSR paper: 41x41 patches, batch 64, SGD m=0.9, wd 1e-4, lr 0.1 /10 steps, "
        "gradient norm clipped to theta/lr with theta=0.4.",
    ),
)
SR_RECIPES.add(
    "srcnn",
    SRRecipe(
        patch=33,
        batch_size=16,
        optimizer="adam",
        lr=1e-4,
        note="SRCNN paper: 33x33 bicubic sub-images, MSE; Adam 1e-4 instead of the paper's SGD 1e-4/1e-5.",
    ),
)
SR_RECIPES.add(
    "fsrcnn",
    SRRecipe(
        patch=16,
        batch_size=16,
        optimizer="adam",
        lr=1e-4,
        warmup_steps=20,
        note="Fine-tuning a trained FSRCNN (e.g. after pruning): 16 px LR patches, Adam 1e-4 (cosine). "
        "Adam 1e-3 costs a trained x3 model ~4.8 dB on Set5 within 10 steps; the paper trains with SGD.",
    ),
)
SR_RECIPES.add(
    "fsrcnn_scratch",
    SRRecipe(
        patch=16,
        batch_size=16,
        optimizer="adam",
        lr=5e-3,
        warmup_steps=50,
        note="Training an untrained FSRCNN quickly on CPU (slimcnn demo): Adam 5e-3 with warm-up and cosine "
        "decay; 1e-3 is too slow to pass bicubic within ~1000 steps.",
    ),
)
SR_RECIPES.add(
    "espcn",
    SRRecipe(
        patch=17,
        batch_size=16,
        optimizer="adam",
        lr=1e-3,
        warmup_steps=20,
        note="ESPCN paper: 17x17 LR sub-images (x3), MSE; Adam 1e-3 (cosine).",
    ),
)
SR_RECIPES.add(
    "espcn_scratch",
    replace(
        SR_RECIPES.get("espcn"), lr=3e-3, warmup_steps=50, note="Untrained ESPCN: Adam 3e-3, warm-up, cosine."
    ),
)
SR_RECIPES.add(
    "tiny_sr",
    replace(
        SR_RECIPES.get("fsrcnn_scratch"),
        lr=3e-3,
        note="The pixel-shuffle test net (always untrained): Adam 3e-3, cosine.",
    ),
)


def recipe_for(model: nn.Module, info: ModelInfo | None, recipe: str | None = None) -> tuple[str, SRRecipe]:
    """Pick a training recipe from :data:`SR_RECIPES`.

    ``recipe`` wins when given. Otherwise the family comes from the model's class name (``VDSR``,
    ``FSRCNN``, ``SRCNN``, ``ESPCN``, ``TinySR``), else from ``info.sr_input`` (``"upsampled"`` ->
    ``srcnn``, otherwise ``fsrcnn``). When ``info.pretrained`` is False and a ``<family>_scratch``
    recipe exists, that one is used (training from scratch wants a larger learning rate than
    fine-tuning trained weights).
    """
    if recipe is not None:
        return recipe, SR_RECIPES.get(recipe)
    cls = type(model).__name__.lower()
    family = next((n for n in ("fsrcnn", "srcnn", "vdsr", "espcn") if n in cls), None)
    if family is None:
        family = "tiny_sr" if "tinysr" in cls or "tiny_sr" in cls else None
    if family is None:
        family = "srcnn" if info is not None and info.sr_input == "upsampled" else "fsrcnn"
    if info is not None and not info.pretrained and f"{family}_scratch" in SR_RECIPES:
        family = f"{family}_scratch"
    return family, SR_RECIPES.get(family)


def paper_init_(model: nn.Module) -> nn.Module:
    """Re-initialise an SR net for training from scratch as the SRCNN/FSRCNN papers do (in place).

    Convolutions get He-normal weights (``std = sqrt(2 / (out_channels * kh * kw))``), transposed
    convolutions (FSRCNN's deconvolution) ``N(0, 0.001)``, biases zero. PyTorch's default init
    makes FSRCNN's 9x9 deconvolution output large noise; from it, 1,000 CPU steps end about 1 dB
    *below* bicubic, while from this init they end above it (see ``docs/readme/sr.md``). Never call
    it on a trained or compressed model.

    Returns:
        ``model``.
    """
    for mod in model.modules():
        if isinstance(mod, nn.ConvTranspose2d):
            nn.init.normal_(mod.weight, 0.0, 1e-3)
        elif isinstance(mod, nn.Conv2d):
            fan_out = mod.out_channels * mod.kernel_size[0] * mod.kernel_size[1]
            nn.init.normal_(mod.weight, 0.0, (2.0 / fan_out) ** 0.5)
        else:
            continue
        if mod.bias is not None:
            nn.init.zeros_(mod.bias)
    return model
