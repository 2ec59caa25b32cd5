"""8-bit per-layer k-means barely moves ResNet-56 on (JPEG-q75) CIFAR-10."""

from __future__ import annotations

import pytest

from slimcnn.paths import shared_path
from slimcnn.quantize import KMeansQuantSpec, quantize_model

pytestmark = [pytest.mark.slow, pytest.mark.shared_data, pytest.mark.timeout(3600)]


def need_shared(*parts: str):  # type: ignore[no-untyped-def]
    p = shared_path(*parts)
    if p is None:
        pytest.skip(f"needs the benchmark data {'/'.join(parts)} under $SLIMCNN_DATA or ../shared/data (absent here)")
    return p


def test_resnet56_8bit_drop_below_0p3_points() -> None:
    data = need_shared("cifar10-jpeg75", "test-10k.tar")
    need_shared("weights", "cifar10-resnet")
    from slimcnn.models import load_model
    from slimcnn.tasks import make_task

    loaded = load_model("slimcnn:resnet56")
    assert loaded.info.pretrained
    task = make_task("classification", data, info=loaded.info)
    before = task.evaluate(loaded.model)
    res = quantize_model(loaded.model, KMeansQuantSpec.parse("8"))
    after = task.evaluate(res.model)
    assert before.n == after.n == 10_000
    assert abs(before.drop_to(after)) < 0.3
