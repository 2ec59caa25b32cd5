"""Run manifests: what produced a run's outputs, so resumable state is reused only when it still applies."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slimcnn._io import to_json

_HASH_LIMIT = 1 << 30  # files above 1 GiB are fingerprinted by size + mtime, not content
_DATA_CONTENT_LIMIT = 256 << 20
"""Data sets up to this many bytes are fingerprinted by content (~0.2 s of sha256 here), larger ones by mtimes."""


def file_fingerprint(path: str | Path) -> str:
    """sha256 of a file's content (size + mtime for very large files)."""
    p = Path(path)
    st = p.stat()
    if st.st_size > _HASH_LIMIT:
        return f"size:{st.st_size}:mtime:{st.st_mtime_ns}"
    return sha256_file(p)[:16]


def sha256_file(path: str | Path) -> str:
    """sha256 hex digest of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def data_fingerprint(data: str | None) -> str | None:
    """A fingerprint of a data folder/file or WebDataset shard pattern, or a built-in set's name.

    Relative paths and sizes always; then the files' content when the set holds at most
    :data:`_DATA_CONTENT_LIMIT` bytes, else their mtimes. Content makes a copied or re-extracted set
    (``cp -r``, a fresh checkout: new mtimes, same bytes) the same data, so its re-run resumes; hashing an
    ImageNet-sized folder on every run would cost minutes, so a large set is judged by its mtimes.
    """
    if data is None:
        return None
    p = Path(data)
    if p.exists():
        files: Any = [(p.name, str(p), p.stat())] if p.is_file() else _walk(str(p), "", set())
    else:
        from slimcnn.data._stream import shard_paths

        shards = shard_paths(data)  # a WebDataset pattern, shard-{000..003}.tar: its files
        if not shards:
            return f"builtin:{data}"
        files = [(s.name, str(s), s.stat()) for s in shards]
    # one pass: mtimes always, content while the running total allows (a large set drops it)
    by_mtime, by_content, total = hashlib.sha256(), hashlib.sha256(), 0
    for rel, path, st in files:
        by_mtime.update(f"{rel}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        total += st.st_size
        if total <= _DATA_CONTENT_LIMIT:
            by_content.update(f"{rel}|{st.st_size}|{sha256_file(path)}\n".encode())
    return (by_content if total <= _DATA_CONTENT_LIMIT else by_mtime).hexdigest()[:16]


def _walk(folder: str, rel: str, seen: set[tuple[int, int]]) -> Iterator[tuple[str, str, os.stat_result]]:
    """``(relative path, path, stat)`` of every file under ``folder``, in a fixed order.

    ``os.scandir`` rather than ``os.walk`` + ``Path.stat``: one directory read and no Path objects per
    file (an ImageNet-sized folder is 1.3 M files). Symlinked folders are followed (data
    sets are often assembled from links), each real folder once.
    """
    st = os.stat(folder)
    if (st.st_dev, st.st_ino) in seen:
        return
    seen.add((st.st_dev, st.st_ino))
    with os.scandir(folder) as it:
        entries = sorted(it, key=lambda e: e.name)
    subdirs = []
    for e in entries:
        if e.is_dir():
            subdirs.append(e)
        else:
            yield f"{rel}{e.name}", e.path, e.stat()
    for e in subdirs:
        yield from _walk(e.path, f"{rel}{e.name}/", seen)


def model_fingerprint(source: str, weights: str | None = None) -> str:
    """The source string plus the content of any local file it names (``file:``, ``--weights``)."""
    parts = [source]
    for path in (source[len("file:"):] if source.startswith("file:") else None, weights):
        if path and Path(path).is_file():
            parts.append(file_fingerprint(path))
    return "|".join(parts)


@dataclass(frozen=True)
class Manifest:
    """The command, model, data and every option that changes a run's results."""

    command: str
    model: str = ""
    """:func:`model_fingerprint` of the input model."""
    data: dict[str, str | None] = field(default_factory=dict)
    """``{option: data_fingerprint}`` for --data, --val-data, --train-data..."""
    options: dict[str, Any] = field(default_factory=dict)
    """Result-changing options, JSON-normalised (``--json``, ``--out``, ``--force`` are not among them)."""

    @classmethod
    def of(cls, command: str, *, model: str = "", weights: str | None = None, data: dict[str, str | None] | None = None,
           options: dict[str, Any] | None = None) -> Manifest:
        """Fingerprint the inputs and normalise the options (tuples become lists, paths strings)."""
        norm = json.loads(to_json(options or {}))
        return cls(command, model_fingerprint(model, weights) if model else "",
                   {k: data_fingerprint(v) for k, v in (data or {}).items()}, norm)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {"command": self.command, "model": self.model, "data": dict(self.data), "options": dict(self.options)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Manifest:
        """Inverse of :meth:`to_dict`."""
        return cls(str(d.get("command", "")), str(d.get("model", "")), dict(d.get("data") or {}),
                   dict(d.get("options") or {}))

    def differences(self, other: Manifest, *, ignore: tuple[str, ...] = ()) -> list[str]:
        """Human-readable differences (``--lr: 0.1 then 0.05``), empty when ``other`` matches."""
        diffs = []
        if self.command != other.command:
            diffs.append(f"command: {other.command} then {self.command}")
        if self.model != other.model:
            diffs.append("the model (source or file content) changed")
        for k in sorted(set(self.data) | set(other.data)):
            if self.data.get(k) != other.data.get(k):
                diffs.append(f"--{k.replace('_', '-')} (data) changed")
        for k in sorted(set(self.options) | set(other.options)):
            if k in ignore:
                continue
            if self.options.get(k) != other.options.get(k):
                # an option absent from one run is at its default (some are recorded only when not)
                was, now = (_shown(o.options[k]) if k in o.options else "(default)" for o in (other, self))
                diffs.append(f"--{k.replace('_', '-')}: {was} then {now}")
        return diffs


def _shown(value: Any) -> Any:
    """An option's value as a person reads it in a difference: an option not given is "(not given)", not None."""
    return "(not given)" if value is None else value
