"""``--help`` reads as prose: docstrings wrapped at the source's width are reflowed to the terminal's."""

from __future__ import annotations

import subprocess
import sys

import pytest

from slimcnn.cli import main


def test_help_paragraphs_are_reflowed_not_broken_where_the_source_wraps(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Rich markup mode kept every line break of a docstring: `compress --help` printed "each stage gets the /
    budget that is left. With / int8, model.onnx ..." on three short lines, however wide the terminal."""
    monkeypatch.setenv("COLUMNS", "300")
    assert main(["compress", "--help"]) == 0
    line = next(t for t in capsys.readouterr().out.splitlines() if "each stage gets the" in t)
    assert "each stage gets the budget that is left. With int8, model.onnx is the int8 model" in line


@pytest.mark.parametrize("argv", [["--help"], ["--version"], ["prune", "--help"], ["prune", "slimcnn:lenet5", "--sram", "4MB"]])
def test_help_version_and_usage_errors_do_not_import_torch(argv: list[str]) -> None:
    """Importing torch, torchvision and ONNX Runtime took ~4 s of the ~5 s `slimcnn --help` took on the dev VM; a
    command loads them first (Ctrl-C deferred), --help, --version and a usage error never need them."""
    done = _cli_in_a_fresh_process(argv, ("torch", "torchvision", "onnxruntime", "numpy"))
    assert done.returncode in (0, 2), done.stderr
    assert "HEAVY []" in done.stderr, done.stderr[-500:]


def _cli_in_a_fresh_process(argv: list[str], heavy: tuple[str, ...]) -> subprocess.CompletedProcess[str]:
    """``slimcnn ARGV`` in a new interpreter that ends by printing ``HEAVY [...]``: which of ``heavy`` it imported."""
    code = ("import sys; from slimcnn.cli import main; rc = main(sys.argv[1:]); "
            f"heavy = sorted(m for m in {heavy!r} if m in sys.modules); print('HEAVY', heavy, file=sys.stderr); "
            "sys.exit(rc)")
    return subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=120)


def test_a_command_imports_torch_first_with_ctrl_c_deferred(monkeypatch: pytest.MonkeyPatch, tmp_path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """A Ctrl-C that arrives while a command loads torch is acted on after the import (which runs to its end): one
    line, exit 130."""
    import slimcnn.cli as cli

    (tmp_path / "slimcnn_test_interrupting_import.py").write_text(
        "import os, signal, sys\n"
        "os.kill(os.getpid(), signal.SIGINT)\n"
        "sys.modules[__name__].finished = True  # not reached when the interrupt is raised inside the import\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(cli, "_COMMAND_IMPORTS", (*cli._COMMAND_IMPORTS, "slimcnn_test_interrupting_import"))
    try:
        assert main(["analyze", "slimcnn:lenet5", "--no-latency"]) == 130
        assert sys.modules["slimcnn_test_interrupting_import"].finished
    finally:
        sys.modules.pop("slimcnn_test_interrupting_import", None)
    assert capsys.readouterr().err.strip().splitlines()[-1] == "interrupted: nothing was written"


def test_report_re_renders_a_run_without_importing_torch(tmp_path) -> None:
    """`slimcnn report DIR` renders from the folder's JSON files alone: it skips the commands' torch imports (~1.5 s
    instead of ~5 s on the dev VM)."""
    out = tmp_path / "run"
    assert main(["prune", "slimcnn:tiny_cnn", "--ratio", "0.5", "--no-latency", "--out", str(out)]) == 0
    (out / "report.md").unlink()
    done = _cli_in_a_fresh_process(["report", str(out)], ("torch", "torchvision", "onnxruntime"))  # matplotlib: numpy
    assert done.returncode == 0, done.stderr
    assert "HEAVY []" in done.stderr and (out / "report.md").is_file()
