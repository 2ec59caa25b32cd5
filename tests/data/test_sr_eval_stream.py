"""SR evaluation sets are read image by image (decode, degrade, score) through a bounded cache of triples,
scoring exactly as the whole set decoded up front did."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import slimcnn.data.sr as sr
from slimcnn.data.sr import SRDataset, SRImages, load_sr_dataset, make_sr_image, read_y, sr_files
from slimcnn.errors import DataError
from slimcnn.models import load_model
from slimcnn.models._zoo import ModelInfo
from slimcnn.paths import shared_path
from slimcnn.tasks import make_task


@pytest.fixture(autouse=True)
def _empty_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sr, "_triples", OrderedDict())


def _whole(source: str | Path, scale: int) -> SRDataset:
    """The set decoded and degraded up front (how every set was held before)."""
    name, files = sr_files(source)
    return SRDataset(name, scale, tuple(make_sr_image(stem, read_y(f), scale) for stem, f in files))


def _tiny_sr(sr_input: str, scale: int) -> tuple[torch.nn.Module, ModelInfo]:
    """A seeded one-layer SR model: on the bicubic image ("upsampled") or sub-pixel from LR ("lr")."""
    torch.manual_seed(0)
    if sr_input == "upsampled":
        net: torch.nn.Module = torch.nn.Conv2d(1, 1, 3, padding=1)
    else:
        net = torch.nn.Sequential(torch.nn.Conv2d(1, scale * scale, 3, padding=1), torch.nn.PixelShuffle(scale))
    return net, ModelInfo(task="sr", scale=scale, sr_input=sr_input)


def _scores(source: str | Path | SRDataset, sr_input: str, scale: int) -> dict[str, float]:
    model, info = _tiny_sr(sr_input, scale)
    return make_task("sr", source, info=info, scale=scale).evaluate(model).metrics


@pytest.mark.parametrize(("sr_input", "scale"), [("lr", 3), ("upsampled", 2)])
def test_streamed_scores_equal_the_whole_set_on_builtin_images(sr_input: str, scale: int) -> None:
    streamed, whole = _scores("photos-val", sr_input, scale), _scores(_whole("photos-val", scale), sr_input, scale)
    assert streamed == pytest.approx(whole, rel=1e-12) and streamed["psnr_bicubic"] > 20  # real photos scored


@pytest.mark.shared_data
def test_streamed_scores_equal_the_whole_set_on_set5() -> None:
    set5 = shared_path("sr", "Set5")
    if set5 is None:
        pytest.skip("needs ../shared/data/sr/Set5 (or $SLIMCNN_DATA/sr/Set5), absent here")
    loaded = load_model("slimcnn:fsrcnn", scale=3)  # the shared trained weights when present
    task = make_task("sr", set5, info=loaded.info, scale=3)
    streamed = task.evaluate(loaded.model).metrics
    whole = make_task("sr", _whole(set5, 3), info=loaded.info, scale=3).evaluate(loaded.model).metrics
    assert streamed == pytest.approx(whole, rel=1e-12) and streamed["psnr_bicubic"] > 20


def _folder(path: Path, n: int, side: int = 48) -> Path:
    path.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(path / f"im{i}.png")
    return path


def test_the_cache_stays_under_its_bound_and_reads_each_image_when_it_was_dropped(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = _folder(tmp_path / "set", 5)
    reads: list[str] = []
    real_read = sr.read_y
    monkeypatch.setattr(sr, "read_y", lambda p: reads.append(Path(p).stem) or real_read(p))
    ds = load_sr_dataset(folder, 2)
    assert isinstance(ds.images, SRImages) and reads == []  # indexed, nothing decoded
    one = sr._nbytes(ds.images[0])
    monkeypatch.setattr(sr, "SR_CACHE_BYTES", 2 * one)  # two triples at most
    held: list[int] = []
    real_triple = sr._triple

    def spy(name: str, path: Path, scale: int) -> sr.SRImage:
        im = real_triple(name, path, scale)
        held.append(sum(sr._nbytes(t) for t in sr._triples.values()))
        return im

    monkeypatch.setattr(sr, "_triple", spy)
    model = torch.nn.Upsample(scale_factor=2, mode="nearest")  # an "lr"-input SR model
    task = make_task("sr", ds, info=ModelInfo(task="sr", scale=2, sr_input="lr"), scale=2)
    first = task.evaluate(model)
    second = task.evaluate(model)
    assert first.value == second.value and first.n == 5
    assert max(held) <= 2 * one
    # im0 was cached before the bound dropped; a scan of 5 images through 2 slots then misses every time
    assert reads == [f"im{i}" for i in range(5)] + [f"im{i}" for i in range(5)]
    monkeypatch.setattr(sr, "SR_CACHE_BYTES", 1 << 30)
    sr._triples.clear()
    reads.clear()
    assert task.evaluate(model).value == first.value
    task.evaluate(model)
    assert reads == [f"im{i}" for i in range(5)]  # a set that fits is read once, however often it is scored


def test_slices_stay_lazy_and_bad_images_are_refused_from_their_headers(tmp_path: Path) -> None:
    ds = load_sr_dataset(_folder(tmp_path / "ok", 3), 2)
    head = ds.images[:2]
    assert isinstance(head, SRImages) and [im.name for im in head] == ["im0", "im1"]
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "broken.png").write_bytes(b"not an image")
    with pytest.raises(DataError, match=r"cannot read image .*broken.png"):
        load_sr_dataset(bad, 2)
    with pytest.raises(DataError, match="too small for scale 3"):
        load_sr_dataset(_folder(tmp_path / "small", 1, side=5), 3)


def test_an_image_too_small_to_score_is_refused_up_front(tmp_path: Path) -> None:
    """A 16x16 photo passed the old check (>= 2 x scale) and crashed the first SSIM with skimage's ValueError
    ("win_size exceeds image extent"). The smallest scorable side is 2 x scale + 11: named with the fix."""
    with pytest.raises(DataError, match=r"'im0' \(16x16\) is too small for scale 3: .* at least 17x17 .*remove it"):
        load_sr_dataset(_folder(tmp_path / "small", 1, side=16), 3)
    loaded = load_model("slimcnn:fsrcnn", scale=3)
    task = make_task("sr", _folder(tmp_path / "ok", 1, side=18), scale=3, info=loaded.info)  # 18 = 6 x 3 >= 17
    score = task.evaluate(loaded.model)
    assert np.isfinite(score.metrics["ssim"])


def test_an_archive_as_sr_data_says_to_extract_it(tmp_path: Path) -> None:
    """It read "cannot read image x.tar.gz: cannot identify image file" (one file is taken as one image)."""
    (tmp_path / "x.tar.gz").write_bytes(b"\x1f\x8b")
    with pytest.raises(DataError, match=r"x.tar.gz is not an image: .* a folder of HR images .*extract an archive"):
        load_sr_dataset(tmp_path / "x.tar.gz", 2)
