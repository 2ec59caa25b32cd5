"""Shared fixtures: seeded RNG, few threads, and a skip helper for ../shared/data."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from slimcnn.paths import shared_path


@pytest.fixture(autouse=True)
def _seed_and_threads() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _uncontended(monkeypatch: pytest.MonkeyPatch) -> None:
    """Layer timings are cached whatever the CI machine's load (tests that need load set it themselves)."""
    import slimcnn.measure._layers as layers

    monkeypatch.setattr(layers, "_contended", lambda: False)


def need_shared(*parts: str) -> Path:
    """Return ``../shared/data/<parts>`` or skip the test with a clear reason."""
    p = shared_path(*parts)
    if p is None:
        pytest.skip(f"needs the benchmark data {'/'.join(parts)} under $SLIMCNN_DATA or ../shared/data (absent here)")
    return p
