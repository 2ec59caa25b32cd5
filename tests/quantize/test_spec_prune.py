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
