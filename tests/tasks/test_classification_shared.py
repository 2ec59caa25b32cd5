"""ClassificationTask on the shared CIFAR-10 JPEG archives (skipped when ../shared/data is absent)."""

from __future__ import annotations

import pytest
import torch

from slimcnn.paths import shared_path
from slimcnn.tasks import make_task

pytestmark = pytest.mark.shared_data


def need_shared(*parts: str):  # type: ignore[no-untyped-def]
    p = shared_path(*parts)
    if p is None:
        pytest.skip(
            f"needs the benchmark data {'/'.join(parts)} under $SLIMCNN_DATA or ../shared/data (absent here)"
        )
    return p


def _resnet56():  # type: ignore[no-untyped-def]
    from slimcnn.models import load_model

    need_shared("weights", "cifar10-resnet")
    return load_model("slimcnn:resnet56")


def test_tar_pair_classes_and_sibling() -> None:
    test_tar = need_shared("cifar10-jpeg75", "test-10k.tar")
    subset = need_shared("cifar10-jpeg75", "train-subset-10k.tar")
    full = need_shared("cifar10-jpeg75", "train-50k.tar")
    task = make_task("classification", test_tar)
    assert task.train_source() == (full, "train")  # type: ignore[attr-defined]  # the full set, not the subset
    ev = task.eval_set  # type: ignore[attr-defined]
    tr = make_task("classification", test_tar, train_data=str(subset)).train_set  # type: ignore[attr-defined]
    assert len(ev) == len(tr) == 10_000
    assert ev.classes == tr.classes and ev.classes[0] == "airplane" and len(ev.classes) == 10
    assert torch.bincount(ev.labels).tolist() == [1000] * 10
    assert ev.images.shape == (10_000, 3, 32, 32) and ev.images.dtype == torch.uint8


def test_resnet56_first_1000() -> None:
    torch.set_num_threads(
        1
    )  # avoids OpenMP spin-waits on a busy 2-core box; the net is big enough either way
    loaded = _resnet56()
    task = make_task("classification", need_shared("cifar10-jpeg75", "test-10k.tar"), info=loaded.info)
    s = task.evaluate(loaded.model, limit=1000)
    assert s.n == 1000 and s.value == pytest.approx(83.4, abs=0.3)


@pytest.mark.slow
def test_resnet56_full_test_set_matches_readme() -> None:
    torch.set_num_threads(1)  # ~40 s of CPU; 2 threads spin-wait badly when the box is shared
    loaded = _resnet56()
    task = make_task("classification", need_shared("cifar10-jpeg75", "test-10k.tar"), info=loaded.info)
    s = task.evaluate(loaded.model)
    assert s.n == 10_000 and s.value == pytest.approx(83.20, abs=0.2)
    assert s.metrics["top5"] > 98.0
