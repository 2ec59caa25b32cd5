"""Published per-layer settings expressed as keep-counts for :func:`~slimcnn.prune.prune_model_`."""

from __future__ import annotations

import re

from torch import nn

from slimcnn.errors import ConfigError


def parse_sparsity(text: str) -> list[float]:
    """Expand CHIP's sparsity string, e.g. ``[0.]+[0.15]*2+[0.4]*27`` -> 30 floats."""
    out: list[float] = []
    for part in text.replace(" ", "").split("+"):
        m = re.fullmatch(r"\[([0-9.]+)\](?:\*(\d+))?", part)
        if not m:
            raise ConfigError(f"cannot parse sparsity term '{part}' (expected like [0.4]*27)")
        out += [float(m.group(1))] * int(m.group(2) or 1)
    return out


def chip_cifar_resnet_keep(model: nn.Module, sparsity: list[float] | str) -> dict[str, int]:
    """Keep-counts for a slimcnn CIFAR ResNet (``slimcnn:resnet56``/``resnet110``) from CHIP's vector.

    CHIP semantics (PAPERS.md §5.4): ``sp[0]`` stem, ``sp[1]``/``sp[2]`` every block output of stages
    1/2 (stage 3 is never pruned), ``sp[3:]`` each block's inner width ``int(planes * (1 - r))``. CHIP
    selects each block's output channels on its own, so the model's shortcuts must be decoupled first
    (:func:`slimcnn.models.cifar.decouple_shortcuts_`, function-preserving); the result is then exact
    with respect to the original with the removed channels zeroed.

    Raises:
        ConfigError: wrong vector length, or the identity shortcuts are still plain ``nn.Identity``.
    """
    sp = parse_sparsity(sparsity) if isinstance(sparsity, str) else list(sparsity)
    blocks = [n for n, m in model.named_modules() if n.startswith("layer") and n.count(".") == 1]
    if len(sp) != 3 + len(blocks):
        raise ConfigError(f"sparsity has {len(sp)} values; this model needs 3 + {len(blocks)} (one per block)")
    mods = dict(model.named_modules())
    if any(isinstance(mods[f"{b}.shortcut"], nn.Identity) for b in blocks):
        raise ConfigError(
            "CHIP prunes every block output on its own: call slimcnn.models.cifar.decouple_shortcuts_(model) first"
        )
    keep: dict[str, int] = {"conv1": int(16 * (1 - sp[0]))}
    for r, b in zip(sp[3:], blocks, strict=False):
        planes = mods[f"{b}.conv1"].out_channels
        keep[f"{b}.conv1"] = int(planes * (1 - r))
        stage = {16: 1, 32: 2}.get(planes)
        if stage is not None:
            keep[f"{b}.conv2"] = int(planes * (1 - sp[stage]))
    return keep
