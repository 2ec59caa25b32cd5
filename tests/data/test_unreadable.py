"""unreadable_reason: what a person reads when an image does not decode."""

from __future__ import annotations

import io

import pytest
from PIL import Image, UnidentifiedImageError

from slimcnn._io import unreadable_reason


def test_pil_noise_becomes_a_reason_and_real_messages_stay() -> None:
    with pytest.raises(UnidentifiedImageError) as raw:
        Image.open(io.BytesIO(b"GIF89a"))
    assert "_io.BytesIO object at" in str(raw.value)
    assert unreadable_reason(raw.value) == "not an image file PIL can read"
    # ultralytics patches Image.open to try a HEIF plugin it may not have: the same unreadable file
    assert unreadable_reason(ModuleNotFoundError("No module named 'pi_heif'")) == "not an image file PIL can read"
    assert unreadable_reason(OSError("image file is truncated (3 bytes not processed)\nmore")) == (
        "image file is truncated (3 bytes not processed)")
    assert unreadable_reason(OSError()) == "OSError"
