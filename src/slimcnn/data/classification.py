"""Classification data: ImageFolder folders and .tar archives, CIFAR python batches, built-in digits.

Every source is decoded once per process into a ``uint8`` tensor ``[N, C, H, W]`` at the model's
input size (:class:`ImageSet`); batches are then cheap tensor slices, normalised on the fly. Sets too
large for that (above 1 GiB decoded) and WebDataset shards stream through a DataLoader instead
(:mod:`slimcnn.data._stream`; the task chooses).

Layouts (``spec`` is a path or the name ``"digits"``):

- **ImageFolder** folder or ``.tar``/``.tar.gz`` archive: ``<class>/<image>`` — optionally below one
  common folder (``test/<class>/...``) or split into ``train/`` and ``test/`` (or ``val/``) folders.
  Classes are the sorted folder names. Images of another size are resized (shorter side to the
  target) and centre-cropped. Archives are read in memory, never extracted. The images are put in a
  fixed shuffled order (seed 0) so that "the first N" covers every class.
- **CIFAR python** folder (``data_batch_1..5``, ``test_batch``, optionally inside
  ``cifar-10-batches-py/``; CIFAR-100's ``train``/``test`` files too).
- **digits**: scikit-learn's 1,797 real 8x8 handwritten digits, split 1,437 train / 360 val with a
  fixed permutation (seed 0), bilinearly resized to the target size, grayscale in [0, 1].
"""

from __future__ import annotations

import io
import logging
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from slimcnn._io import UNREADABLE_IMAGE, open_image
from slimcnn.data import _stream
from slimcnn.data._folder import (
    ALL_SPLIT_DIRS,
    SPLIT_DIRS,
    Split,
    decode_image,
    folder_layout,
    is_archive,
    list_images,
    read_images,
    select_split,
)
from slimcnn.errors import DataError

logger = logging.getLogger(__name__)

BUILTIN: tuple[str, ...] = ("digits",)
DIGITS_TRAIN = 1437
_CACHE: dict[tuple[object, ...], ImageSet] = {}

CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)
"""CIFAR-10's class names in label order (as in ``batches.meta``; also the sorted folder names)."""


def class_key(name: str) -> str:
    """A class name compared loosely: ``"Great_White-Shark"`` -> ``"great white shark"``."""
    return " ".join(name.lower().replace("_", " ").replace("-", " ").split())


def known_class_names(n: int, found: tuple[str, ...]) -> tuple[str, ...] | None:
    """A well-known label order with ``n`` classes that shares names with ``found``, else None.

    CIFAR-10 (10 classes) and ImageNet-1k (1000, torchvision's category names) are known.
    """
    keys = {class_key(c) for c in found}
    if n == len(CIFAR10_CLASSES) and keys & set(CIFAR10_CLASSES):
        return CIFAR10_CLASSES
    if n == 1000:
        try:
            from torchvision.models import ResNet18_Weights
        except ImportError:  # pragma: no cover - torchvision is a core dependency here
            return None
        names = tuple(str(c) for c in ResNet18_Weights.IMAGENET1K_V1.meta["categories"])
        if keys & {class_key(c) for c in names}:
            return names
    return None


@dataclass(frozen=True)
class ImageSet:
    """A decoded classification set held in memory."""

    images: torch.Tensor
    """``uint8`` images ``[N, C, H, W]``."""
    labels: torch.Tensor
    """``int64`` class indices ``[N]``."""
    classes: tuple[str, ...]
    """Class names; ``labels`` index into them."""
    name: str
    """Where it came from, e.g. ``"test-10k.tar:test"``."""

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def check_source(spec: str | Path) -> str | Path:
    """Normalise a data spec: ``"digits"`` or an existing path.

    Raises:
        DataError: The path does not exist.
    """
    if isinstance(spec, str) and spec in BUILTIN:
        return spec
    if _stream.is_shard_pattern(spec):
        _stream.shard_paths(spec)  # every shard must exist
        return str(spec)
    p = Path(spec).expanduser()
    if not p.exists():
        raise DataError(
            f"data directory {spec} does not exist; pass a folder of images, a CIFAR folder, "
            "an ImageFolder .tar, or 'digits'"
        )
    return p


