"""data_fingerprint: what changes a data folder changes its fingerprint (content for a small set, mtimes for a
large one), a copy does not; links are followed, once. Manifest.differences: one readable line per changed option."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from slimcnn.run import _manifest, data_fingerprint
from slimcnn.run._manifest import Manifest


def test_small_set_is_judged_by_content_so_a_copy_is_the_same_data(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "cat").mkdir(parents=True)
    (data / "cat" / "1.jpg").write_bytes(b"ab")
    base = data_fingerprint(str(data))
    os.utime(data / "cat" / "1.jpg", ns=(1, 1))
    assert data_fingerprint(str(data)) == base  # touched: same bytes
    copy = tmp_path / "copy"
    shutil.copytree(data, copy, copy_function=shutil.copyfile)  # new mtimes
    assert data_fingerprint(str(copy)) == base
    (copy / "cat" / "1.jpg").write_bytes(b"ba")  # same size, other bytes
    assert data_fingerprint(str(copy)) != base
    one = tmp_path / "one" / "1.jpg"  # a data file, not a folder
    one.parent.mkdir()
    shutil.copyfile(data / "cat" / "1.jpg", one)
    assert data_fingerprint(str(one)) == data_fingerprint(str(data / "cat" / "1.jpg"))


def test_fingerprint_sees_added_resized_and_touched_files_and_linked_folders(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(_manifest, "_DATA_CONTENT_LIMIT", 0)  # a "large" set: judged by mtimes
    data = tmp_path / "data"
    (data / "cat").mkdir(parents=True)
    (data / "cat" / "1.jpg").write_bytes(b"x")
    base = data_fingerprint(str(data))
    assert data_fingerprint(str(data)) == base
    (data / "cat" / "2.jpg").write_bytes(b"y")
    added = data_fingerprint(str(data))
    (data / "cat" / "2.jpg").write_bytes(b"yy")
    resized = data_fingerprint(str(data))
    os.utime(data / "cat" / "2.jpg", ns=(1, 1))
    touched = data_fingerprint(str(data))
    assert len({base, added, resized, touched}) == 4

    dogs = tmp_path / "elsewhere" / "dog"
    dogs.mkdir(parents=True)
    (dogs / "1.jpg").write_bytes(b"z")
    (data / "dog").symlink_to(dogs, target_is_directory=True)
    linked = data_fingerprint(str(data))
    (dogs / "2.jpg").write_bytes(b"w")  # a file added behind the link counts too
    assert len({touched, linked, data_fingerprint(str(data))}) == 3

    (dogs / "loop").symlink_to(data, target_is_directory=True)  # a cycle ends, each real folder read once
    assert data_fingerprint(str(data)) is not None


def test_differences_name_an_option_missing_on_one_side_as_its_default() -> None:
    old = Manifest.of("prune", options={"latency": "0.5x"})  # options at their default are not recorded
    new = Manifest.of("prune", options={"latency": "0.5x", "runtime": "torch", "threads": 2, "exclude": None})
    assert new.differences(old) == ["--runtime: (default) then torch", "--threads: (default) then 2"]
    assert old.differences(new) == ["--runtime: torch then (default)", "--threads: 2 then (default)"]
    assert new.differences(new) == []


def test_an_option_not_given_reads_not_given_rather_than_none() -> None:
    old = Manifest.of("compress", options={"macs": "0.8x", "max_drop": "0.2"})
    new = Manifest.of("compress", options={"macs": None, "max_drop": "0.3"})
    assert new.differences(old) == ["--macs: 0.8x then (not given)", "--max-drop: 0.2 then 0.3"]


def test_a_refusal_says_how_many_differences_it_did_not_name() -> None:
    from slimcnn.run._outdir import _listed

    assert _listed(["a", "b", "c", "d"]) == "a; b; c; and 1 more"
    assert _listed(["a", "b"]) == "a; b"


def test_a_shard_pattern_is_fingerprinted_by_its_shards(tmp_path: Path) -> None:
    """``shard-{0..1}.tar`` names no file: it was fingerprinted by its string, so changed shards were the same data."""
    for i in range(2):
        (tmp_path / f"shard-{i}.tar").write_bytes(b"ab")
    pattern = str(tmp_path / "shard-{0..1}.tar")
    base = data_fingerprint(pattern)
    assert not base.startswith("builtin:") and data_fingerprint(pattern) == base
    (tmp_path / "shard-1.tar").write_bytes(b"ba")
    assert data_fingerprint(pattern) != base
    assert data_fingerprint("digits") == "builtin:digits"
