"""How criterion scores become group scores."""

from __future__ import annotations

import torch
import torchvision

from slimcnn.prune import prune_model_


def test_concat_producers_are_ranked_on_one_scale() -> None:
    """SqueezeNet Fire: expand1x1 ‖ expand3x3 share one group; raw L1 would empty the 1x1 branch."""
    m = torchvision.models.squeezenet1_0().eval()
    full = {n: mod.out_channels for n, mod in m.named_modules() if n.endswith(("expand1x1", "expand3x3"))}
    prune_model_(m, torch.randn(1, 3, 64, 64), criterion="l1", prune_ratio=0.5)
    kept = {n: mod.out_channels for n, mod in m.named_modules() if n in full}
    assert len(kept) == 16
    for name, n in kept.items():
        assert full[name] // 4 <= n < full[name], f"{name} kept {n} of {full[name]}"
