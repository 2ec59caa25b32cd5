"""Two real runs every report test reads: a prune of tiny_cnn (no budget) and a small LeNet-5 search."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from slimcnn.cli import main


@pytest.fixture(scope="session")
def prune_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report") / "prune"
    assert main(["prune", "slimcnn:tiny_cnn", "--ratio", "0.3", "--no-latency", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="session")
def search_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report") / "search"
    assert main(["search", "slimcnn:lenet5", "--task", "classification", "--data", "digits", "--limit", "100",
                 "--amounts", "0.5", "--max-drop", "5", "--macs", "0.9x", "--out", str(out)]) == 0
    return out


@pytest.fixture
def copy_run(tmp_path: Path) -> Callable[[Path], Path]:
    """Copy a run folder into the test's tmp_path (for tests that change it)."""
    return lambda src: Path(shutil.copytree(src, tmp_path / src.name))
