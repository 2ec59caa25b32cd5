"""Classification data loaders and ClassificationTask (no shared data needed)."""

from __future__ import annotations

import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from slimcnn.data.classification import (
    augment_uint8,
    find_train_sibling,
    load_classification,
    normalize,
    source_splits,
)
from slimcnn.errors import ConfigError, DataError, UnknownNameError
from slimcnn.models._zoo import ModelInfo
from slimcnn.tasks import make_task
from slimcnn.tasks.classification import ClassificationTask

CLASSES = ("cat", "dog", "frog")
LEVEL = {"cat": 0, "dog": 128, "frog": 255}  # each class is a flat grey level


def _write_folder(root: Path, n: int = 4, size: tuple[int, int] = (12, 12)) -> Path:
    for c in CLASSES:
        (root / c).mkdir(parents=True)
        for i in range(n):
            w, h = (size[1] + 4 * (i % 2), size[0])  # mixed sizes -> resized + centre-cropped
            Image.new("RGB", (w, h), (LEVEL[c],) * 3).save(root / c / f"{i:04d}.png")
    return root


def _tar(folder: Path, out: Path, arcname: str) -> Path:
    with tarfile.open(out, "w") as tar:
        tar.add(folder, arcname=arcname)
    return out


class MeanNet(nn.Module):
    """Predicts the class from the image's mean grey level (perfect on the synthetic sets)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = x.mean(dim=(1, 2, 3))
        centres = torch.tensor([0.0, 0.5, 1.0])
        return -(m[:, None] - centres[None]).abs() * 100


def test_digits_split_size_and_range() -> None:
    tr = load_classification("digits", "train", size=(32, 32), channels=1)
    te = load_classification("digits", "test", size=(32, 32), channels=1)
    assert (len(tr), len(te)) == (1437, 360)
    assert tr.images.shape == (1437, 1, 32, 32) and tr.images.dtype == torch.uint8
    assert tr.classes == tuple(str(i) for i in range(10)) and set(te.labels.tolist()) == set(range(10))
    assert int(tr.images.max()) == 255 and int(tr.images.min()) == 0
    rgb = load_classification("digits", "test", size=(8, 8), channels=3)
    assert rgb.images.shape == (360, 3, 8, 8) and torch.equal(rgb.labels, te.labels)


def test_image_folder_dir_and_tar_agree(tmp_path: Path) -> None:
    folder = _write_folder(tmp_path / "imgs")
    a = load_classification(folder, "test", size=(8, 8))
    tar = _tar(folder, tmp_path / "imgs.tar", "test")
    b = load_classification(tar, "test", size=(8, 8))
    assert a.classes == b.classes == CLASSES
    assert a.images.shape == (12, 3, 8, 8)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert b.name == "imgs.tar:test" and a.name == "imgs:all"
    for img, lab in zip(a.images, a.labels, strict=True):  # labels follow the class folders
        assert int(img.float().mean().round()) == LEVEL[CLASSES[lab]]
    assert len(set(a.labels[:3].tolist())) > 1  # fixed shuffled order mixes classes
    gray = load_classification(tar, "test", size=(6, 6), channels=1)
    assert gray.images.shape == (12, 1, 6, 6)


def test_split_folder_and_sibling_archives(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    _write_folder(root / "train", n=3)
    _write_folder(root / "val", n=2)
    assert source_splits(root) == {"train", "test"}
    assert len(load_classification(root, "train")) == 9 and len(load_classification(root, "test")) == 6
    assert find_train_sibling(root / "val") == root / "train"

    test_tar = _tar(root / "val", tmp_path / "test-x.tar", "test")
    train_tar = _tar(root / "train", tmp_path / "train-x.tar", "train")
    assert source_splits(test_tar) == {"test"}
    assert find_train_sibling(test_tar) == train_tar
    task = ClassificationTask(test_tar)
    assert task.train_source() == (train_tar, "train")
    assert len(task.train_set) == 9 and len(task.eval_set) == 6


def test_training_on_the_evaluation_data_is_said_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A search fine-tunes at every point: `compress --data messy` printed this warning eight times."""
    _write_folder(tmp_path / "only", n=2)
    task = ClassificationTask(tmp_path / "only")
    with caplog.at_level("WARNING"):
        for _ in range(3):
            assert task.train_source() == (tmp_path / "only", "test")
    assert caplog.text.count("no training set found") == 1


def test_cifar_python_folder(tmp_path: Path) -> None:
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    rng = np.random.RandomState(0)
    for name, n in (("data_batch_1", 6), ("data_batch_2", 4), ("test_batch", 5)):
        data = {
            b"data": rng.randint(0, 256, (n, 3072), dtype=np.uint8),
            b"labels": list(rng.randint(0, 3, n)),
        }
        (root / name).write_bytes(pickle.dumps(data))
    (root / "batches.meta").write_bytes(pickle.dumps({b"label_names": [b"a", b"b", b"c"]}))
    tr = load_classification(tmp_path, "train")
    te = load_classification(tmp_path, "test", size=(16, 16))
    assert len(tr) == 10 and tr.images.shape[1:] == (3, 32, 32) and tr.classes == ("a", "b", "c")
    assert te.images.shape == (5, 3, 16, 16) and te.name.endswith(":test")
    raw = pickle.loads((root / "data_batch_1").read_bytes())[b"data"].reshape(-1, 3, 32, 32)
    assert torch.equal(tr.images[:6], torch.from_numpy(raw))