def source_splits(spec: str | Path) -> frozenset[str]:
    """The splits a source holds: ``{"train", "test"}`` for digits/CIFAR/split folders, else one or none."""
    spec = check_source(spec)
    if spec == "digits":
        return frozenset({"train", "test"})
    if _stream.shard_paths(spec) is not None:  # WebDataset shards: one set
        return frozenset()
    root = _cifar_root(Path(spec))
    if root is not None:
        have = {"train"} if any(root.glob("data_batch_*")) or (root / "train").is_file() else set()
        if (root / "test_batch").is_file() or (root / "test").is_file():
            have.add("test")
        return frozenset(have)
    tops = folder_layout(list_images(Path(spec)))[1]
    return frozenset(s for s, names in SPLIT_DIRS.items() if tops & set(names))


def find_train_sibling(spec: str | Path) -> Path | None:
    """A training set next to an evaluation-only ImageFolder source, or None.

    ``.../test`` or ``.../val`` folder -> ``.../train``; ``X/test*.tar`` -> the only ``X/train*.tar``, or,
    when there are several, the only one that is not a subset (``train-50k.tar`` beside
    ``train-subset-10k.tar``: the full training set; pass ``--train-data`` for another).
    """
    if spec in BUILTIN:
        return None
    path = Path(spec)
    if path.is_dir():
        cand = path.parent / "train"
        return cand if path.name.lower() in ALL_SPLIT_DIRS and cand.is_dir() else None
    if is_archive(path):
        found = [p for p in sorted(path.parent.iterdir()) if p != path and is_archive(p) and p.name.lower().startswith("train")]
        if len(found) > 1:
            found = [p for p in found if not any(w in p.name.lower() for w in ("subset", "mini", "small", "tiny"))]
        return found[0] if len(found) == 1 else None
    return None


def load_classification(
    spec: str | Path,
    split: Split,
    *,
    size: tuple[int, int] | None = None,
    channels: int | None = None,
) -> ImageSet:
    """Decode a classification source (cached per process).

    Args:
        spec: ``"digits"``, an ImageFolder folder/.tar, or a CIFAR python folder.
        split: ``"train"`` or ``"test"``; a source with a single set returns it for either.
        size: Target ``(H, W)``; None keeps the source's size (folders: the first image's).
        channels: 1 (grayscale) or 3 (RGB); None keeps the source's (digits 1, others 3).

    Returns:
        The :class:`ImageSet`.

    Raises:
        DataError: Missing path, unknown layout, empty set or unreadable images.
    """
    spec = check_source(spec)
    if channels not in (None, 1, 3):
        raise DataError(f"classification data can feed 1- or 3-channel models, got {channels} channels")
    path = None if spec == "digits" else Path(spec).resolve()
    stamp = (path.stat().st_mtime_ns, path.stat().st_size) if path is not None else ()
    key = (str(path or spec), stamp, split, size, channels)
    if key not in _CACHE:
        if spec == "digits":
            out = _load_digits(split, size, channels)
        elif _cifar_root(Path(spec)) is not None:
            out = _load_cifar(Path(spec), split, size, channels)
        else:
            out = _load_folder(Path(spec), split, size, channels)
        if len(out) == 0:
            raise DataError(f"no images found in {spec}")
        _CACHE[key] = out
        logger.info("loaded %s: %d images, %d classes, %s", out.name, len(out), len(out.classes), tuple(out.images.shape[1:]))
    return _CACHE[key]


