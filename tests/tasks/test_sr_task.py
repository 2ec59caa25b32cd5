"""SR data + task on synthetic folders and the built-in photos (fast, no shared data needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from slimcnn.data.sr import SRImage, builtin_sr_sets, load_sr_dataset, make_sr_image, read_y, sample_patches
from slimcnn.errors import ConfigError, DataError, UnknownNameError
from slimcnn.models._zoo import ModelInfo
from slimcnn.tasks.base import TASKS, Task
from slimcnn.tasks.metrics import psnr, ssim
from slimcnn.tasks.sr import SR_RECIPES, SRTask, recipe_for
from slimcnn.tasks.sr_recipes import paper_init_


@pytest.fixture(scope="module")
def hr_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("hr")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:61, 0:74]
    smooth = (127 + 100 * np.sin(xx / 5.0) * np.cos(yy / 7.0)).astype(np.uint8)
    rgb = np.stack([smooth, np.roll(smooth, 3, 1), (rng.random(smooth.shape) * 255).astype(np.uint8)], -1)
    Image.fromarray(rgb).save(d / "a.png")
    Image.fromarray(smooth).save(d / "b_gray.png")  # 1-channel, like Set14's bridge
    (d / "notes.txt").write_text("ignored")
    return d


class Upsampled(nn.Module):
    """Identity on the bicubic input (a 'perfect bicubic' SR model)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=1)
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x)


def test_metrics_known_values() -> None:
    t = np.full((20, 20), 0.5)
    assert psnr(t + 1 / 255, t) == pytest.approx(10 * np.log10(255**2), abs=1e-9)  # MSE = 1 on 0-255
    assert psnr(t, t) == float("inf")
    assert ssim(t, t) == pytest.approx(1.0)
    p = t.copy()
    p[0, :] = 0  # only the border differs: shaving hides it
    assert psnr(p, t, shave=2) == float("inf")
    with pytest.raises(ConfigError):
        psnr(t, t[:10])


def test_read_y_and_triples(hr_folder: Path) -> None:
    gray = read_y(hr_folder / "b_gray.png")
    raw = np.asarray(Image.open(hr_folder / "b_gray.png"), dtype=np.float64) / 255
    np.testing.assert_allclose(gray, raw)
    y = read_y(hr_folder / "a.png")
    assert y.shape == (61, 74) and 16 / 255 - 1e-9 <= y.min() and y.max() <= 235 / 255 + 1e-9
    im = make_sr_image("a", y, 3)
    assert im.hr.shape == (60, 72) and im.lr.shape == (20, 24) and im.bicubic.shape == (60, 72)


def test_load_sr_dataset_caches_and_validates(hr_folder: Path) -> None:
    ds = load_sr_dataset(hr_folder, 2)
    assert [im.name for im in ds.images] == ["a", "b_gray"] and ds.scale == 2
    assert load_sr_dataset(str(hr_folder), 2) is ds  # cached per (source, scale)
    assert load_sr_dataset(ds, 2) is ds
    with pytest.raises(ConfigError):
        load_sr_dataset(ds, 3)
    with pytest.raises(ConfigError):
        load_sr_dataset(hr_folder, 1)
    with pytest.raises(UnknownNameError, match="photos"):
        load_sr_dataset("photoz", 2)
    with pytest.raises(DataError):
        load_sr_dataset(hr_folder / "missing", 2)


def test_builtin_photos_are_bundled_and_split() -> None:
    sets = builtin_sr_sets()
    assert len(sets["photos"]) >= 12  # 12 scikit-image photos + china/flower from scikit-learn
    assert set(sets["photos-train"]).isdisjoint(sets["photos-val"])
    assert set(sets["photos-train"]) | set(sets["photos-val"]) == set(sets["photos"])


@pytest.mark.parametrize("sr_input", ["lr", "upsampled"])
def test_patches_are_aligned_under_augmentation(sr_input: str) -> None:
    s, rng = 3, np.random.default_rng(0)
    lr = rng.random((30, 40))
    hr = np.kron(lr, np.ones((s, s)))  # nearest-upscaled HR: LR pixel (i, j) == HR block (i, j)
    im = SRImage("x", hr=hr, lr=lr, bicubic=hr)
    x, y = sample_patches((im,), 8, patch=12, scale=s, sr_input=sr_input, rng=rng)  # type: ignore[arg-type]
    assert x.dtype == np.float32
    if sr_input == "lr":
        assert x.shape == (8, 1, 12, 12) and y.shape == (8, 1, 36, 36)
        np.testing.assert_array_equal(x, y[..., ::s, ::s])
    else:
        assert x.shape == y.shape == (8, 1, 12, 12)
        np.testing.assert_array_equal(x, y)


