"""unreadable_reason: what a person reads when an image does not decode."""

from __future__ import annotations

from PIL import UnidentifiedImageError

from slimcnn._io import unreadable_reason


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
