"""``--out`` as a transaction: stage beside it, rename into place at the end, keep only resumable state.

A run writes into a hidden sibling staging folder (``.NAME.slimcnn-partial``) that carries the run's
manifest. Only :meth:`RunDir.commit` puts it in place of ``--out`` (two renames), so an interrupted or
failed run leaves the previous ``--out`` exactly as it was. What an interrupted run can resume from
(a training checkpoint, a finished sensitivity sweep) stays in the staging folder; the next run with
the same manifest continues from it, any other run discards it and says why. A lock file beside
``--out`` (``.NAME.slimcnn-lock``) keeps a second run from writing the same ``--out`` at the same time.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from types import TracebackType

from slimcnn._io import write_json
from slimcnn.errors import ConfigError
from slimcnn.run._manifest import Manifest

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
_PARTIAL = ".slimcnn-partial"
_OLD = ".slimcnn-old"
_LOCK = ".slimcnn-lock"

last_interrupt: str | None = None
"""What the last interrupted run kept and how to resume it (the CLI prints it on Ctrl-C)."""


def _inside(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def check_out_path(out: str | Path, *, inputs: Iterable[str | Path | None] = (),
                   data: Iterable[str | Path | None] = ()) -> Path:
    """Refuse an ``--out`` that is empty, a file, a data folder (or inside one) or an input model's folder."""
    if not str(out).strip():
        raise ConfigError("--out is empty; name the folder the run writes (e.g. --out runs/pruned)")
    o = Path(out).expanduser().resolve()
    if o.exists() and not o.is_dir():
        raise ConfigError(f"--out {out} is an existing file; --out names a folder: choose a new folder name")
    for d in data:
        if d is not None and Path(d).exists():
            dp = Path(d).resolve()
            if _inside(o, dp) or (dp.is_file() and o == dp.parent):
                raise ConfigError(f"--out {out} is inside the data {d}; outputs there would be read as data: "
                                  "choose a folder outside it")
    for i in inputs:
        if i is not None and Path(i).exists():
            ip = Path(i).resolve()
            if o == ip or (ip.is_file() and o == ip.parent) or (ip.is_dir() and _inside(o, ip)):
                raise ConfigError(f"--out {out} holds the input {i}; writing there could replace it: "
                                  "choose another folder")
    return o


