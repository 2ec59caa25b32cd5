"""ImageFolder layouts in a folder or a ``.tar`` archive (read in memory, never extracted): which images a
split holds, their class folders, and decoding one image at the model's input size."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import numpy as np

from slimcnn._io import UNREADABLE_HINT, UNREADABLE_IMAGE, open_image, unreadable_reason
from slimcnn.errors import DataError

Split = Literal["train", "test"]
IMAGE_EXTS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp", ".gif"})
SPLIT_DIRS: dict[str, tuple[str, ...]] = {"train": ("train",), "test": ("test", "val", "valid", "validation")}
ALL_SPLIT_DIRS = frozenset(n for names in SPLIT_DIRS.values() for n in names)


def is_archive(path: Path) -> bool:
    name = path.name.lower()
    return path.is_file() and name.endswith((".tar", ".tar.gz", ".tgz"))


def list_images(path: Path) -> list[tuple[str, ...]]:
    if path.is_dir():
        return sorted(p.relative_to(path).parts for p in path.rglob("*") if p.suffix.lower() in IMAGE_EXTS and p.is_file())
    if is_archive(path):
        try:
            with tarfile.open(path, "r:*") as tar:
                return sorted(
                    tuple(p for p in m.name.split("/") if p not in ("", "."))
                    for m in tar.getmembers()
                    if m.isfile() and Path(m.name).suffix.lower() in IMAGE_EXTS
                )
        except (tarfile.TarError, OSError) as e:
            raise DataError(f"cannot read archive {path}: {e}") from e
    if path.suffix.lower() == ".zip":  # read in place only as tar: its members can be streamed by offset
        raise DataError(f"{path} is a .zip archive, which slimcnn does not read: unzip it (unzip {path.name} -d "
                        f"{path.stem}) and pass the folder, or pack it as .tar (tar -cf {path.stem}.tar -C {path.stem} .)")
    raise DataError(
        f"{path} is neither a folder nor a .tar archive; pass a folder of images, a CIFAR folder, "
        "an ImageFolder .tar, or 'digits'"
    )


def folder_layout(paths: list[tuple[str, ...]]) -> tuple[int, frozenset[str]]:
    """(number of leading common folders to skip, split folder names found at that level)."""
    skip = 0
    while paths and all(len(p) > skip + 2 for p in paths) and len({p[skip] for p in paths}) == 1:
        if paths[0][skip].lower() in ALL_SPLIT_DIRS:
            break
        skip += 1
    tops = {p[skip].lower() for p in paths if len(p) > skip + 2}
    if tops and tops <= ALL_SPLIT_DIRS and all(len(p) > skip + 2 for p in paths):
        return skip, frozenset(tops)
    return skip, frozenset()


def select_split(paths: list[tuple[str, ...]], split: Split, where: Path) -> tuple[list[tuple[str, ...]], list[str], str]:
    """Pick the split's images; return them, their class names and the split label."""
    skip, tops = folder_layout(paths)
    if tops:
        wanted = [t for t in SPLIT_DIRS[split] if t in tops]
        if wanted:
            chosen = wanted[0]
        elif len(tops) == 1:
            chosen = next(iter(tops))
        else:
            raise DataError(f"{where} holds the splits {sorted(tops)} but no '{split}' split")
        sel = [p for p in paths if p[skip].lower() == chosen]
        return sel, [p[skip + 1] for p in sel], chosen
    bad = [p for p in paths if len(p) < skip + 2]
    if bad or not paths:
        raise DataError(
            f"{where} has no images in class folders (expected <class>/<image>, e.g. cat/0001.jpg); "
            f"found {len(paths)} images" + (f", e.g. {'/'.join(bad[0])} at the top level" if bad else "")
        )
    return paths, [p[skip] for p in paths], "all"


def read_images(path: Path, rels: list[tuple[str, ...]]) -> Iterator[tuple[tuple[str, ...], bytes]]:
    if path.is_dir():
        for rel in rels:
            yield rel, path.joinpath(*rel).read_bytes()
        return
    wanted = set(rels)
    with tarfile.open(path, "r:*") as tar:
        for m in tar:
            rel = tuple(p for p in m.name.split("/") if p not in ("", "."))
            if m.isfile() and rel in wanted:
                f = tar.extractfile(m)
                if f is not None:
                    yield rel, f.read()


def decode_image(data: bytes, name: str, size: tuple[int, int] | None, gray: bool) -> np.ndarray:
    from PIL import Image

    try:
        with open_image(io.BytesIO(data)) as im:
            im = im.convert("L" if gray else "RGB")
            if size is not None and (im.height, im.width) != tuple(size):
                th, tw = size
                s = max(th / im.height, tw / im.width)
                nh, nw = max(th, round(im.height * s)), max(tw, round(im.width * s))
                im = im.resize((nw, nh), Image.Resampling.BILINEAR, reducing_gap=None)
                top, left = (nh - th) // 2, (nw - tw) // 2
                im = im.crop((left, top, left + tw, top + th))
            arr = np.asarray(im, dtype=np.uint8)
    except UNREADABLE_IMAGE as e:
        raise DataError(f"cannot decode image {name} ({unreadable_reason(e)}): {UNREADABLE_HINT}") from e
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
