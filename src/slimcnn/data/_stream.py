"""Streaming classification data: a torch DataLoader with worker processes, nothing decoded ahead.

Large sets (ImageNet: 1.28 M images, about 193 GB decoded) cannot be held in memory as the small ones
are (:func:`slimcnn.data.classification.load_classification`). Here only an index is built — file
paths, or each image's byte offset inside a ``.tar`` — and images are read, decoded and augmented
by DataLoader workers batch by batch (memory: the index plus a few prefetched batches per worker).

Sources (``spec``):

- an ImageFolder **folder** or uncompressed **.tar** (``<class>/<image>``, with the same split
  layouts as the in-memory loader);
- **WebDataset shards**: a folder of ``*.tar`` shards, or one shard pattern such as
  ``train-{000000..000146}.tar``. Each sample is ``<key>.<image ext>`` with ``<key>.cls`` (the class
  index as text) next to it, as ``webdataset`` writes them.

Augmentations are torchvision.transforms.v2's: RandomResizedCrop + horizontal flip for inputs
above 64 px (ImageNet-style), pad-crop (1/8 of the side) + flip for CIFAR-size inputs; evaluation
resizes the shorter side and centre-crops. An image that cannot be decoded is skipped and counted
(:attr:`Skipped`), or refused in one line naming the file with ``strict=True``.
"""

from __future__ import annotations

import io
import logging
import re
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from slimcnn._io import UNREADABLE_HINT, open_image, unreadable_reason
from slimcnn.errors import DataError

logger = logging.getLogger(__name__)

STREAM_ABOVE_BYTES = 1 << 30
"""A set whose decoded ``uint8`` images would exceed this (1 GiB) streams; smaller sets are decoded once
and held in memory, which is faster for the many small runs (digits, CIFAR's 10k/50k images)."""

_BRACES = re.compile(r"\{(\d+)\.\.(\d+)\}")
_INDEX_CACHE: dict[tuple[object, ...], StreamIndex] = {}
_INDEX_CACHE_SIZE = 4  # indexes of big sets are tens of MB: keep only the latest few


@dataclass(frozen=True)
class StreamIndex:
    """Where every image of a set is, without its pixels."""

    name: str
    """Where it came from, e.g. ``"train-50k.tar:train"``."""
    classes: tuple[str, ...]
    files: tuple[str, ...]
    """The folder (ImageFolder) or the ``.tar`` files the images are in."""
    file_of: np.ndarray
    """Per image: index into ``files``."""
    members: tuple[str, ...]
    """Per image: path below the folder, or member name in the tar."""
    offsets: np.ndarray
    """Per image: byte offset of its data in the tar (-1: a file of its own)."""
    sizes: np.ndarray
    """Per image: byte size in the tar (-1: a file of its own)."""
    labels: np.ndarray
    """Per image: class index (``int64``)."""

    def __len__(self) -> int:
        return len(self.members)

    def describe(self, i: int) -> str:
        """The image's file (``shard.tar:member`` inside an archive)."""
        f = self.files[int(self.file_of[i])]
        return f"{f}:{self.members[i]}" if self.offsets[i] >= 0 else str(Path(f) / self.members[i])

    def read(self, i: int) -> bytes:
        """The image's encoded bytes."""
        f = self.files[int(self.file_of[i])]
        if self.offsets[i] < 0:
            return (Path(f) / self.members[i]).read_bytes()
        with open(f, "rb") as fh:
            fh.seek(int(self.offsets[i]))
            return fh.read(int(self.sizes[i]))


@dataclass
class Skipped:
    """Images a stream could not decode (it went on without them)."""

    count: int = 0
    examples: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return self.count > 0

    def add(self, names: list[str]) -> None:
        """Count ``names`` (the first few are kept for the summary)."""
        if names and not self.count:
            logger.warning("skipping an undecodable image: %s (counted in the summary)", names[0])
        self.count += len(names)
        self.examples.extend(names[: max(0, 5 - len(self.examples))])


# --------------------------------------------------------------------------------------------- index
def is_shard_pattern(spec: str | Path) -> bool:
    """True for a WebDataset shard pattern such as ``train-{000000..000146}.tar``."""
    return _BRACES.search(str(spec)) is not None


