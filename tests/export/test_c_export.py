"""C export: the reference C decoder, compiled with the system compiler, is bit-exact vs the Python decoder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from slimcnn.errors import ConfigError
from slimcnn.export import pack_layers, slim_layers, write_c
from slimcnn.models import load_model
from slimcnn.quantize import KMeansQuantSpec, quantize_model, read_packed, save_packed

from ._ctools import compile_and_decode


def _check_bit_exact(folder: Path, res, slim_sd: dict[str, torch.Tensor] | None = None) -> dict[str, str]:  # type: ignore[no-untyped-def]
    layers = pack_layers(res.layers)
    sd = res.model.state_dict()
    info = write_c(folder, layers, sd)
    kernels = list(info.kernel_weights)
    raw = [k for k, v in sd.items() if k not in {f"{n}.weight" for n in layers} | set(kernels) and v.is_floating_point()]
    raw = kernels + raw  # decoded in this order: k-means layers, kernel-sparse weights, float tensors
    sizes = [p.numel for p in layers.values()] + [sd[k].numel() for k in raw]
    got = compile_and_decode(folder, sizes)
    assert info.kmeans_layers == len(layers) and info.raw_tensors == len(raw) - len(kernels)
    for (name, p), arr in zip(layers.items(), got, strict=False):
        ref = res.layers[name].decode().numpy().reshape(-1)  # the Python decoder (quantize.dequantize)
        assert arr.view(np.uint32).tobytes() == ref.view(np.uint32).tobytes(), name  # bit-exact, signs of zero too
        assert np.array_equal(p.decode().numpy().reshape(-1), ref)
        if slim_sd is not None:
            assert np.array_equal(slim_sd[f"{name}.weight"].numpy().reshape(-1), arr), name
    for key, arr in zip(raw, got[len(layers):], strict=True):
        assert arr.view(np.uint32).tobytes() == sd[key].float().numpy().reshape(-1).view(np.uint32).tobytes(), key
    return {n: p.mask_kind for n, p in layers.items()}


def test_lenet5_c_decoder_bit_exact(tmp_path: Path) -> None:
    lenet = load_model("slimcnn:lenet5", seed=0)
    # every layout: per-layer/per-channel codebooks, 1..9-bit indices, no mask, bitmap and relative masks
    spec = KMeansQuantSpec.parse("conv1=3,conv2=5,fc1=1,fc2=9,fc3=4", "conv2=2,fc1=12,fc2=1.5")
    res = quantize_model(lenet.model, spec)
    kinds = _check_bit_exact(tmp_path / "a", res)
    assert set(kinds.values()) == {"none", "bitmap", "relative"}, kinds
    per_ch = quantize_model(lenet.model, KMeansQuantSpec.parse("*=4", "fc*=3", per_channel=True, codebook_dtype="fp16"))
    _check_bit_exact(tmp_path / "b", per_ch)


def test_c_export_from_slim_file_matches_packed_decoder(tmp_path: Path) -> None:
    lenet = load_model("slimcnn:lenet5", seed=1)
    res = quantize_model(lenet.model, KMeansQuantSpec.parse("*=3", "conv2=4,fc*=2"))
    save_packed(tmp_path / "m.slim", res, source=lenet.source, info=lenet.info, huffman=True)
    layers = slim_layers(tmp_path / "m.slim")  # Huffman indices re-coded at fixed width
    sd = read_packed(tmp_path / "m.slim").state_dict
    for name, p in layers.items():
        assert torch.equal(p.decode(), sd[f"{name}.weight"])
    _check_bit_exact(tmp_path / "c", res, slim_sd=sd)


@pytest.mark.parametrize(("removed", "coding"), [(0.1, "bitmap"), (0.97, "relative")])
def test_a_kernel_pruned_weight_left_unshared_is_stored_as_its_kept_kernels(removed: float, coding: str,
                                                                            tmp_path: Path) -> None:
    """A weight k-means does not share, with whole kernels removed, is a slim_kernels_t (kept kernels + keep mask,
    as model.slim stores it; it was a dense float array), decoded bit-exactly by slim_decode_kernels."""
    lenet = load_model("slimcnn:lenet5", seed=0)
    w = lenet.model.conv2.weight
    gone = torch.rand(w.shape[:2], generator=torch.Generator().manual_seed(0)) < removed
    with torch.no_grad():
        w[gone] = 0.0
    res = quantize_model(lenet.model, KMeansQuantSpec.parse("conv1=4,fc*=3"))
    info = write_c(tmp_path / "k", pack_layers(res.layers), res.model.state_dict())
    assert info.kernel_weights == ("conv2.weight",)
    assert f"SLIM_MASK_{coding.upper()}" in (tmp_path / "k" / "slim_model.c").read_text().split("slim_model_conv2_weight =")[1]
    kept = int((~gone).sum())
    assert kept * 25 * 4 < info.kernel_bytes < kept * 25 * 4 + 16  # the kept kernels and a small mask
    assert info.array_bytes == info.kmeans_bytes + info.kernel_bytes + info.raw_bytes
    _check_bit_exact(tmp_path / "c", res)


def test_resnet20_c_decoder_bit_exact(tmp_path: Path) -> None:
    net = load_model("slimcnn:resnet20", seed=0)  # the shared weights when present, else seeded random ones
    res = quantize_model(net.model, KMeansQuantSpec.parse("*=4,linear=6", "layer3*=4"))
    kinds = _check_bit_exact(tmp_path, res)
    assert len(kinds) == 20 and "none" in kinds.values() and set(kinds.values()) - {"none"}


def test_c_prefix_must_be_identifier(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="C identifier"):
        write_c(tmp_path, {}, {}, prefix="my-model")