def test_task_protocol_registry_and_shapes(hr_folder: Path) -> None:
    task = TASKS.get("sr")(hr_folder, info=ModelInfo(scale=2, sr_input="lr"), seed=3)
    assert isinstance(task, Task) and task.scale == 2 and task.sr_input == "lr"
    xb, yb = task.training_batches(2)[0]
    assert xb.shape == (16, 1, 16, 16) and yb.shape == (16, 1, 32, 32)
    again = SRTask(hr_folder, info=ModelInfo(task="sr", scale=2, sr_input="lr"), seed=3).training_batches(1)[
        0
    ]
    torch.testing.assert_close(again[0], xb)  # deterministic given the seed
    assert task.calibration_batches(3)[2].shape == (16, 1, 16, 16)
    assert task.example_input(2).shape == (2, 1, 16, 16)
    assert SRTask(hr_folder, patch=20).example_input().shape == (1, 1, 20, 20)
    vdsr_like = ModelInfo(task="sr", input_shape=(1, 1, 41, 41), scale=2, sr_input="upsampled")
    assert SRTask(hr_folder, info=vdsr_like).example_input().shape == (1, 1, 41, 41)
    with pytest.raises(ConfigError, match="does not take"):
        SRTask(hr_folder, workers=4)


def test_evaluate_identity_equals_bicubic(hr_folder: Path) -> None:
    task = SRTask(hr_folder, info=ModelInfo(task="sr", scale=3, sr_input="upsampled"))
    score = task.evaluate(Upsampled())
    assert score.metric == "psnr" and score.n == 2 and score.dataset.endswith("x3")
    assert score.value == pytest.approx(score.metrics["psnr_bicubic"], abs=1e-4)
    assert score.value == pytest.approx(task.evaluate_bicubic().value, abs=1e-4)
    assert 0 < score.metrics["ssim"] <= 1
    assert task.evaluate(Upsampled(), limit=1).n == 1


def test_lr_models_are_cropped_or_rejected(hr_folder: Path) -> None:
    info = ModelInfo(task="sr", scale=2, sr_input="lr")
    task = SRTask(hr_folder, info=info)
    bigger = nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.ZeroPad2d((0, 3, 0, 3)))
    score = task.evaluate(bigger)
    assert np.isfinite(score.value) and score.value > 15
    with pytest.raises(DataError, match="smaller than the HR size"):
        task.evaluate(nn.Identity())
    with pytest.raises(DataError, match="larger than the HR size"):  # a x3 model fed for x2
        task.evaluate(nn.Upsample(scale_factor=3, mode="nearest"))


def test_recipes_by_model_family() -> None:
    class FSRCNNLike(nn.Module):
        pass

    assert recipe_for(FSRCNNLike(), None)[0] == "fsrcnn"
    assert recipe_for(FSRCNNLike(), ModelInfo(pretrained=True))[0] == "fsrcnn"
    assert recipe_for(FSRCNNLike(), ModelInfo(pretrained=False))[0] == "fsrcnn_scratch"
    assert recipe_for(nn.Conv2d(1, 1, 3), ModelInfo(sr_input="upsampled"))[0] == "srcnn"
    assert recipe_for(nn.Conv2d(1, 1, 3), None, "vdsr")[1].patch == 41
    assert {"vdsr", "vdsr_scratch", "srcnn", "fsrcnn", "espcn"} <= set(SR_RECIPES.names())
    with pytest.raises(UnknownNameError):
        recipe_for(nn.Conv2d(1, 1, 3), None, "edsr")


def test_finetune_trains_in_place(hr_folder: Path) -> None:
    task = SRTask(hr_folder, info=ModelInfo(task="sr", scale=2, sr_input="upsampled"), patch=16, batch_size=4)
    model = Upsampled()
    before = model.conv.weight.detach().clone()
    stats = task.finetune(model, 5, lr=1e-3, progress=False)
    assert stats.steps == 5 and np.isfinite(stats.final_loss)
    assert not torch.equal(before, model.conv.weight)
    with pytest.raises(ConfigError, match="unknown SR finetune options"):
        task.finetune(model, 1, bogus=1, progress=False)


def test_bicubic_set5_x2_matches_the_literature() -> None:
    from slimcnn.paths import shared_path

    set5 = shared_path("sr", "Set5")
    if set5 is None:
        pytest.skip("needs ../shared/data/sr/Set5 (benchmark data); absent here")
    score = SRTask(set5, scale=2).evaluate_bicubic()
    assert score.n == 5
    assert score.value == pytest.approx(33.69, abs=0.01)  # README table, MATLAB protocol
    assert score.metrics["ssim"] == pytest.approx(0.9308, abs=0.002)


def test_paper_init_small_deconv_zero_bias() -> None:
    net = nn.Sequential(nn.Conv2d(1, 8, 5, padding=2), nn.PReLU(8), nn.ConvTranspose2d(8, 1, 9, stride=2))
    assert paper_init_(net) is net
    assert float(net[2].weight.detach().std()) < 5e-3 and float(net[0].bias.detach().abs().sum()) == 0.0
    assert float(net[0].weight.detach().std()) == pytest.approx((2 / (8 * 25)) ** 0.5, rel=0.5)
