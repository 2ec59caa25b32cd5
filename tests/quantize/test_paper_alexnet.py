"""Tomè et al. Table I memory arithmetic on AlexNet (conv1..fc7, no fc8)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from slimcnn.quantize import KMeansQuantSpec, load_packed, payload_estimate, quantize_model, save_packed

MIB = 2**20
TABLE1_BITS = "conv1=9,conv*=8,fc*=1"
TABLE1_PRUNE = "conv3=2,conv4=2,fc*=3"  # fc: keep 1/3 + 1 bit (text, 102x); Table I prints 16x4 (inconsistent)


@pytest.fixture(scope="module")
def alexnet():  # type: ignore[no-untyped-def]
    from slimcnn.models import load_model

    return load_model("slimcnn:alexnet_bvlc")


def test_table1_payload(alexnet) -> None:  # type: ignore[no-untyped-def]
    spec = KMeansQuantSpec.parse(TABLE1_BITS, TABLE1_PRUNE)
    per = payload_estimate(alexnet.model, spec)
    original = sum(p.numel() for p in alexnet.model.parameters()) * 4
    assert original / MIB == pytest.approx(216.94, abs=0.01)
    # the conv rows of Table I (MB there = MiB): 0.037, 0.293, 0.422, 0.319 (ours 0.316), 0.422
    got = {k: round(v / MIB, 3) for k, v in per.items()}
    assert got["conv1"] == 0.037 and got["conv2"] == 0.293 and got["conv3"] == 0.422 and got["conv5"] == 0.422
    assert got["conv4"] == pytest.approx(0.319, abs=0.004)
    assert per["fc6"] == 37748736 // 3 / 8 and per["fc7"] == pytest.approx(16777216 / 3 / 8, abs=1)
    total = sum(per.values()) / MIB
    assert 3.5 <= total <= 3.7  # paper: 3.50


@pytest.mark.slow
def test_table1_full_quantize_pack_reload(alexnet, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    spec = KMeansQuantSpec.parse(TABLE1_BITS, TABLE1_PRUNE)
    res = quantize_model(alexnet.model, spec)
    assert res.paper_payload_bytes == pytest.approx(sum(payload_estimate(alexnet.model, spec).values()))
    rep = save_packed(tmp_path / "a.slim", res, source=alexnet.source, info=alexnet.info)
    assert rep.file_bytes > res.payload_bytes  # masks, codebooks and biases are real bytes
    loaded = load_packed(tmp_path / "a.slim")
    x = torch.randn(1, 3, 227, 227)
    with torch.no_grad():
        assert torch.equal(loaded.model(x), res.model.eval()(x))
