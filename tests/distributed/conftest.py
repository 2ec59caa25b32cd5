"""torchrun tests: the launcher's log folders (``torchelastic_*``) land in the test's own tmp_path, not /tmp."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _launcher_tmpdir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # the tests hand os.environ to torchrun's subprocess; tempfile in this process cached its folder already
    monkeypatch.setenv("TMPDIR", str(tmp_path))
