"""True k×k-kernel granularity: remove single 2-D kernels ``W[o, i, :, :]`` of ``Conv2d`` layers.

Two modes (see ``docs/readme/kernel.md``):

* **free pattern** — :func:`kernel_masks` ranks the kernels of each layer and
  :func:`apply_kernel_masks_` zeroes the removed ones; :func:`~slimcnn.prune._kernel_format.save_kernel_compact`
  stores only the kept kernels plus an index. Input channels that lose every kernel in every consumer
  are found by :func:`removable_channels` and dropped physically by :func:`drop_removable_channels_`.
* **grouped pattern** — :func:`group_kernels_` keeps block-diagonal connectivity: output and input
  channels are assigned to ``G`` equal groups (maximising the kept importance), the neighbours'
  weights are permuted so no runtime permutation op is needed, and the layer becomes
  ``nn.Conv2d(..., groups=G)`` — real MAC and latency savings.

The criterion ``sparsity`` is Liu et al.'s filter sparsity
([arXiv:1705.10748](https://arxiv.org/abs/1705.10748), TCAS-I 2019) applied per 2-D kernel: the
fraction of the kernel's weights with ``|w|`` below the layer's mean ``|w|``; sparsest kernels go
first. Pruning single kernels is our design choice (PAPERS.md §1.2), not a reproduction.
"""

from __future__ import annotations

import base64
import logging
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from slimcnn.errors import ConfigError, UnsupportedLayerError, unknown_name
from slimcnn.prune._kernel_format import KernelFileStats, load_kernel_compact, save_kernel_compact

if TYPE_CHECKING:  # re-exported lazily by __getattr__ below (that module imports this one)
    from slimcnn.prune._kernel_groups import GroupedLayer, GroupedReport, group_kernels_, plan_kernel_groups

__all__ = [
    "KERNEL_CRITERIA",
    "GroupedLayer",
    "KernelFileStats",
    "GroupedReport",
    "KernelCriterion",
    "apply_kernel_masks_",
    "default_kernel_layers",
    "drop_removable_channels_",
    "group_kernels_",
    "kept_mask",
    "kept_to_json",
    "kernel_masks",
    "kernel_scores",
    "load_kernel_compact",
    "plan_kernel_groups",
    "removable_channels",
    "save_kernel_compact",
]

log = logging.getLogger(__name__)

KernelCriterion = Literal["l1", "sparsity"]
KERNEL_CRITERIA: tuple[str, ...] = ("l1", "sparsity")


# ---- kept kernels in a plan ---------------------------------------------------------------------
def kept_to_json(masks: dict[str, Tensor]) -> dict[str, dict[str, Any]]:
    """Each layer's kept kernels as a plan stores them: ``{"shape": [out, in], "count": kept, "bitmap": ...}``,
    the bitmap being the ``out*in`` keep bits in row-major order, packed and base64-encoded (a list of flat
    indices made a YOLOv8n plan 9.5 MB of JSON)."""
    out = {}
    for layer, m in masks.items():
        bits = np.packbits(m.detach().cpu().reshape(-1).numpy().astype(bool))
        out[layer] = {"shape": [int(m.shape[0]), int(m.shape[1])], "count": int(m.sum()),
                      "bitmap": base64.b64encode(bits.tobytes()).decode("ascii")}
    return out


def kept_mask(kept: Any, shape: tuple[int, int], layer: str = "") -> Tensor:
    """The ``[out, in]`` keep mask of one layer from a plan: :func:`kept_to_json`'s form, or the flat kernel
    indices older plans store.

    Raises:
        ConfigError: the plan's shape is not ``shape`` (the layer in the model), its bitmap does not decode to
            ``count`` kept kernels, or an index is out of range.
    """
    n = shape[0] * shape[1]
    where = f" of '{layer}'" if layer else ""
    if isinstance(kept, dict):
        if [int(d) for d in kept.get("shape", ())] != list(shape):
            raise ConfigError(f"the plan keeps kernels{where} of a {kept.get('shape')} layer, the model's is "
                              f"{list(shape)}: apply it to the model it was made from")
        try:
            raw = base64.b64decode(str(kept["bitmap"]), validate=True)
        except (KeyError, ValueError) as e:
            raise ConfigError(f"the plan's kernel bitmap{where} is corrupt ({e}); re-create the plan") from e
        bits = np.unpackbits(np.frombuffer(raw, dtype=np.uint8), count=n) if len(raw) * 8 >= n else None
        if bits is None or int(bits.sum()) != int(kept.get("count", -1)):
            raise ConfigError(f"the plan's kernel bitmap{where} does not hold its {kept.get('count')} kept kernels; "
                              "re-create the plan")
        return torch.from_numpy(bits.astype(bool)).view(shape)
    index = torch.as_tensor(list(kept), dtype=torch.long)
    if index.numel() and (int(index.min()) < 0 or int(index.max()) >= n):
        raise ConfigError(f"the plan keeps kernel index {int(index.max())}{where}, a layer with {n} kernels")
    mask = torch.zeros(n, dtype=torch.bool)
    mask[index] = True
    return mask.view(shape)


