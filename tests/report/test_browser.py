"""report.html renders in a real browser (headless Chromium) with every image loaded."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"

# Appended to a copy of the page: once everything has loaded, write each <img>'s natural width into the DOM
# (0 for an image the browser could not decode), which --dump-dom then prints.
_PROBE = ("<script>window.addEventListener('load',function(){var im=Array.from(document.images);"
          "var p=document.createElement('pre');p.id='imgcheck';p.textContent=JSON.stringify({n:im.length,"
          "widths:im.map(function(i){return i.complete?i.naturalWidth:-1})});document.body.appendChild(p);});"
          "</script>")


def _chromium() -> str:
    """The Chromium binary, installed with apt-get (Debian's ``chromium``) when missing and possible, else skip."""
    if os.access(CHROMIUM, os.X_OK):
        return CHROMIUM
    apt = shutil.which("apt-get")
    if apt is None or os.geteuid() != 0:
        pytest.skip(f"needs {CHROMIUM} (apt-get install -y chromium): absent, and this user cannot install it")
    proc = subprocess.run([apt, "install", "-y", "--no-install-recommends", "chromium"], capture_output=True,
                          text=True, timeout=900, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    if proc.returncode != 0 or not os.access(CHROMIUM, os.X_OK):
        tail = " ".join((proc.stderr or proc.stdout).split()[-20:])
        pytest.skip(f"needs {CHROMIUM}: apt-get install chromium failed here ({tail})")
    return CHROMIUM


def _image_widths(browser: str, page: Path, profile: Path) -> dict[str, object]:
    probe = page.with_name("probe.html")
    probe.write_text(page.read_text().replace("</body>", _PROBE + "</body>"))
    proc = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                           f"--user-data-dir={profile}", "--virtual-time-budget=10000", "--dump-dom",
                           probe.as_uri()], capture_output=True, text=True, timeout=120)
    m = re.search(r'<pre id="imgcheck">([^<]*)</pre>', proc.stdout)
    assert m, f"the page's script did not run (rc {proc.returncode}): {proc.stderr[-800:]}"
    return dict(json.loads(m.group(1)))


@pytest.mark.slow
@pytest.mark.parametrize("run", ["prune_run", "search_run"])
def test_report_html_loads_every_image_in_chromium(run: str, request: pytest.FixtureRequest,
                                                    tmp_path: Path) -> None:
    browser = _chromium()
    folder: Path = request.getfixturevalue(run)
    page = Path(shutil.copy(folder / "report.html", tmp_path / "report.html"))  # alone: nothing beside it to load
    got = _image_widths(browser, page, tmp_path / "profile")
    expected = (folder / "report.md").read_text().count("![")
    assert got["n"] == expected > 0
    assert all(isinstance(w, int) and w > 0 for w in got["widths"]), got  # type: ignore[union-attr]


@pytest.mark.slow
def test_the_probe_sees_a_broken_image(tmp_path: Path) -> None:
    """Guard: a page whose image cannot decode reports width 0, so the test above can fail."""
    browser = _chromium()
    page = tmp_path / "report.html"
    page.write_text('<!DOCTYPE html><html><body><img src="data:image/png;base64,iVBORw0KGgoAAAA="></body></html>')
    assert _image_widths(browser, page, tmp_path / "profile") == {"n": 1, "widths": [0]}
