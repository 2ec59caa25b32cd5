"""Kill tests: SIGINT or SIGKILL at any moment leaves the previous --out intact, and a re-run resumes
(or starts clean) to the same result as an uninterrupted run."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from slimcnn.models import load_model

MODEL_FILES = {"model.pt", "model.onnx", "model.slim", "plan.json"}
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _default_sigint() -> None:
    """In the child: SIGINT unblocked and at its default, whatever the test process inherited. A suite started
    in the background of a non-interactive shell (``pytest &``, nohup) runs with SIGINT ignored, as POSIX has
    such shells do, and a child inherits that: it then ignored the test's Ctrl-C and ran to the end."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start(args: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "slimcnn", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=ENV, preexec_fn=_default_sigint)


def _run(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "slimcnn", *args], capture_output=True, text=True, env=ENV,
                          timeout=600)


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _complete(folder: Path) -> bool:
    """A whole run's output: every artifact ``result.json`` lists is there with its recorded sha256.

    A kill that lands after the run committed ``--out`` (during interpreter shutdown, a few hundred ms with torch
    loaded) leaves a complete new run and a non-zero exit; on a fast machine the later kills of these tests do."""
    import hashlib

    try:
        artifacts = json.loads((folder / "result.json").read_text())["artifacts"]
    except (OSError, ValueError, KeyError):
        return False
    return all((folder / a["path"]).is_file()
               and hashlib.sha256((folder / a["path"]).read_bytes()).hexdigest() == a["sha256"] for a in artifacts)


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_model(f"file:{folder / 'model.pt'}").model.state_dict()


def _same_weights(a: Path, b: Path) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


def _stage(out: Path) -> Path:
    return out.parent / f".{out.name}.slimcnn-partial"


def _wait_for(path: Path, proc: subprocess.Popen[str], timeout: float = 120) -> None:
    t0 = time.monotonic()
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() - t0 < timeout, f"{path} never appeared"
        time.sleep(0.05)