# ---- scoring and masks -------------------------------------------------------------------------
def kernel_scores(weight: Tensor, criterion: str = "l1") -> Tensor:
    """Importance of each 2-D kernel (higher = keep).

    Args:
        weight (Tensor[out, in, kh, kw]): a ``groups=1`` conv weight.
        criterion: ``"l1"`` (sum of ``|w|`` over the kernel) or ``"sparsity"`` (``1 - s`` where ``s``
            is the fraction of the kernel's weights with ``|w|`` below the layer's mean ``|w|``).

    Returns:
        Tensor[out, in] (float32). For ``sparsity`` the values are discrete (``kh*kw + 1`` levels);
        :func:`kernel_masks` breaks ties by L1.

    Raises:
        UnknownNameError: unknown criterion.
        ConfigError: ``weight`` is not 4-D.
    """
    if criterion not in KERNEL_CRITERIA:
        raise unknown_name("kernel criterion", criterion, KERNEL_CRITERIA)
    if weight.dim() != 4:
        raise ConfigError(f"kernel_scores expects a conv weight [out, in, kh, kw], got shape {tuple(weight.shape)}")
    a = weight.detach().abs().float()
    if criterion == "l1":
        return a.sum(dim=(2, 3))
    return 1.0 - (a < a.mean()).float().mean(dim=(2, 3))


def _order_to_remove(weight: Tensor, criterion: str) -> Tensor:
    """Flat kernel indices (``o * in + i``), least important first; ties broken by smaller L1."""
    l1 = kernel_scores(weight, "l1").flatten()
    by_l1 = torch.argsort(l1, stable=True)
    if criterion == "l1":
        return by_l1
    s = kernel_scores(weight, criterion).flatten()[by_l1]
    return by_l1[torch.argsort(s, stable=True)]


def default_kernel_layers(model: nn.Module) -> list[str]:
    """FQNs of ``Conv2d`` layers with ``groups=1``, more than one input and more than one output channel.

    This skips a single-channel image's first conv and a single-channel output conv (VDSR's
    ``input``/``output``; Liu et al. never prune VDSR's last layer).
    """
    return [
        n for n, m in model.named_modules()
        if type(m) is nn.Conv2d and m.groups == 1 and m.in_channels > 1 and m.out_channels > 1
    ]


def _conv(model: nn.Module, fqn: str) -> nn.Conv2d:
    mods = dict(model.named_modules())
    if fqn not in mods:
        convs = [n for n, m in mods.items() if isinstance(m, nn.Conv2d)]
        raise unknown_name("conv layer", fqn, convs)
    m = mods[fqn]
    if not isinstance(m, nn.Conv2d) or m.groups != 1:
        raise UnsupportedLayerError(
            f"'{fqn}' is {type(m).__name__}"
            + (f" with groups={m.groups}" if isinstance(m, nn.Conv2d) else "")
            + "; kernel granularity needs an nn.Conv2d with groups=1"
        )
    return m


