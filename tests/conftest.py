"""Shared fixtures: seeded RNG, few threads, and a skip helper for ../shared/data."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from slimcnn.paths import shared_path

torch.set_num_threads(1)  # module- and session-scoped fixtures run before any test's own setup


@pytest.fixture(autouse=True)
def _seed_and_threads() -> Iterator[None]:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    yield
    # a test that sets its own thread count must not hand it to the next fixture (results would hang on test order)
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


@pytest.fixture(scope="session")
def trained_lenet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """LeNet-5 trained 120 steps on the built-in digits (~99 % top-1), saved as a file: model."""
    import dataclasses

    from slimcnn.models import load_model, save_model
    from slimcnn.tasks import make_task

    torch.manual_seed(0)
    loaded = load_model("slimcnn:lenet5")
    task = make_task("classification", "digits", info=loaded.info)
    task.finetune(loaded.model, 120, lr=0.05, batch_size=64, progress=False)
    loaded.info = dataclasses.replace(loaded.info, pretrained=True, notes=())
    path = tmp_path_factory.mktemp("lenet") / "model.pt"
    save_model(loaded, path)
    return path