class RunDir:
    """One run's output folder, staged and committed atomically.

    Example:
        >>> with RunDir("out", Manifest.of("prune", model="slimcnn:lenet5", options={"ratio": 0.5})) as run:
        ...     save_model(loaded, run.path / "model.pt")
        ...     write_run(run, result)          # writes result.json/plan.json and commits
    """

    def __init__(self, out: str | Path, manifest: Manifest, *, force: bool = False, resume: bool = False,
                 inputs: Sequence[str | Path | None] = (), data: Sequence[str | Path | None] = ()) -> None:
        self.out = check_out_path(out, inputs=inputs, data=data)
        self.manifest = manifest
        self.force, self.resume = force, resume
        self.stage = self.out.parent / f".{self.out.name}{_PARTIAL}"
        self.notes: list[str] = []
        """Lines for the user (why state was discarded, what is resumed)."""
        self.state: dict[str, bool] = {}
        """Resumable files registered by the command: ``{name: keep in --out after commit}``."""
        self.committed = False
        self.started = time.perf_counter()
        self._made_dirs: list[Path] = []
        self._lock_fd: int | None = None

    # -- opening ----------------------------------------------------------------------------------

    def _check_existing(self) -> None:
        old = self.out.parent / f".{self.out.name}{_OLD}"
        if old.is_dir() and not self.out.exists():  # a commit was cut between its two renames
            os.replace(old, self.out)
        if not self.out.is_dir() or not any(self.out.iterdir()):
            return
        previous = _read_manifest(self.out)
        if previous is None and not (self.out / "result.json").is_file():
            raise ConfigError(f"--out {self.out} is a non-empty folder that slimcnn did not write; choose a new or "
                              "empty folder (slimcnn never overwrites other files)")
        diffs = ["written by an older slimcnn"] if previous is None else self.manifest.differences(previous)
        if diffs and self.resume and not self.force:
            self.notes.append(f"--resume: --out was made with other options ({_listed(diffs)}); only state whose "
                              "options still match is reused, the rest is computed anew")
        if diffs and not (self.force or self.resume):
            raise ConfigError(f"--out {self.out} holds a run with other options ({_listed(diffs)}); pass --force "
                              "to replace it, --resume to continue from what still applies, or choose another --out")

    def _lock(self) -> None:
        """Hold ``.NAME.slimcnn-lock`` for the run; another live run on the same ``--out`` is a one-line error."""
        try:
            import fcntl
        except ImportError:  # no flock (Windows): concurrent runs are not detected there
            return
        path = self.out.parent / f".{self.out.name}{_LOCK}"
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = os.read(fd, 32).decode(errors="replace").strip() or "?"
                os.close(fd)
                raise ConfigError(f"--out {self.out} is being written by another slimcnn run (pid {owner}); wait for it "
                                  "to finish or choose another --out") from None
            try:  # the holder before us may have unlinked the file after we opened it: lock the live one
                same = os.path.samestat(os.fstat(fd), os.stat(path))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._lock_fd = fd

    def _unlock(self) -> None:
        if self._lock_fd is None:
            return
        with contextlib.suppress(FileNotFoundError):  # unlink while holding it, so no one locks a dead file
            (self.out.parent / f".{self.out.name}{_LOCK}").unlink()
        os.close(self._lock_fd)
        self._lock_fd = None

    def _remove_made_dirs(self) -> None:
        for d in reversed(self._made_dirs):
            if d.exists() and not any(d.iterdir()):
                d.rmdir()

    def __enter__(self) -> RunDir:
        for p in reversed([self.out.parent, *self.out.parent.parents]):
            if not p.exists():
                p.mkdir()
                self._made_dirs.append(p)
        try:
            self._lock()
            self._check_existing()
        except BaseException:
            self._unlock()
            self._remove_made_dirs()
            raise
        if self.stage.exists():
            previous = _read_manifest(self.stage)
            diffs = ["no manifest"] if previous is None else self.manifest.differences(previous)
            if self.force or diffs:
                shutil.rmtree(self.stage)
                if not self.force:
                    self.notes.append(f"starting fresh: the interrupted run's state differs ({_listed(diffs)})")
        if not self.stage.exists():
            self.stage.mkdir()
        write_json(self.stage / MANIFEST, self.manifest.to_dict())
        return self

    @property
    def path(self) -> Path:
        """Where the command writes its files during the run."""
        return self.stage

    def state_file(self, name: str, *, keep: bool = False, ignore: tuple[str, ...] = ()) -> Path:
        """Register a resumable file: kept when the run is interrupted, and in ``--out`` after commit if ``keep``.

        When the staging folder lacks it and the previous ``--out`` holds it (listed in its manifest), it is
        copied in if that run's manifest matches this one apart from the options in ``ignore`` (and not
        ``--force``); otherwise the user is told why it is measured anew.
        """
        self.state[name] = keep
        path = self.stage / name
        if path.exists() or self.force or not (self.out / name).is_file() or name not in _state_names(self.out):
            return path
        previous = _read_manifest(self.out)
        diffs = self.manifest.differences(previous, ignore=ignore) if previous is not None else ["no manifest"]
        if diffs:
            self.notes.append(f"not reusing {name} of --out: {_listed(diffs)}")
        else:
            shutil.copy2(self.out / name, path)
            self.notes.append(f"reusing {name} of --out (same model, data and options)")
        return path

    # -- closing ----------------------------------------------------------------------------------

    def commit(self) -> Path:
        """Drop transient state, record the state kept, and rename the staging folder onto ``--out``."""
        global last_interrupt
        for name, keep in self.state.items():
            if not keep and (self.stage / name).exists():
                (self.stage / name).unlink()
        for folder in sorted((p for p in self.stage.rglob("*") if p.is_dir()), reverse=True):
            if not any(folder.iterdir()):  # what held only transient state
                folder.rmdir()
        m = self.manifest.to_dict() | {"state": sorted(n for n, k in self.state.items() if k)}
        write_json(self.stage / MANIFEST, m)
        old = self.out.parent / f".{self.out.name}{_OLD}"
        if old.exists():
            shutil.rmtree(old)
        with interrupts_deferred():  # Ctrl-C cannot fall between the two renames (a SIGKILL there is healed on the next run)
            if self.out.exists():
                os.replace(self.out, old)
            os.replace(self.stage, self.out)
            self.committed = True
            last_interrupt = f"interrupted after the run was written: {self.out} is complete"
        if old.exists():
            shutil.rmtree(old, ignore_errors=True)
        return self.out

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        try:
            self._close(exc)
        finally:
            self._unlock()
            if not self.committed and not self.stage.exists():
                self._remove_made_dirs()

    def _close(self, exc: BaseException | None) -> None:
        global last_interrupt
        if self.committed or exc is None:
            if not self.committed and exc is None:
                self.commit()
            return
        kept = [n for n in self.state if (self.stage / n).exists()]
        if kept:
            hint = f"kept {', '.join(kept)} in {self.stage}; re-run the same command to resume"
        else:
            shutil.rmtree(self.stage, ignore_errors=True)
            hint = f"nothing to resume; {self.out} is unchanged"
        if caused_by_interrupt(exc):
            last_interrupt = f"interrupted: {hint}"
        else:
            log.info("run failed: %s", hint)


def caused_by_interrupt(exc: BaseException) -> bool:
    """Whether ``exc`` is Ctrl-C or was raised because of it.

    A SIGINT that lands while an extension module initialises (scipy, imported lazily by sklearn) surfaces as
    ``ImportError: initialization failed`` caused by the KeyboardInterrupt.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, KeyboardInterrupt):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


@contextlib.contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Ctrl-C inside the block is noted and raised as KeyboardInterrupt when the block ends.

    For work an interrupt must not cut in two: the renames of a commit, and imports of extension modules (a
    KeyboardInterrupt raised inside an extension's initialisation can abort the interpreter, seen as exit -6 under
    load). The Python-level handler is swapped, so it holds whichever thread the OS hands the signal to (a blocked
    signal mask holds only the calling thread). Outside the main thread nothing is deferred.
    """
    noted: list[int] = []
    try:
        previous = signal.signal(signal.SIGINT, lambda signum, frame: noted.append(signum))
    except ValueError:  # not the main thread: the main thread's handler gets the signal anyway
        previous = None
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    if noted:
        raise KeyboardInterrupt


def _read_manifest(folder: Path) -> Manifest | None:
    try:
        return Manifest.from_dict(json.loads((folder / MANIFEST).read_text()))
    except (OSError, ValueError, AttributeError):
        return None


def _state_names(folder: Path) -> list[str]:
    try:
        return [str(n) for n in json.loads((folder / MANIFEST).read_text()).get("state", [])]
    except (OSError, ValueError, AttributeError):
        return []


def _listed(diffs: list[str], shown: int = 3) -> str:
    """The first ``shown`` differences, and how many more there are (a refusal that names three of four
    differences reads as if the fourth were the same)."""
    more = f"; and {len(diffs) - shown} more" if len(diffs) > shown else ""
    return "; ".join(diffs[:shown]) + more