def kernel_masks(
    model: nn.Module,
    prune_ratio: float,
    criterion: str = "l1",
    layers: list[str] | None = None,
) -> dict[str, Tensor]:
    """Choose, per layer, the ``round(prune_ratio * out * in)`` least important 2-D kernels.

    Args:
        model: the model (not modified).
        prune_ratio: fraction of each layer's kernels to remove, in ``[0, 1)``.
        criterion: ``"l1"`` or ``"sparsity"`` (see :func:`kernel_scores`).
        layers: conv FQNs; default :func:`default_kernel_layers`.

    Returns:
        ``{fqn: BoolTensor[out, in]}``, ``True`` = kernel kept.

    Raises:
        ConfigError: ``prune_ratio`` out of range.
        UnsupportedLayerError: a named layer is not a ``groups=1`` Conv2d.
    """
    if not 0.0 <= float(prune_ratio) < 1.0:
        raise ConfigError(f"prune_ratio must be in [0, 1), got {prune_ratio}")
    names = default_kernel_layers(model) if layers is None else list(layers)
    out: dict[str, Tensor] = {}
    for fqn in names:
        w = _conv(model, fqn).weight
        o, i = w.shape[:2]
        n_remove = int(round(float(prune_ratio) * o * i))
        keep = torch.ones(o * i, dtype=torch.bool)
        keep[_order_to_remove(w, criterion)[:n_remove]] = False
        out[fqn] = keep.reshape(o, i)
    return out


def apply_kernel_masks_(model: nn.Module, masks: dict[str, Tensor]) -> int:
    """Zero the removed kernels in place (physically: the weights become ``+0.0``).

    Args:
        model: the model to edit.
        masks: ``{fqn: BoolTensor[out, in]}`` (``True`` = keep), e.g. from :func:`kernel_masks`.

    Returns:
        Number of kernels zeroed.

    Raises:
        ConfigError: a mask's shape does not match the layer.
    """
    n = 0
    with torch.no_grad():
        for fqn, mask in masks.items():
            w = _conv(model, fqn).weight
            if tuple(mask.shape) != tuple(w.shape[:2]):
                raise ConfigError(f"mask for '{fqn}' has shape {tuple(mask.shape)}, expected {tuple(w.shape[:2])}")
            drop = ~mask.to(device=w.device, dtype=torch.bool)
            w[drop] = 0.0
            n += int(drop.sum())
    return n


# ---- channels that became removable ------------------------------------------------------------
def removable_channels(model: nn.Module, example_input: Any) -> dict[str, list[int]]:
    """Producer output channels that every consumer ignores (all their kernels/weights are zero).

    Uses :func:`slimcnn.graph.trace`; a channel counts only when its whole coupled group channel is
    unused by every conv/linear that reads it and it does not reach a model output.

    Returns:
        ``{producer FQN: [output channels]}`` (producer = first ``out`` member of the group).
    """
    from slimcnn.graph import trace

    graph = trace(model, example_input)
    mods = dict(model.named_modules())
    res: dict[str, list[int]] = {}
    for g in graph.groups():
        readers = [m for m in g.members if m.role == "in" and m.kind in ("conv", "convt", "linear")]
        if not g.prunable or not readers or not g.producers:
            continue
        dead = set(range(g.size)) - set(g.fixed_set)
        for m in readers:
            mod = mods[m.layer]
            w = mod.weight.detach()
            if getattr(mod, "groups", 1) != 1:
                dead.clear()
                break
            for c, k in enumerate(m.index):
                if k in dead and bool(w.select(m.dim, c).abs().amax() > 0):
                    dead.discard(k)
        if dead:
            prod = g.producers[0]
            res[prod.layer] = sorted(c for c, k in enumerate(prod.index) if k in dead)
    return res


def drop_removable_channels_(model: nn.Module, example_input: Any) -> dict[str, list[int]]:
    """Physically remove the channels of :func:`removable_channels` (exact: their consumers read zeros).

    Returns:
        ``{producer FQN: removed output channels}``.
    """
    from slimcnn.prune._surgery import prune_

    rem = removable_channels(model, example_input)
    if rem:
        prune_(model, example_input, rem)
        log.info("dropped %d dead channels in %d tensors", sum(map(len, rem.values())), len(rem))
    return rem


_GROUPED = ("GroupedLayer", "GroupedReport", "group_kernels_", "plan_kernel_groups")


def __getattr__(name: str) -> Any:
    """Lazy re-export of the grouped pattern (:mod:`slimcnn.prune._kernel_groups` imports this module)."""
    if name in _GROUPED:
        from slimcnn.prune import _kernel_groups

        return getattr(_kernel_groups, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