def shard_paths(spec: str | Path) -> list[Path] | None:
    """The shard files of a WebDataset spec (a ``{a..b}`` pattern or a folder of ``.tar``), else None.

    Raises:
        DataError: A shard of the pattern is missing (one line naming it).
    """
    text = str(spec)
    m = _BRACES.search(text)
    if m:
        lo, hi = m.group(1), m.group(2)
        paths = [Path(text[: m.start()] + str(k).zfill(len(lo)) + text[m.end():]) for k in range(int(lo), int(hi) + 1)]
        missing = [p for p in paths if not p.is_file()]
        if missing:
            raise DataError(f"shard {missing[0]} does not exist ({len(missing)} of {len(paths)} shards of {spec} "
                            "are missing); check the pattern or fetch the shards")
        return paths
    path = Path(spec)
    if path.is_dir():
        try:
            tars = sorted(p for p in path.iterdir() if p.suffix == ".tar" and p.is_file())
            has_images = any(p.is_dir() for p in path.iterdir())
        except OSError as e:
            raise DataError(f"cannot read folder {path}: {e.strerror or e}; check its permissions") from e
        if tars and not has_images:
            return tars
    return None


def _tar_members(path: Path) -> list[tarfile.TarInfo]:
    try:
        with tarfile.open(path, "r:") as tar:
            return [m for m in tar.getmembers() if m.isfile()]
    except (tarfile.TarError, OSError) as e:
        raise DataError(f"cannot read archive {path}: {e}; pass an uncompressed .tar (or a folder)") from e


def _index_shards(shards: list[Path], name: str) -> StreamIndex:
    from slimcnn.data._folder import IMAGE_EXTS

    file_of, members, offsets, sizes, labels = [], [], [], [], []
    for k, shard in enumerate(shards):
        images: dict[str, tarfile.TarInfo] = {}
        cls: dict[str, tarfile.TarInfo] = {}
        for m in _tar_members(shard):
            key, _, ext = m.name.rpartition(".")
            if ext.lower() == "cls":
                cls[key] = m
            elif "." + ext.lower() in IMAGE_EXTS:
                images[key] = m
        with open(shard, "rb") as fh:
            for key in sorted(images.keys() & cls.keys()):
                c = cls[key]
                fh.seek(c.offset_data)
                try:
                    labels.append(int(fh.read(c.size).decode().strip()))
                except ValueError as e:
                    raise DataError(f"{shard}:{c.name} is not a class index ({e}); WebDataset shards need "
                                    "<key>.cls holding an integer") from e
                m = images[key]
                file_of.append(k)
                members.append(m.name)
                offsets.append(m.offset_data)
                sizes.append(m.size)
    if not members:
        raise DataError(f"{name} holds no WebDataset samples (<key>.jpg with <key>.cls)")
    n_classes = max(labels) + 1
    return StreamIndex(name, tuple(str(i) for i in range(n_classes)), tuple(str(s) for s in shards),
                       np.asarray(file_of, np.int32), tuple(members), np.asarray(offsets, np.int64),
                       np.asarray(sizes, np.int64), np.asarray(labels, np.int64))


def _index_folder(path: Path, split: str) -> StreamIndex:
    from slimcnn.data._folder import list_images, select_split

    try:
        rels, class_of, chosen = select_split(list_images(path), split, path)  # type: ignore[arg-type]
    except PermissionError as e:
        raise DataError(f"cannot read folder {path}: {e.strerror or e}; check its permissions") from e
    classes = sorted(set(class_of))
    lookup = {c: i for i, c in enumerate(classes)}
    names = ["/".join(r) for r in rels]
    labels = np.asarray([lookup[c] for c in class_of], np.int64)
    if path.is_dir():
        offsets = sizes = np.full(len(names), -1, np.int64)
    else:
        where = {m.name.lstrip("./"): m for m in _tar_members(path)}
        offsets = np.asarray([where[n].offset_data for n in names], np.int64)
        sizes = np.asarray([where[n].size for n in names], np.int64)
        names = [where[n].name for n in names]
    return StreamIndex(f"{path.name}:{chosen}", tuple(classes), (str(path),), np.zeros(len(names), np.int32),
                       tuple(names), offsets, sizes, labels)


