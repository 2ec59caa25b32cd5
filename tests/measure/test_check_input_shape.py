"""``check_input_shape``: an --input too large to allocate is a one-line ConfigError, not a MemoryError."""

from __future__ import annotations

import pytest

from slimcnn.errors import ConfigError
from slimcnn.measure import MAX_INPUT_ELEMENTS, check_input_shape


def test_realistic_shapes_pass_through() -> None:
    assert check_input_shape([1, 3, 224, 224]) == (1, 3, 224, 224)
    assert check_input_shape((1, 1, 2**14, 2**14)) == (1, 1, 16384, 16384)  # exactly the limit
    assert MAX_INPUT_ELEMENTS == 2**28


@pytest.mark.parametrize(("shape", "match"), [
    ((1, 1, 100000, 100000), r"--input 1x1x100000x100000 has 10,000,000,000 elements \(37.3 GiB as float32\)"),
    ((1, 1, 2**14, 2**14 + 1), "more than the 268,435,456 slimcnn allocates"),
    ((1, 0, 8, 8), "positive dimensions"),
])
def test_absurd_shapes_are_one_line_config_errors(shape: tuple[int, ...], match: str) -> None:
    with pytest.raises(ConfigError, match=match) as e:
        check_input_shape(shape)
    assert "\n" not in str(e.value)


def test_limit_is_a_parameter() -> None:
    with pytest.raises(ConfigError, match="1,000"):
        check_input_shape((1, 3, 32, 32), max_elements=1000)
