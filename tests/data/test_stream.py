"""Streaming classification data: folders, tars and WebDataset shards through a DataLoader."""

from __future__ import annotations

import dataclasses
import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from slimcnn.data._stream import GlobalBatches, index_images, shard_paths, stream_batches
from slimcnn.errors import DataError
from slimcnn.models import load_model
from slimcnn.models.small import build_tiny_cnn
from slimcnn.tasks.classification import ClassificationTask

CLASSES = ("cat", "dog", "fox")


def _png(rng: np.random.Generator, label: int) -> bytes:
    arr = rng.integers(0, 120, (32, 32, 3), dtype=np.uint8)
    arr[..., label] += 120  # a class is a colour: learnable
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An ImageFolder of 3 classes x 16 32x32 PNGs."""
    root = tmp_path_factory.mktemp("stream") / "folder"
    rng = np.random.default_rng(0)
    for k, c in enumerate(CLASSES):
        (root / c).mkdir(parents=True)
        for i in range(16):
            (root / c / f"{i:03d}.png").write_bytes(_png(rng, k))
    return root


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two WebDataset shards (``<key>.png`` + ``<key>.cls``), 24 samples each; one image is corrupt."""
    root = tmp_path_factory.mktemp("stream") / "shards"
    root.mkdir()
    rng = np.random.default_rng(1)
    for s in range(2):
        with tarfile.open(root / f"train-{s:06d}.tar", "w") as tar:
            for i in range(24):
                key, label = f"s{s}_{i:04d}", i % 3
                data = b"not an image at all" if (s, i) == (1, 5) else _png(rng, label)
                _add(tar, f"{key}.png", data)
                _add(tar, f"{key}.cls", str(label).encode())
    return root


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_tiny_cnn(3)


def _task(data: str | Path, **kw: object) -> ClassificationTask:
    info = dataclasses.replace(load_model("slimcnn:tiny_cnn").info, num_classes=3)
    return ClassificationTask(data, info=info, batch_size=16, **{"loader_workers": 0, **kw})  # type: ignore[arg-type]


def test_streamed_evaluation_equals_in_memory(folder: Path, tmp_path: Path) -> None:
    model = _model()
    archive = tmp_path / "set.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(folder, arcname=".")
    memory = _task(folder, stream=False).evaluate(model)
    for data in (folder, archive):
        streamed = _task(data, stream=True)
        assert isinstance(streamed.eval_set, type(index_images(data, "test")))
        got = streamed.evaluate(model)
        assert (got.value, got.metrics, got.n) == (memory.value, memory.metrics, 48)
    x = _task(folder, stream=True).example_input(2)
    assert torch.equal(x, _task(folder, stream=False).example_input(2))


def test_shards_by_folder_and_pattern_with_two_workers_skip_the_corrupt_image(shards: Path) -> None:
    pattern = str(shards / "train-{000000..000001}.tar")
    assert shard_paths(pattern) == shard_paths(shards) and len(shard_paths(shards) or []) == 2
    index = index_images(pattern, "train")
    assert len(index) == 48 and sorted(set(index.labels.tolist())) == [0, 1, 2]
    task = _task(pattern, loader_workers=2)
    score = task.evaluate(_model())
    assert score.n == 47 and task.skipped.count == 1 and "s1_0005.png" in task.skipped.examples[0]


def test_strict_data_refuses_the_corrupt_image_in_one_line(shards: Path) -> None:
    task = _task(shards, strict_data=True)
    with pytest.raises(DataError, match=r"cannot decode image .*train-000001.tar:s1_0005.png") as e:
        task.evaluate(_model())
    assert "\n" not in str(e.value)


def test_missing_shard_is_one_line(shards: Path) -> None:
    with pytest.raises(DataError, match="train-000002.tar does not exist"):
        shard_paths(shards / "train-{000000..000002}.tar")


def test_global_batches_split_over_ranks_like_one_process() -> None:
    one = iter(GlobalBatches(50, 8, shuffle=True, seed=3))
    ranks = [iter(GlobalBatches(50, 8, shuffle=True, seed=3, rank=r, world=2)) for r in range(2)]
    for _ in range(10):  # across a pass boundary (6 full batches per pass)
        whole = next(one)
        halves = [next(r) for r in ranks]
        assert halves[0] + halves[1] == whole and len(halves[0]) == 4
    with pytest.raises(DataError, match="multiple of 3"):
        GlobalBatches(50, 8, shuffle=True, world=3)


def test_streamed_training_augments_and_learns(folder: Path) -> None:
    index = index_images(folder, "train")
    a, _ = next(stream_batches(index, size=(32, 32), channels=3, batch_size=16, train=True, seed=0))
    b, _ = next(stream_batches(index, size=(32, 32), channels=3, batch_size=16, train=True, augment=False, seed=0))
    assert a.dtype == torch.uint8 and a.shape == b.shape == (16, 3, 32, 32) and not torch.equal(a, b)
    model = _model()
    task = _task(folder, stream=True)
    before = task.evaluate(model).value
    stats = task.finetune(model, 30, lr=0.05, progress=False)
    assert stats.steps == 30 and task.evaluate(model).value > max(before, 60.0)


def test_train_cli_on_shards_counts_the_skipped_image_in_its_summary(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from slimcnn.cli import main

    rng = np.random.default_rng(2)
    for s in range(2):
        with tarfile.open(tmp_path / f"digits-{s}.tar", "w") as tar:
            for i in range(20):
                data = b"\xff\xd8 truncated jpeg" if (s, i) == (0, 3) else _png(rng, i % 3)
                _add(tar, f"k{s}_{i:03d}.png", data)
                _add(tar, f"k{s}_{i:03d}.cls", str(i % 10).encode())
    out = tmp_path / "run"
    rc = main(["train", "slimcnn:lenet5", "--task", "classification", "--data", str(tmp_path / "digits-{0..1}.tar"),
               "--steps", "2", "--batch-size", "8", "--out", str(out)])
    assert rc == 0
    details = json.loads((out / "result.json").read_text())["details"]
    assert details["skipped_images"] >= 1 and "digits-0.tar:k0_003.png" in details["skipped_examples"][0]
    assert "skipped" in capsys.readouterr().out


def test_make_task_passes_the_streaming_options(shards: Path) -> None:
    from slimcnn.errors import ConfigError
    from slimcnn.tasks import make_task

    info = dataclasses.replace(load_model("slimcnn:tiny_cnn").info, num_classes=3)
    task = make_task("classification", shards, info=info, batch_size=16, stream=True, loader_workers=0, amp="bf16")
    assert (task.stream, task.loader_workers, task.strict_data, task.amp) == (True, 0, False, "bf16")
    strict = make_task("classification", shards, info=info, batch_size=16, loader_workers=0, strict_data=True)
    with pytest.raises(DataError, match=r"cannot decode image .*s1_0005.png"):
        strict.evaluate(_model())
    with pytest.raises(ConfigError, match="strict_data, amp: not an option of the sr task"):
        make_task("sr", "photos", stream=True, strict_data=True, amp="bf16")