def index_images(spec: str | Path, split: str) -> StreamIndex:
    """Index a folder, an uncompressed ImageFolder ``.tar`` or WebDataset shards (cached, a few per process).

    The images are put in a fixed shuffled order (seed 0), as the in-memory loader does, so that "the
    first N" covers every class.

    Raises:
        DataError: Missing shard, unreadable folder or archive, or no images (one line each).
    """
    shards = shard_paths(spec)
    files = shards or [Path(spec)]
    stamp = tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in files)
    key = (stamp, split)
    if key not in _INDEX_CACHE:
        if shards is not None:
            index = _index_shards(shards, Path(str(spec)).name)
        else:
            index = _index_folder(Path(spec), split)
        order = np.random.RandomState(0).permutation(len(index))
        index = StreamIndex(index.name, index.classes, index.files, index.file_of[order],
                            tuple(index.members[i] for i in order), index.offsets[order], index.sizes[order],
                            index.labels[order])
        while len(_INDEX_CACHE) >= _INDEX_CACHE_SIZE:
            _INDEX_CACHE.pop(next(iter(_INDEX_CACHE)))
        _INDEX_CACHE[key] = index
        logger.info("indexed %s: %d images, %d classes (streamed)", index.name, len(index), len(index.classes))
    return _INDEX_CACHE[key]


# --------------------------------------------------------------------------------------------- loading
class _ToSize:
    """Shorter side to the target, centre crop; nothing to do (the common CIFAR case) costs nothing."""

    def __init__(self, size: tuple[int, int]) -> None:
        from torchvision.transforms import v2

        self.size = tuple(size)
        self.fit = v2.Compose([v2.Resize(min(size), antialias=True), v2.CenterCrop(size)])

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x if tuple(x.shape[-2:]) == self.size else self.fit(x)