def test_bad_sources(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist; pass a folder of images, a CIFAR folder"):
        make_task("classification", tmp_path / "missing")
    flat = tmp_path / "flat"
    flat.mkdir()
    Image.new("RGB", (4, 4)).save(flat / "x.png")
    with pytest.raises(DataError, match="class folders"):
        load_classification(flat, "test")
    import zipfile

    with zipfile.ZipFile(tmp_path / "imgs.zip", "w") as zf:
        zf.write(flat / "x.png", "cat/x.png")
    with pytest.raises(DataError, match=r"imgs.zip is a .zip archive.*unzip imgs.zip -d imgs.*tar -cf imgs.tar"):
        load_classification(tmp_path / "imgs.zip", "test")
    with pytest.raises(UnknownNameError, match="classification"):
        make_task("clasification", "digits")
    with pytest.raises(ConfigError, match="--scale"):
        make_task("classification", "digits", scale=2)


def test_make_task_builds_a_task_protocol_object() -> None:
    from slimcnn.tasks import Task, list_tasks

    task = make_task("classification", "digits", subset=20, batch_size=8)
    assert isinstance(task, Task) and isinstance(task, ClassificationTask)
    assert "classification" in list_tasks()
    assert task.evaluate(nn.Sequential(nn.Flatten(), nn.Linear(64, 10))).n == 20  # no info: native 1x8x8


def test_evaluate_scores_and_restores_mode(tmp_path: Path) -> None:
    folder = _write_folder(tmp_path / "imgs")
    task = make_task("classification", folder, batch_size=5)
    model = MeanNet().train()
    s = task.evaluate(model)
    assert (s.metric, s.value, s.n) == ("top1", 100.0, 12)
    assert "top5" not in s.metrics  # three classes: every label is in the top five
    assert model.training
    const = nn.Sequential(nn.Flatten(), nn.Linear(3 * 12 * 12, 3))
    nn.init.zeros_(const[1].weight)
    const[1].bias.data = torch.tensor([0.0, 0.0, 1.0])  # always "frog"
    s = task.evaluate(const, limit=6)
    frogs = int((task.eval_set.labels[:6] == 2).sum())
    assert s.n == 6 and s.value == pytest.approx(100 * frogs / 6)
    with pytest.raises(DataError, match="classes"):
        task.evaluate(nn.Sequential(nn.Flatten(), nn.Linear(3 * 12 * 12, 2)))


def test_normalisation_and_batches() -> None:
    info = ModelInfo(
        task="classification", input_shape=(1, 1, 16, 16), mean=(0.5,), std=(0.25,), num_classes=10
    )
    task = make_task("classification", "digits", info=info, batch_size=32, seed=3)
    x = task.example_input(2)
    assert x.shape == (2, 1, 16, 16)
    assert float(x.min()) == pytest.approx(-2.0) and float(x.max()) == pytest.approx(2.0)
    b1, b2 = (
        task.training_batches(2),
        make_task("classification", "digits", info=info, batch_size=32, seed=3).training_batches(2),
    )
    assert [t[0].shape for t in b1] == [(32, 1, 16, 16)] * 2
    assert all(torch.equal(p[0], q[0]) and torch.equal(p[1], q[1]) for p, q in zip(b1, b2, strict=True))
    cal = task.calibration_batches(3)
    assert len(cal) == 3 and cal[0].shape == (32, 1, 16, 16)
    assert torch.equal(normalize(torch.full((1, 1, 1, 1), 255, dtype=torch.uint8)), torch.ones(1, 1, 1, 1))


def test_augmentation_keeps_shape_and_is_seeded() -> None:
    imgs = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    a = augment_uint8(imgs, torch.Generator().manual_seed(0))
    b = augment_uint8(imgs, torch.Generator().manual_seed(0))
    assert a.shape == imgs.shape and torch.equal(a, b) and not torch.equal(a, imgs)
    flipped = augment_uint8(imgs, torch.Generator().manual_seed(0), pad=0)
    assert all(torch.equal(f, i) or torch.equal(f, i.flip(-1)) for f, i in zip(flipped, imgs, strict=True))


def test_finetune_lenet5_on_digits_learns() -> None:
    from slimcnn.models import load_model

    torch.set_num_threads(1)  # tiny net: one thread is fastest, and robust on a busy 2-core CI box
    loaded = load_model("slimcnn:lenet5")
    task = make_task("classification", "digits", info=loaded.info, batch_size=64)
    before = task.evaluate(loaded.model).value
    stats = task.finetune(loaded.model, 120, lr=0.05, progress=False)
    after = task.evaluate(loaded.model)
    assert before < 30 and after.value > 90, (before, after)
    assert stats.steps == 120 and after.dataset == "digits:val" and after.n == 360


def test_finetune_resume_matches_uninterrupted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    torch.set_num_threads(1)
    info = ModelInfo(task="classification", input_shape=(1, 1, 8, 8), num_classes=10)

    def net() -> nn.Module:
        torch.manual_seed(0)
        return nn.Sequential(nn.Flatten(), nn.Linear(64, 10))

    ref = net()
    make_task("classification", "digits", info=info, batch_size=32).finetune(ref, 12, progress=False)

    task = make_task("classification", "digits", info=info, batch_size=32)
    calls = {"n": 0}
    real_loss = task.loss

    def flaky(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        calls["n"] += 1
        if calls["n"] == 9:
            raise KeyboardInterrupt
        return real_loss(model, batch)

    ckpt = tmp_path / "ckpt.pt"
    monkeypatch.setattr(task, "loss", flaky)
    with pytest.raises(KeyboardInterrupt):
        task.finetune(net(), 12, progress=False, checkpoint=ckpt, checkpoint_every=4)
    monkeypatch.setattr(task, "loss", real_loss)
    resumed = net()
    stats = task.finetune(resumed, 12, progress=False, checkpoint=ckpt, checkpoint_every=4)
    assert stats.steps == 4
    assert all(torch.equal(a, b) for a, b in zip(ref.parameters(), resumed.parameters(), strict=True))
