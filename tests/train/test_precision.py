"""fit_'s mixed precision (CPU bf16 autocast; fp16 with a GradScaler), channels_last and its progress phase."""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from slimcnn import progress
from slimcnn.errors import UnknownNameError
from slimcnn.train import fit_


def _data() -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 3, 8, 8, generator=g)
    y = (x[:, 0].mean((1, 2)) > 0).long()
    return [(x[i : i + 16], y[i : i + 16]) for i in range(0, 64, 16)]


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2))


def _loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    out = model(batch[0])
    _loss.dtypes.add(out.dtype)  # type: ignore[attr-defined]
    return F.cross_entropy(out.float(), batch[1])


_loss.dtypes = set()  # type: ignore[attr-defined]


def _eval_loss(model: nn.Module) -> float:
    with torch.no_grad():
        return sum(float(F.cross_entropy(model(x), y)) for x, y in _data()) / 4


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_autocast_trains_in_low_precision_and_keeps_fp32_weights(amp: str) -> None:
    model = _net()
    before = _eval_loss(model)
    _loss.dtypes.clear()  # type: ignore[attr-defined]
    stats = fit_(model, _data(), _loss, steps=40, lr=0.1, amp=amp, progress=False)
    assert _loss.dtypes == {torch.bfloat16 if amp == "bf16" else torch.float16}  # type: ignore[attr-defined]
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert stats.steps == 40 and _eval_loss(model) < 0.8 * before


def test_fp16_checkpoint_keeps_the_grad_scaler(tmp_path) -> None:  # noqa: ANN001
    ckpt = tmp_path / "ck.pt"
    fit_(_net(), _data(), _loss, steps=3, lr=0.1, amp="fp16", checkpoint=ckpt, progress=False)
    assert "scale" in torch.load(ckpt, weights_only=True)["scaler"]


def test_unknown_amp_is_a_named_error() -> None:
    with pytest.raises(UnknownNameError, match="fp8"):
        fit_(_net(), _data(), _loss, steps=1, lr=0.1, amp="fp8")


def test_channels_last_trains_the_same_and_returns_a_contiguous_model() -> None:
    plain, cl = _net(), _net()
    fit_(plain, _data(), _loss, steps=10, lr=0.1, progress=False)
    fit_(cl, _data(), _loss, steps=10, lr=0.1, channels_last=True, progress=False)
    assert cl[0].weight.is_contiguous()
    for a, b in zip(plain.state_dict().values(), cl.state_dict().values(), strict=True):
        assert torch.allclose(a.float(), b.float(), atol=1e-5)


def test_a_long_fine_tune_logs_its_phase(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(progress, "MIN_SECONDS", 0.0)
    with caplog.at_level(logging.INFO, logger="slimcnn.progress"):
        fit_(_net(), _data(), _loss, steps=5, lr=0.1)
        fit_(_net(), _data(), _loss, steps=5, lr=0.1, progress=False)
    lines = [r.getMessage() for r in caplog.records if r.name == "slimcnn.progress"]
    assert len(lines) == 1 and lines[0].startswith("fine-tune: 5 steps [")


def test_a_long_evaluation_logs_its_phase(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    from slimcnn.models import load_model
    from slimcnn.tasks import make_task

    monkeypatch.setattr(progress, "MIN_SECONDS", 0.0)
    loaded = load_model("slimcnn:lenet5")
    task = make_task("classification", "digits", info=loaded.info)
    with caplog.at_level(logging.INFO, logger="slimcnn.progress"):
        task.evaluate(loaded.model, limit=100)
    lines = [r.getMessage() for r in caplog.records if r.name == "slimcnn.progress"]
    assert len(lines) == 1 and lines[0].startswith("evaluate digits:val: 100 images [")


def test_bf16_evaluation_agrees_with_fp32_on_most_images() -> None:
    from slimcnn.models import load_model
    from slimcnn.tasks.classification import ClassificationTask

    loaded = load_model("slimcnn:lenet5")
    fp32 = ClassificationTask("digits", info=loaded.info).evaluate(loaded.model)
    bf16 = ClassificationTask("digits", info=loaded.info, amp="bf16").evaluate(loaded.model)
    assert abs(fp32.value - bf16.value) < 5.0 and bf16.n == fp32.n == 360