def transforms_for(size: tuple[int, int], *, train: bool) -> Callable[[Any], torch.Tensor]:
    """torchvision.transforms.v2 pipeline: ``uint8 [C, h, w]`` image -> ``uint8 [C, H, W]`` of ``size``.

    Training: RandomResizedCrop + flip above 64 px, pad-crop (side/8) + flip up to 64 px.
    Evaluation: shorter side to the target, centre crop (as the in-memory loader).
    """
    from torchvision.transforms import v2

    if not train:
        steps: list[Any] = [_ToSize(size)]
    elif max(size) > 64:
        steps = [v2.RandomResizedCrop(size, antialias=True), v2.RandomHorizontalFlip()]
    else:
        steps = [_ToSize(size), v2.RandomCrop(size, padding=max(1, size[1] // 8)), v2.RandomHorizontalFlip()]
    return v2.Compose(steps)


_TORCHVISION_DECODES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif"})
_UNDECODABLE = (OSError, SyntaxError, ValueError, RuntimeError)  # what PIL / torchvision raise on bad bytes


class StreamDataset(Dataset[Any]):
    """Reads and decodes one image per item; an undecodable image becomes ``(None, name, reason)``.

    JPEG/PNG/WebP/GIF are decoded by ``torchvision.io.decode_image`` straight to a tensor (faster, and
    untouched by libraries that patch ``PIL.Image.open``); other formats by PIL.
    """

    def __init__(self, index: StreamIndex, transform: Callable[[Any], torch.Tensor], channels: int | None) -> None:
        self.index = index
        self.transform = transform
        self.gray = channels == 1

    def __len__(self) -> int:
        return len(self.index)

    def _decode(self, i: int) -> torch.Tensor:
        from torchvision.io import ImageReadMode, decode_image
        from torchvision.transforms.v2.functional import pil_to_tensor

        data = self.index.read(i)
        if Path(self.index.members[i]).suffix.lower() in _TORCHVISION_DECODES:
            raw = torch.frombuffer(bytearray(data), dtype=torch.uint8)
            return decode_image(raw, mode=ImageReadMode.GRAY if self.gray else ImageReadMode.RGB)

        with open_image(io.BytesIO(data)) as im:
            return pil_to_tensor(im.convert("L" if self.gray else "RGB"))

    def __getitem__(self, i: int) -> tuple[Any, ...]:
        try:
            x = self.transform(self._decode(i))
        except _UNDECODABLE as e:
            return None, self.index.describe(i), unreadable_reason(e)
        return x, int(self.index.labels[i])


def _collate(samples: list[tuple[Any, ...]]) -> tuple[torch.Tensor, torch.Tensor, list[tuple[str, str]]]:
    good = [s for s in samples if s[0] is not None]
    bad = [(s[1], s[2]) for s in samples if s[0] is None]
    x = torch.stack([s[0] for s in good]) if good else torch.empty(0, dtype=torch.uint8)
    return x, torch.tensor([s[1] for s in good], dtype=torch.long), bad


class GlobalBatches(Sampler[list[int]]):
    """This rank's slice of each global batch: a DistributedSampler that keeps one process's batch order.

    Training (``shuffle``): endless, a new seeded permutation per pass, full batches only. Evaluation:
    the first ``limit`` images in order, once.
    """

    def __init__(self, n: int, batch_size: int, *, shuffle: bool, seed: int = 0, rank: int = 0, world: int = 1) -> None:
        if shuffle and batch_size % world:
            raise DataError(f"a batch of {batch_size} does not split evenly over {world} ranks; "
                            f"choose --batch-size a multiple of {world}")
        self.n, self.batch_size, self.shuffle, self.seed, self.rank, self.world = n, batch_size, shuffle, seed, rank, world

    def __iter__(self) -> Iterator[list[int]]:
        if not self.shuffle:
            for i in range(0, self.n, self.batch_size):
                yield list(range(i, min(self.n, i + self.batch_size)))
            return
        g = torch.Generator().manual_seed(self.seed)
        bs = min(self.batch_size, self.n - self.n % self.world)
        per = bs // self.world
        while True:
            perm = torch.randperm(self.n, generator=g).tolist()
            for i in range(0, self.n - bs + 1, bs):
                yield perm[i + self.rank * per : i + (self.rank + 1) * per]

    def __len__(self) -> int:
        return -(-self.n // self.batch_size) if not self.shuffle else 2**62


def stream_batches(
    index: StreamIndex,
    *,
    size: tuple[int, int],
    channels: int | None,
    batch_size: int,
    train: bool,
    augment: bool = True,
    seed: int = 0,
    workers: int = 0,
    limit: int | None = None,
    rank: int = 0,
    world: int = 1,
    pin_memory: bool = False,
    strict: bool = False,
    skipped: Skipped | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``uint8`` image batches and labels from ``index`` through a DataLoader.

    Args:
        index: The set (:func:`index_images`).
        size: Target ``(H, W)``.
        channels: 1 (grayscale) or 3/None (RGB).
        batch_size: The global batch (training) or evaluation batch.
        train: Endless shuffled batches (this rank's slice of each) instead of one ordered pass.
        augment: Training augmentation (see :func:`transforms_for`); off: the evaluation transform.
        seed: Order and augmentation seed.
        workers: DataLoader worker processes (0: decode in this process).
        limit: Evaluation: the first N images only.
        rank: This process's rank (training).
        world: Number of ranks (training).
        pin_memory: Page-locked batches for fast copies to a GPU.
        strict: Refuse an undecodable image (one line naming it) instead of skipping it.
        skipped: Counts the skipped images.

    Raises:
        DataError: ``strict`` and an image cannot be decoded.
    """
    n = len(index) if limit is None else min(len(index), limit)
    sampler = GlobalBatches(n, batch_size, shuffle=train, seed=seed, rank=rank, world=world)
    data = StreamDataset(index, transforms_for(size, train=train and augment), channels)
    loader = DataLoader(data, batch_sampler=sampler, num_workers=workers, collate_fn=_collate, pin_memory=pin_memory,
                        generator=torch.Generator().manual_seed(seed), prefetch_factor=2 if workers else None,
                        persistent_workers=False)
    for x, y, bad in loader:
        if bad:
            if strict:
                raise DataError(f"cannot decode image {bad[0][0]} ({bad[0][1]}): {UNREADABLE_HINT} (or leave "
                                "strict_data off to skip and count undecodable images)")
            if skipped is not None:
                skipped.add([b[0] for b in bad])
        if len(y):
            yield x, y


def decoded_bytes(n: int, size: tuple[int, int], channels: int | None) -> int:
    """What ``n`` images of ``size`` take decoded as ``uint8``."""
    return n * (channels or 3) * size[0] * size[1]