TRAIN = ["train", "slimcnn:lenet5", "--task", "classification", "--data", "digits", "--steps", "240",
         "--checkpoint-every", "30", "--batch-size", "32", "--lr", "0.05", "--limit", "200"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("train") / "ref"
    done = _run([*TRAIN, "--out", str(out)])
    assert done.returncode == 0, done.stderr
    return out


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_train_killed_mid_run_keeps_out_and_resumes_to_the_same_model(sig: signal.Signals, uninterrupted: Path,
                                                                      tmp_path: Path) -> None:
    out = tmp_path / "run"
    first = _run([*TRAIN, "--out", str(out)])  # a previous, complete run of the same command
    assert first.returncode == 0, first.stderr
    previous = _snapshot(out)
    proc = _start([*TRAIN, "--out", str(out)])
    _wait_for(_stage(out) / "checkpoint.pt", proc)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0, "the run finished before the signal landed (nothing was interrupted)"
    assert _snapshot(out) == previous  # the previous --out exactly as it was
    if sig == signal.SIGINT:
        assert proc.returncode == 130
        last = err.strip().splitlines()[-1]
        assert last.startswith("interrupted: kept checkpoint.pt") and "re-run the same command" in last
        assert "Traceback" not in err
    again = _run([*TRAIN, "--out", str(out)])
    assert again.returncode == 0, again.stderr
    assert "resuming: step" in again.stderr and "of 240" in again.stderr
    assert not _stage(out).exists()
    _same_weights(out, uninterrupted)


def test_killed_at_random_moments_then_rerun_equals_uninterrupted(uninterrupted: Path, tmp_path: Path) -> None:
    rng = random.Random(12)
    out = tmp_path / "run"
    for delay in sorted(rng.uniform(0.2, 6.0) for _ in range(3)):
        proc = _start([*TRAIN, "--out", str(out)])
        time.sleep(delay)
        proc.send_signal(rng.choice([signal.SIGINT, signal.SIGKILL]))
        _, err = proc.communicate(timeout=120)
        assert "Traceback" not in err
        assert not out.exists() or proc.returncode == 0 or _complete(out)  # never a half-written --out
    again = _run([*TRAIN, "--out", str(out)])
    assert again.returncode == 0, again.stderr
    _same_weights(out, uninterrupted)


@pytest.mark.parametrize("command", [
    ["prune", "slimcnn:resnet20", "--ratio", "0.4", "--no-latency"],
    ["quantize", "slimcnn:resnet20", "--bits", "4"],
    ["search", "slimcnn:lenet5", "--task", "classification", "--data", "digits", "--max-drop", "5", "--macs", "0.9x",
     "--limit", "100", "--amounts", "0.5"],
])
def test_other_commands_killed_leave_the_previous_out(command: list[str], tmp_path: Path) -> None:
    out = tmp_path / "run"
    first = _run([*command, "--out", str(out)])
    assert first.returncode == 0, first.stderr
    previous = _snapshot(out)
    first_shas = json.loads(previous["result.json"])["artifacts"]
    for delay, sig in ((0.5, signal.SIGKILL), (2.5, signal.SIGINT), (4.0, signal.SIGKILL)):
        proc = _start([*command, "--out", str(out)])
        time.sleep(delay)
        proc.send_signal(sig)
        proc.communicate(timeout=120)
        now = _snapshot(out)
        assert now == previous or proc.returncode == 0 or _complete(out)  # the previous run, or a whole new one
        previous = now
    again = _run([*command, "--out", str(out)])
    assert again.returncode == 0, again.stderr
    assert not _stage(out).exists()
    # the models and the plan are the same bytes as the first run's (other files carry timings)
    shas = {x["path"]: x["sha256"] for x in first_shas if x["path"] in MODEL_FILES}
    again_shas = json.loads((out / "result.json").read_text())["artifacts"]
    assert {x["path"]: x["sha256"] for x in again_shas if x["path"] in MODEL_FILES} == shas and shas


def test_ctrl_c_after_the_command_returned_does_not_kill_the_exit(monkeypatch) -> None:
    """A finished run exits with its own code: Ctrl-C during interpreter shutdown once ended it as signal -2."""
    import slimcnn.cli
    from slimcnn import _entry

    monkeypatch.setattr(slimcnn.cli, "main", lambda: 0)
    previous = signal.getsignal(signal.SIGINT)
    try:
        assert _entry.main() == 0
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


def test_ctrl_c_inside_an_extension_import_is_an_interrupt(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """CI saw it: SIGINT while sklearn imported scipy's extension modules surfaced as ``ImportError:
    initialization failed`` caused by the KeyboardInterrupt, and the CLI printed its traceback."""
    from slimcnn.cli import main
    from slimcnn.data import classification

    def interrupted_import(*args: object) -> None:
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as e:
            raise ImportError("initialization failed") from e

    monkeypatch.setattr(classification, "_CACHE", {})
    monkeypatch.setattr(classification, "_load_digits", interrupted_import)
    out = tmp_path / "run"
    assert main([*TRAIN, "--out", str(out)]) == 130
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1] == f"interrupted: nothing to resume; {out} is unchanged"
    assert "Traceback" not in err and "ImportError" not in err
    assert not out.exists() and not _stage(out).exists()


def test_ctrl_c_inside_an_extensions_pyrun_string_still_exits_130(tmp_path: Path) -> None:
    """CPython flags a KeyboardInterrupt raised in ``PyRun_String`` code as unhandled although the CLI handles it, and
    ``python -m slimcnn`` then died by SIGINT (exit -2) after printing its interrupt line (2 of 60 kill tests)."""
    factory = tmp_path / "net.py"
    factory.write_text(
        "import ctypes\n"
        "def build():\n"
        "    run = ctypes.pythonapi.PyRun_String  # an extension's initialisation code, interrupted\n"
        "    run.restype, run.argtypes = ctypes.py_object, [ctypes.c_char_p, ctypes.c_int, ctypes.py_object,\n"
        "                                                   ctypes.py_object]\n"
        "    run(b'raise KeyboardInterrupt', 257, {}, {})\n")
    done = _run(["prune", f"python:{factory}:build", "--ratio", "0.5", "--out", str(tmp_path / "o")])
    assert done.returncode == 130, done.stderr
    assert done.stderr.strip().splitlines()[-1] == f"interrupted: nothing to resume; {tmp_path / 'o'} is unchanged"
    assert "Traceback" not in done.stderr


def test_ctrl_c_after_the_run_was_written_says_so(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from slimcnn.cli import main, prune

    def interrupted_report(*args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(prune, "report_run", interrupted_report)
    out = tmp_path / "o"
    assert main(["prune", "slimcnn:lenet5", "--ratio", "0.5", "--no-latency", "--out", str(out)]) == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"interrupted after the run was written: {out} is complete"
    assert _complete(out)
