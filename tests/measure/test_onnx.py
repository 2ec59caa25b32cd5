"""export_onnx: both exporters, ORT parity on SR-style ops, divergence error, atomic writes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from slimcnn.errors import ConfigError
from slimcnn.measure import ExportError, export_onnx


class _SRBlock(nn.Module):
    """Grouped conv, ConvTranspose (FSRCNN) and pixel shuffle (ESPCN), two outputs."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Conv2d(1, 16, 3, padding=1)
        self.group = nn.Conv2d(16, 16, 3, padding=1, groups=4)
        self.deconv = nn.ConvTranspose2d(16, 1, 9, stride=3, padding=4, output_padding=2)
        self.sub = nn.Conv2d(16, 4, 3, padding=1)
        self.shuffle = nn.PixelShuffle(2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.group(torch.relu(self.head(x)))
        return self.deconv(y), self.shuffle(self.sub(y))


@pytest.mark.parametrize(
    "exporter", ["auto", "torchscript", pytest.param("dynamo", marks=pytest.mark.slow)]  # dynamo: ~10 s first call
)
def test_export_parity_sr_ops(tmp_path: Path, exporter: str) -> None:
    onnx = pytest.importorskip("onnx")
    path = export_onnx(_SRBlock(), torch.randn(1, 1, 12, 12), tmp_path / "m.onnx", exporter=exporter)  # type: ignore[arg-type]
    assert path == tmp_path / "m.onnx" and path.stat().st_size > 0
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    ops = {n.op_type for n in proto.graph.node}
    assert "ConvTranspose" in ops and len(proto.graph.output) == 2
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left


def test_divergence_raises_and_keeps_existing_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import slimcnn.measure._onnx as mod

    target = tmp_path / "m.onnx"
    target.write_bytes(b"old")
    monkeypatch.setattr(mod, "parity", lambda *a, **k: (0.5, 1.0))
    with pytest.raises(ExportError, match=r"max abs diff 0\.5"):
        export_onnx(nn.Conv2d(1, 1, 3), torch.randn(1, 1, 8, 8), target)
    assert target.read_bytes() == b"old"


def test_nan_output_counts_as_divergence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import numpy as np

    import slimcnn.measure._onnx as mod

    class _Sess:
        def get_inputs(self):  # noqa: ANN202
            return [type("I", (), {"name": "input0"})()]

        def run(self, _names, _feed):  # noqa: ANN001, ANN202
            return [np.full((1, 1, 6, 6), np.nan, dtype=np.float32)]

    monkeypatch.setattr(mod, "ort_session", lambda *a, **k: _Sess())
    with pytest.raises(ExportError, match="diverges"):
        export_onnx(nn.Conv2d(1, 1, 3), torch.randn(1, 1, 8, 8), tmp_path / "m.onnx")


def test_list_input_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="tensor or a tuple"):
        export_onnx(nn.Identity(), [torch.randn(3, 4, 4)], tmp_path / "m.onnx")
    with pytest.raises(ConfigError, match="exporter must be"):
        export_onnx(nn.Identity(), torch.randn(1), tmp_path / "m.onnx", exporter="tflite")  # type: ignore[arg-type]


def test_training_mode_restored(tmp_path: Path) -> None:
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))
    model.train()
    export_onnx(model, torch.randn(1, 1, 8, 8), tmp_path / "m.onnx")
    assert model.training and model[1].training


class _FixedSize(nn.Module):
    """Image to image, but its code hard-codes the example's size (a graph that holds at 12x12 only)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).reshape(1, 1, 12, 12)


def test_any_size_file_runs_other_batches_and_sizes_or_says_it_cannot(tmp_path: Path) -> None:
    import onnxruntime as ort

    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.PixelShuffle(2))
    path = export_onnx(net, torch.randn(1, 1, 12, 12), tmp_path / "any.onnx", any_size=True)
    x = torch.randn(3, 1, 20, 28)
    (got,) = ort.InferenceSession(str(path)).run(None, {"input0": x.numpy()})
    assert got.shape == (3, 1, 40, 56) and torch.allclose(torch.from_numpy(got), net(x), atol=1e-5)
    with pytest.raises(ExportError, match=r"does not run on input \(2, 1, 20, 28\)"):
        export_onnx(_FixedSize(), torch.randn(1, 1, 12, 12), tmp_path / "fixed.onnx", any_size=True)
    assert not (tmp_path / "fixed.onnx").exists()
    with pytest.raises(ConfigError, match="TorchScript"):
        export_onnx(net, torch.randn(1, 1, 12, 12), tmp_path / "d.onnx", any_size=True, exporter="dynamo")


def test_a_run_folders_sr_file_falls_back_to_the_examples_size_with_a_warning(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import onnx

    from slimcnn.run._measure import write_model_onnx

    with caplog.at_level("WARNING"):
        write_model_onnx(_FixedSize(), torch.randn(1, 1, 12, 12), tmp_path / "model.onnx", any_size=True)
    dims = onnx.load(str(tmp_path / "model.onnx")).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims] == [1, 1, 12, 12]
    assert "model.onnx takes only 1x1x12x12 inputs" in caplog.text
