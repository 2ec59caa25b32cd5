"""Per-layer rules, byte sizes and magnitude pruning."""

from __future__ import annotations

import pytest
import torch

from slimcnn.errors import ConfigError
from slimcnn.quantize import KMeansQuantSpec, global_magnitude_masks, magnitude_mask
from slimcnn.quantize._spec import match_rule


def test_rules_first_match_wins() -> None:
    spec = KMeansQuantSpec.parse("conv1=9,conv*=8,fc*=1", prune="conv3=2,fc*=3")
    assert match_rule(spec.bits, "conv1") == 9
    assert match_rule(spec.bits, "conv4") == 8
    assert match_rule(spec.bits, "fc7") == 1
    assert match_rule(spec.bits, "classifier") is None
    assert match_rule(spec.prune, "fc6") == 3.0 and match_rule(spec.prune, "conv2") is None
    assert KMeansQuantSpec.parse("8").bits == (("*", 8),)


@pytest.mark.parametrize("bad", ["conv1=0", "conv1=17", "conv1=x", "=8", "conv1=4.5"])
def test_bad_bits_rules(bad: str) -> None:
    with pytest.raises(ConfigError, match="--bits"):
        KMeansQuantSpec.parse(bad)


def test_bad_prune_and_conflicts() -> None:
    with pytest.raises(ConfigError, match="--prune"):
        KMeansQuantSpec.parse("8", prune="fc*=0.5")
    with pytest.raises(ConfigError, match="both"):
        KMeansQuantSpec.parse("8", prune="fc*=2", global_prune=2.0)
    with pytest.raises(ConfigError, match="codebook"):
        KMeansQuantSpec.parse("8", codebook_dtype="fp8")


@pytest.mark.parametrize("factor", [1.0, 2.0, 3.0, 4.0])
def test_percentile_pruning_keeps_one_over_f(factor: float) -> None:
    w = torch.randn(300, 7)
    mask = magnitude_mask(w, factor)
    if factor == 1.0:
        assert mask is None
        return
    assert mask is not None
    kept = int(mask.sum())
    assert kept == w.numel() - round(w.numel() * (1 - 1 / factor))
    assert w[mask].abs().min() >= w[~mask].abs().max()  # the largest magnitudes survive


def test_global_threshold() -> None:
    big, small = torch.randn(100, 10) * 10, torch.randn(100, 10)
    masks = global_magnitude_masks({"big": big, "small": small}, 2.0)
    kept = {k: int(m.sum()) for k, m in masks.items() if m is not None}
    assert sum(kept.values()) == 1000  # half of 2000 (no ties in random data)
    assert kept["big"] > kept["small"]


@pytest.mark.parametrize("prune", ["", "c2=2"])
def test_weights_removed_before_kmeans_stay_zero_and_the_bound_holds(prune: str, tmp_path) -> None:
    """k-means gave removed k×k kernels (exact zeros) a centroid, so a kernel-then-k-means compress wrote dense
    kernels back (0.00 of them zero) and kept none of the kernel stage's MACs. Zeros are kept positions no more:
    they stay zero, sit in the keep mask, and the bytes a search counts bound what the file stores."""
    from slimcnn.quantize import kmeans_bytes_bound, load_packed, quantize_model, save_packed

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(8, 16, 3), torch.nn.ReLU(), torch.nn.Conv2d(16, 16, 3))
    removed = torch.rand(16, 16) < 0.6
    with torch.no_grad():
        net[2].weight[removed] = 0.0
    res = quantize_model(net, KMeansQuantSpec.parse("4", prune=prune.replace("c2", "2") or None))
    w = res.model[2].weight.detach()
    assert (w[removed] == 0).all()  # every removed kernel is still removed
    q = res.layers["2"]
    assert q.mask is not None and int(q.mask.sum()) <= int((~removed).sum()) * 9
    assert res.layers["0"].mask is None  # a dense layer needs no mask
    if not prune:
        assert q.report.stored_bytes <= kmeans_bytes_bound(net[2].weight, 4)
        assert kmeans_bytes_bound(net[2].weight, 4) < kmeans_bytes_bound(torch.ones(16, 16, 3, 3), 4)
    save_packed(tmp_path / "m.slim", res, source="")
    assert torch.equal(load_packed(tmp_path / "m.slim", model=net).model[2].weight, w)
