"""Unreadable images: what a person reads, and no other library's noise before it."""

from __future__ import annotations

import io

import pytest
from PIL import Image, UnidentifiedImageError

from slimcnn._io import open_image, unreadable_reason


def test_pil_noise_becomes_a_reason_and_real_messages_stay() -> None:
    # what Image.open raises on bytes that are no image (ultralytics, once imported, patches Image.open to raise
    # its plugin's ImportError instead: the suite imports it, so both are made here, not by opening a file)
    raw = UnidentifiedImageError("cannot identify image file <_io.BytesIO object at 0x7f688c077060>")
    assert unreadable_reason(raw) == "not an image file PIL can read"
    # ultralytics patches Image.open to try a HEIF plugin it may not have: the same unreadable file
    assert unreadable_reason(ModuleNotFoundError("No module named 'pi_heif'")) == "not an image file PIL can read"
    assert unreadable_reason(OSError("image file is truncated (3 bytes not processed)\nmore")) == (
        "image file is truncated (3 bytes not processed)")
    assert unreadable_reason(OSError()) == "OSError"


def test_open_image_bypasses_ultralytics_patched_open(capfd) -> None:
    # ultralytics' Image.open tries a pip install of pi-heif (logging two lines first) for a file PIL cannot
    # identify; slimcnn's reads must raise PIL's own error without a word of that
    pytest.importorskip("ultralytics.utils.patches", reason="ultralytics is an optional extra")
    assert Image.open.__module__ != "PIL.Image", "ultralytics no longer patches Image.open: drop the bypass"
    with pytest.raises(UnidentifiedImageError):
        open_image(io.BytesIO(b"not an image"))
    out, err = capfd.readouterr()
    assert "AutoUpdate" not in out + err
    png = io.BytesIO()
    Image.new("RGB", (3, 2)).save(png, format="PNG")
    with open_image(io.BytesIO(png.getvalue())) as im:
        assert im.size == (3, 2)
