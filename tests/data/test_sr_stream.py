"""Streaming SR training data: patches cut on the fly from windows equal the whole-image protocol's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from slimcnn.data import _sr_stream
from slimcnn.data._sr_stream import SRPatchBatches, image_sizes, stream_sr_patches, window_triple
from slimcnn.data.sr import _package_file, make_sr_image, read_y, sr_files
from slimcnn.models import load_model
from slimcnn.tasks import make_task


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Five HR crops of scikit-image's astronaut and coffee (odd sizes: modcrop applies)."""
    root = tmp_path_factory.mktemp("sr") / "hr"
    root.mkdir()
    for k, (ref, box) in enumerate([("astronaut", (0, 0, 161, 123)), ("astronaut", (200, 150, 330, 301)),
                                    ("coffee", (10, 20, 207, 145)), ("coffee", (250, 100, 399, 250)),
                                    ("astronaut", (300, 300, 397, 411))]):
        with Image.open(_package_file(f"skimage:{ref}.png")) as im:
            im.convert("RGB").crop(box).save(root / f"{k}.png")
    return root


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_a_window_degrades_like_the_whole_image_inside_it(scale: int) -> None:
    y = read_y(_package_file("skimage:astronaut.png"))
    whole = make_sr_image("a", y, scale)
    H, W = whole.hr.shape
    for top, left, h, w in [(0, 0, 30 * scale, 24 * scale), (30 * scale, 40 * scale, 20 * scale, 24 * scale),
                            (H - 10 * scale, W - 12 * scale, 10 * scale, 12 * scale)]:
        part = window_triple("a", y, scale, top, left, h, w)
        np.testing.assert_allclose(part.hr, whole.hr[top : top + h, left : left + w], atol=1e-12, rtol=0)
        np.testing.assert_allclose(part.bicubic, whole.bicubic[top : top + h, left : left + w], atol=1e-12, rtol=0)
        lr = whole.lr[top // scale : (top + h) // scale, left // scale : (left + w) // scale]
        np.testing.assert_allclose(part.lr, lr, atol=1e-12, rtol=0)


@pytest.mark.parametrize("sr_input", ["upsampled", "lr"])
def test_streamed_patches_are_crops_of_the_whole_triples_and_do_not_depend_on_workers(folder: Path,
                                                                                      sr_input: str) -> None:
    files = sr_files(folder)[1]
    data = SRPatchBatches(files, image_sizes(files), scale=3, patch=12, batch_size=10, sr_input=sr_input,  # type: ignore[arg-type]
                          seed=5, augment=False)
    zero = [b for _, b in zip(range(3), stream_sr_patches(data, workers=0), strict=False)]
    two = [b for _, b in zip(range(3), stream_sr_patches(data, workers=2), strict=False)]
    for (x0, y0), (x2, y2) in zip(zero, two, strict=True):
        assert torch.equal(x0, x2) and torch.equal(y0, y2)
    out = 36 if sr_input == "lr" else 12
    assert zero[0][0].shape == (10, 1, 12, 12) and zero[0][1].shape == (10, 1, out, out)
    triples = [make_sr_image(stem, read_y(f), 3) for stem, f in files]
    x, y = zero[0][0][0, 0].double().numpy(), zero[0][1][0, 0].double().numpy()
    # the first patch is somewhere in one whole triple: find its target, then check its input beside it
    for t in triples:
        hits = np.argwhere(np.all(np.isclose(
            np.lib.stride_tricks.sliding_window_view(t.hr, y.shape), y, atol=1e-6), axis=(2, 3)))
        for i, j in hits:
            src = t.lr[i // 3 : i // 3 + 12, j // 3 : j // 3 + 12] if sr_input == "lr" else t.bicubic[i : i + 12, j : j + 12]
            if np.allclose(src, x, atol=1e-6):
                return
    raise AssertionError("the streamed patch is not a crop of any whole-image triple")


def test_the_task_streams_a_large_folder_and_trains(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    info = load_model("slimcnn:fsrcnn").info
    memory = make_task("sr", folder, info=info, scale=3, batch_size=8, stream=False)
    assert memory._streamed_train() is None
    monkeypatch.setattr("slimcnn.tasks.sr.SR_STREAM_ABOVE_BYTES", 0)  # every folder is "large" now
    task = make_task("sr", folder, info=info, scale=3, batch_size=8, loader_workers=0)
    assert task._streamed_train() is not None and make_task("sr", "photos", info=info, scale=3)._streamed_train() is None
    (x, y), = task.training_batches(1)
    (xm, ym), = memory.training_batches(1)
    assert x.shape == xm.shape and y.shape == ym.shape
    model = load_model("slimcnn:fsrcnn", scale=3).model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    stats = task.finetune(model, 3, lr=1e-3, progress=False)
    assert stats.steps == 3 and np.isfinite(stats.final_loss)
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_threshold_counts_the_triples_as_float64(folder: Path) -> None:
    files = sr_files(folder)[1]
    sizes = image_sizes(files)
    assert sizes[0] == (123, 161)
    assert _sr_stream.triple_bytes(sizes, 2) == sum(int(h * w * 8 * 2.25) for h, w in sizes)