def native_size(spec: str | Path, split: Split = "test", *, sample: int = 16) -> tuple[int, int] | None:
    """The one ``(H, W)`` the set's images are stored at, or None when they differ (or cannot tell cheaply).

    ``digits`` is 8x8 and a CIFAR folder 32x32; a folder or ``.tar`` is judged by the headers of its first
    ``sample`` images of ``split``. WebDataset shards are not sampled (None).
    """

    if isinstance(spec, str) and spec in BUILTIN:
        return (8, 8)
    if _stream.shard_paths(spec) is not None:
        return None
    path = Path(spec)
    if _cifar_root(path) is not None:
        return (32, 32)
    rels, _, _ = select_split(list_images(path), split, path)
    sizes = set()
    for n, (_, data) in enumerate(read_images(path, rels)):
        try:
            with open_image(io.BytesIO(data)) as im:
                sizes.add((im.height, im.width))
        except UNREADABLE_IMAGE:
            continue
        if len(sizes) > 1 or n + 1 >= sample:
            break
    return sizes.pop() if len(sizes) == 1 else None


def clear_cache() -> None:
    """Forget every decoded set (frees memory)."""
    _CACHE.clear()


# --------------------------------------------------------------------------------------------- tensors
def resize_uint8(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinearly resize ``uint8 [N, C, H, W]`` images (antialiased when shrinking)."""
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    x = F.interpolate(images.float(), size=size, mode="bilinear", align_corners=False, antialias=True)
    return x.round_().clamp_(0, 255).to(torch.uint8)


def set_channels(images: torch.Tensor, channels: int | None) -> torch.Tensor:
    """Convert ``uint8 [N, C, H, W]`` between grayscale (ITU-R 601 luma) and RGB."""
    c = images.shape[1]
    if channels is None or channels == c:
        return images
    if channels == 3 and c == 1:
        return images.expand(-1, 3, -1, -1).contiguous()
    if channels == 1 and c == 3:
        w = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
        return (images.float() * w).sum(1, keepdim=True).round_().clamp_(0, 255).to(torch.uint8)
    raise DataError(f"cannot convert {c}-channel images to {channels} channels")


def normalize(
    images: torch.Tensor, mean: tuple[float, ...] | None = None, std: tuple[float, ...] | None = None
) -> torch.Tensor:
    """``uint8 [N, C, H, W]`` -> float in [0, 1], then ``(x - mean) / std`` per channel when given."""
    x = images.float().div_(255.0)
    if mean is not None and std is not None:
        c = x.shape[1]
        m = torch.tensor(mean, dtype=x.dtype).view(1, -1, 1, 1)
        s = torch.tensor(std, dtype=x.dtype).view(1, -1, 1, 1)
        if m.shape[1] not in (1, c) or s.shape[1] not in (1, c):
            raise DataError(f"mean/std have {m.shape[1]} values but the images have {c} channels")
        x = (x - m) / s
    return x


def augment_uint8(images: torch.Tensor, generator: torch.Generator, *, pad: int = 4, flip: bool = True) -> torch.Tensor:
    """CIFAR-style augmentation: zero-pad by ``pad``, random crop back, random horizontal flip."""
    n, _, h, w = images.shape
    out = images
    if pad > 0:
        padded = F.pad(images, (pad, pad, pad, pad))
        offs = torch.randint(0, 2 * pad + 1, (n, 2), generator=generator).tolist()
        out = torch.stack([padded[i, :, dy : dy + h, dx : dx + w] for i, (dy, dx) in enumerate(offs)])
    if flip:
        mask = torch.rand(n, generator=generator) < 0.5
        out = out.clone() if out is images else out
        out[mask] = out[mask].flip(-1)
    return out


# --------------------------------------------------------------------------------------------- digits
def _load_digits(split: Split, size: tuple[int, int] | None, channels: int | None) -> ImageSet:
    from sklearn.datasets import load_digits

    d = load_digits()
    order = np.random.RandomState(0).permutation(len(d.target))
    idx = order[:DIGITS_TRAIN] if split == "train" else order[DIGITS_TRAIN:]
    x = torch.from_numpy(d.images[idx] / 16.0).float().unsqueeze(1)  # [N, 1, 8, 8] in [0, 1]
    if size is not None and tuple(size) != (8, 8):
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    images = set_channels(x.mul(255).round_().clamp_(0, 255).to(torch.uint8), channels)
    labels = torch.from_numpy(d.target[idx]).long()
    return ImageSet(images, labels, tuple(str(i) for i in range(10)), f"digits:{'train' if split == 'train' else 'val'}")


# --------------------------------------------------------------------------------------------- CIFAR
def _cifar_root(path: Path) -> Path | None:
    if not path.is_dir():
        return None
    for root in (path, path / "cifar-10-batches-py", path / "cifar-100-python"):
        if (root / "data_batch_1").is_file() or (root / "test_batch").is_file():
            return root
        if (root / "meta").is_file() and ((root / "train").is_file() or (root / "test").is_file()):
            return root
    return None


def _unpickle(path: Path) -> dict[bytes, object]:
    try:
        with path.open("rb") as f:
            out = pickle.load(f, encoding="bytes")  # the CIFAR python format is a pickle
    except (OSError, pickle.UnpicklingError, EOFError) as e:
        raise DataError(f"cannot read CIFAR batch {path}: {e}") from e
    if not isinstance(out, dict):
        raise DataError(f"{path} is not a CIFAR python batch (expected a dict)")
    return out


def _load_cifar(path: Path, split: Split, size: tuple[int, int] | None, channels: int | None) -> ImageSet:
    root = _cifar_root(path)
    if root is None:
        raise DataError(f"{path} is not a CIFAR python folder (no data_batch_*/test_batch)")
    if (root / "data_batch_1").is_file() or (root / "test_batch").is_file():
        files = sorted(root.glob("data_batch_*")) if split == "train" else [root / "test_batch"]
        meta_file, names_key = root / "batches.meta", b"label_names"
    else:
        files = [root / ("train" if split == "train" else "test")]
        meta_file, names_key = root / "meta", b"fine_label_names"
    files = [f for f in files if f.is_file()]
    if not files:  # single-split folder: use what is there
        files = sorted(root.glob("data_batch_*")) or [f for f in (root / "test_batch", root / "test", root / "train") if f.is_file()]
    datas, labels = [], []
    for f in files:
        b = _unpickle(f)
        lab = b.get(b"labels", b.get(b"fine_labels"))
        if b"data" not in b or lab is None:
            raise DataError(f"{f} is not a CIFAR python batch (no data/labels)")
        datas.append(np.asarray(b[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        labels.append(np.asarray(lab, dtype=np.int64))
    x = torch.from_numpy(np.concatenate(datas))
    y = torch.from_numpy(np.concatenate(labels))
    n_classes = int(y.max()) + 1
    classes = tuple(str(i) for i in range(n_classes))
    if meta_file.is_file():
        names = _unpickle(meta_file).get(names_key)
        if isinstance(names, list) and len(names) >= n_classes:
            classes = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)
    if size is not None:
        x = resize_uint8(x, size)
    split_name = files[0].name if len(files) == 1 else "train"
    return ImageSet(set_channels(x, channels), y, classes, f"{path.name}:{'test' if split_name in ('test_batch', 'test') else 'train'}")


# --------------------------------------------------------------------------------------------- folders
def _load_folder(path: Path, split: Split, size: tuple[int, int] | None, channels: int | None) -> ImageSet:
    rels, class_of, chosen = select_split(list_images(path), split, path)
    classes = sorted(set(class_of))
    index = {c: i for i, c in enumerate(classes)}
    label_of = dict(zip(rels, (index[c] for c in class_of), strict=True))
    gray = channels == 1
    arrays: dict[tuple[str, ...], np.ndarray] = {}
    for rel, data in read_images(path, rels):
        arr = decode_image(data, "/".join(rel), size, gray)
        if size is None:
            size = (arr.shape[1], arr.shape[2])
        arrays[rel] = arr
    order = [rels[i] for i in np.random.RandomState(0).permutation(len(rels))]  # fixed, class-mixed order
    images = torch.from_numpy(np.stack([arrays[r] for r in order]))
    labels = torch.tensor([label_of[r] for r in order], dtype=torch.long)
    return ImageSet(set_channels(images, channels), labels, tuple(classes), f"{path.name}:{chosen}")
