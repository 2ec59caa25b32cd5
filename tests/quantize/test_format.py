"""The .slim file: bit-identical reload, honest sizes, corruption refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from slimcnn.errors import ConfigError, DataError
from slimcnn.quantize import KMeansQuantSpec, load_packed, quantize_model, read_packed, save_packed
from slimcnn.quantize._model import index_width
from slimcnn.quantize._read import stored_weight_bytes


def _same_state(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"codebook_dtype": "fp16"},
        {"per_channel": True},
        {"method": "lloyd"},
        {"global_prune": 2.0},
    ],
)
@pytest.mark.parametrize("huffman", [False, True])
def test_roundtrip_bit_identical(tiny: nn.Module, tmp_path: Path, options: dict, huffman: bool) -> None:
    prune = None if "global_prune" in options else "conv2=2,fc=3"
    spec = KMeansQuantSpec.parse("conv1=9,conv*=4,fc=2,head=1", prune, **options)
    res = quantize_model(tiny, spec)
    rep = save_packed(tmp_path / "m.slim", res, source="test:tiny", huffman=huffman)
    fresh = type(tiny)()
    loaded = load_packed(tmp_path / "m.slim", model=fresh)
    assert _same_state(loaded.model, res.model)
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(loaded.model(x), res.model.eval()(x))
    assert rep.file_bytes == (tmp_path / "m.slim").stat().st_size
    assert rep.paper_payload_bytes == sum(r.bits * r.kept / 8 for r in res.reports())
    assert rep.payload_bytes == rep.paper_payload_bytes + res.float_bytes  # biases, BN count at float32
    # what the header says the file stores is what was written (it gave the fixed-width bytes of Huffman-coded layers)
    assert stored_weight_bytes(read_packed(tmp_path / "m.slim").header)[0] == rep.weight_bytes
    huffman_coded = [lb for lb in rep.layers if lb.index_coding == "huffman"]
    assert huffman or not huffman_coded
    for lb in huffman_coded:  # only where smaller, its code-length table (k bytes, in index_bytes) included
        q = res.layers[lb.name]
        assert lb.index_bytes < -(-q.report.kept * index_width(q.report.codebook_size) // 8)
    assert (rep.weight_bytes < res.weight_bytes) == bool(huffman_coded)  # res counts fixed-width indices


def test_in_memory_model_uses_rounded_fp16_codebook(tiny: nn.Module) -> None:
    res = quantize_model(tiny, KMeansQuantSpec.parse("8", codebook_dtype="fp16"))
    for q in res.layers.values():
        assert torch.equal(q.codebook, q.codebook.half().float())
    assert torch.equal(res.model.conv1.weight, res.layers["conv1"].decode())


def test_caller_model_untouched_and_tied_weight_once(tiny: nn.Module, tmp_path: Path) -> None:
    before = {k: v.clone() for k, v in tiny.state_dict().items()}
    res = quantize_model(tiny, KMeansQuantSpec.parse("2"))
    assert all(torch.equal(before[k], v) for k, v in tiny.state_dict().items())
    assert "tied" not in res.layers and "head" in res.layers
    save_packed(tmp_path / "m.slim", res, source="test:tiny")
    header = read_packed(tmp_path / "m.slim").header
    assert header["tensors"]["tied.weight"] == {"kind": "alias", "of": "head.weight"}


def test_unmatched_pattern_is_an_error(tiny: nn.Module) -> None:
    with pytest.raises(ConfigError, match="matches no conv/linear layer"):
        quantize_model(tiny, KMeansQuantSpec.parse("conv1=8,fc9=2"))


def _write(tiny: nn.Module, path: Path) -> bytes:
    res = quantize_model(tiny, KMeansQuantSpec.parse("4", prune="fc=2"))
    save_packed(path, res, source="test:tiny")
    return path.read_bytes()


@pytest.mark.parametrize("where", ["header", "payload", "end"])
def test_flipped_byte_refused(tiny: nn.Module, tmp_path: Path, where: str) -> None:
    blob = bytearray(_write(tiny, tmp_path / "m.slim"))
    pos = {"header": 40, "payload": len(blob) // 2, "end": len(blob) - 1}[where]
    blob[pos] ^= 0x01
    (tmp_path / "bad.slim").write_bytes(bytes(blob))
    with pytest.raises(DataError, match="corrupt") as e:
        read_packed(tmp_path / "bad.slim")
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("keep", [4, 30, -1])
def test_truncated_refused(tiny: nn.Module, tmp_path: Path, keep: int) -> None:
    blob = _write(tiny, tmp_path / "m.slim")
    (tmp_path / "cut.slim").write_bytes(blob[:keep])
    with pytest.raises(DataError, match="truncated|bad magic"):
        read_packed(tmp_path / "cut.slim")


def test_not_a_slim_file(tmp_path: Path) -> None:
    (tmp_path / "x.slim").write_bytes(b"PK\x03\x04" + b"\x00" * 100)
    with pytest.raises(DataError, match="not a slimcnn packed file"):
        read_packed(tmp_path / "x.slim")


def test_zoo_model_rebuilds_from_source_and_file_loader(tmp_path: Path) -> None:
    from slimcnn.models import load_model

    base = load_model("slimcnn:lenet5")
    res = quantize_model(base.model, KMeansQuantSpec.parse("conv*=6,fc*=3", prune="fc*=2"))
    save_packed(tmp_path / "m.slim", res, source=base.source, info=base.info)
    loaded = load_packed(tmp_path / "m.slim")
    assert loaded.source == "slimcnn:lenet5"
    assert _same_state(loaded.model, res.model)
    via_file = load_model(f"file:{tmp_path / 'm.slim'}")
    assert _same_state(via_file.model, res.model)
    assert via_file.info.input_shape == base.info.input_shape
