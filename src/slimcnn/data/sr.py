"""Super-resolution data: HR images -> (HR Y, LR Y, bicubic Y) triples, the literature's protocol.

Protocol (SRCNN / FSRCNN / VDSR evaluation code):

1. Read the HR image; RGB -> Y with MATLAB's BT.601 ``rgb2ycbcr`` (Y in [16, 235]/255). A
   1-channel image (Set14 ``bridge``) is used as Y as-is, in [0, 1], as the MATLAB scripts do.
2. ``modcrop`` to a multiple of the scale (bottom/right).
3. ``LR = imresize(HR_y, 1/scale)``; ``bicubic = imresize(LR, scale)`` with the MATLAB-compatible
   :func:`~slimcnn.data.imresize.imresize`.

Sources: a folder of images (``png``/``bmp``/``jpg``/``jpeg``/``tif``; Set5/Set14/T91/BSD200 style),
or a built-in set: ``photos`` (the natural photos shipped inside scikit-image and scikit-learn),
``photos-train`` / ``photos-val`` (a fixed split of it). A set is a list of files
(:class:`SRImages`): each image is decoded and degraded when it is read, one at a time, and its triple
kept in a cache bounded at :data:`SR_CACHE_BYTES` for the whole process (least recently used first
out), so no set is held whole unless it fits: Set5/Set14-size sets stay in memory across a search's
many evaluations, a DIV2K-size set is scored image by image in bounded memory.
"""

from __future__ import annotations

import functools
import logging
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, overload

import numpy as np

from slimcnn._io import UNREADABLE_HINT, UNREADABLE_IMAGE, open_image, unreadable_reason
from slimcnn.data.imresize import imresize, modcrop, rgb2y
from slimcnn.errors import ConfigError, DataError, unknown_name

__all__ = [
    "PHOTOS",
    "PHOTOS_VAL",
    "SR_CACHE_BYTES",
    "SRDataset",
    "SRImage",
    "SRImages",
    "builtin_sr_sets",
    "load_sr_dataset",
    "make_sr_image",
    "read_y",
    "sample_patches",
    "sr_files",
]

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".bmp", ".jpg", ".jpeg", ".tif", ".tiff")

PHOTOS: tuple[str, ...] = (
    "skimage:astronaut.png",
    "skimage:camera.png",
    "skimage:chelsea.png",
    "skimage:coffee.png",
    "skimage:coins.png",
    "skimage:rocket.jpg",
    "skimage:hubble_deep_field.jpg",
    "skimage:motorcycle_left.png",
    "skimage:retina.jpg",
    "skimage:brick.png",
    "skimage:grass.png",
    "skimage:gravel.png",
    "sklearn:china.jpg",
    "sklearn:flower.jpg",
)
"""Natural photos bundled (no download) with scikit-image 0.2x and scikit-learn."""

PHOTOS_VAL: tuple[str, ...] = ("skimage:astronaut.png", "skimage:chelsea.png", "skimage:coffee.png")
"""The held-out part of ``photos`` (``photos-val``); the rest is ``photos-train``."""


@dataclass(frozen=True)
class SRImage:
    """One evaluation/training image at one scale; all arrays are Y in [0, 1], float64."""

    name: str
    hr: np.ndarray
    """Modcropped ground truth ``[H, W]``."""
    lr: np.ndarray
    """``imresize(hr, 1/scale)``, ``[H/scale, W/scale]``."""
    bicubic: np.ndarray
    """``imresize(lr, scale)``, ``[H, W]`` (the input of SRCNN/VDSR)."""


SR_CACHE_BYTES = 1 << 30
"""Degraded triples kept in memory across the process (least recently used dropped first)."""

_triples: OrderedDict[tuple[str, int], SRImage] = OrderedDict()


def _nbytes(im: SRImage) -> int:
    return im.hr.nbytes + im.lr.nbytes + im.bicubic.nbytes


def _triple(name: str, path: Path, scale: int) -> SRImage:
    """The triple of one image file, from the bounded cache or decoded and degraded now."""
    key = (str(path), scale)
    im = _triples.get(key)
    if im is not None:
        _triples.move_to_end(key)
        return im
    im = make_sr_image(name, read_y(path), scale)
    if _nbytes(im) <= SR_CACHE_BYTES:
        _triples[key] = im
        held = sum(_nbytes(t) for t in _triples.values())
        while held > SR_CACHE_BYTES:
            held -= _nbytes(_triples.popitem(last=False)[1])
    return im


class SRImages(Sequence[SRImage]):
    """A set's images at one scale, each decoded and degraded when read (see the module docstring).

    Indexing gives an :class:`SRImage`, slicing another :class:`SRImages`; only the file list is held
    (and pickled, e.g. into DataLoader workers).
    """

    def __init__(self, files: Sequence[tuple[str, Path]], scale: int) -> None:
        self.files, self.scale = tuple(files), scale

    def __len__(self) -> int:
        return len(self.files)

    @overload
    def __getitem__(self, k: int) -> SRImage: ...
    @overload
    def __getitem__(self, k: slice) -> SRImages: ...
    def __getitem__(self, k: int | slice) -> SRImage | SRImages:
        if isinstance(k, slice):
            return SRImages(self.files[k], self.scale)
        name, path = self.files[k]
        return _triple(name, path, self.scale)


@dataclass(frozen=True)
class SRDataset:
    """A named set of :class:`SRImage` at one scale."""

    name: str
    scale: int
    images: Sequence[SRImage]
    """:class:`SRImages` for a folder or built-in set (read one at a time); any sequence of triples otherwise."""

    def __len__(self) -> int:
        return len(self.images)


def _package_file(ref: str) -> Path:
    pkg, _, fname = ref.partition(":")
    if pkg == "skimage":
        import skimage.data

        base = Path(skimage.data.__file__).parent
    elif pkg == "sklearn":
        import sklearn.datasets

        base = Path(sklearn.datasets.__file__).parent / "images"
    else:
        raise ConfigError(f"unknown bundled-image package '{pkg}' in '{ref}'")
    return base / fname


def builtin_sr_sets() -> dict[str, tuple[str, ...]]:
    """Built-in set names -> bundled image references, keeping only files present in this install."""
    present = tuple(r for r in PHOTOS if _package_file(r).is_file())
    val = tuple(r for r in PHOTOS_VAL if r in present)
    return {"photos": present, "photos-val": val, "photos-train": tuple(r for r in present if r not in val)}


def read_y(path: str | Path) -> np.ndarray:
    """Read an image file as its Y channel in [0, 1] (float64, ``[H, W]``).

    RGB(A) images go through MATLAB's BT.601 ``rgb2ycbcr``; 1-channel images are returned as
    ``gray / 255`` (how the MATLAB SR scripts treat Set14's ``bridge``).

    Raises:
        DataError: The file cannot be read as an image.
    """

    try:
        with open_image(path) as im:
            if im.mode in ("L", "LA", "1"):
                return np.asarray(im.convert("L"), dtype=np.float64) / 255.0
            if im.mode.startswith("I;16"):
                return np.asarray(im, dtype=np.float64) / 65535.0
            rgb = np.asarray(im.convert("RGB"))
    except UNREADABLE_IMAGE as e:
        raise DataError(f"cannot read image {path} ({unreadable_reason(e)}): {UNREADABLE_HINT}") from e
    return rgb2y(rgb)


def make_sr_image(name: str, y: np.ndarray, scale: int) -> SRImage:
    """Build the (HR, LR, bicubic) triple of one Y image with the MATLAB degradation."""
    hr = modcrop(np.asarray(y, dtype=np.float64), scale)
    if min(hr.shape) < _min_side(scale):
        raise DataError(_too_small(name, y.shape[0], y.shape[1], scale))
    lr = imresize(hr, 1.0 / scale)
    if lr.shape != (hr.shape[0] // scale, hr.shape[1] // scale):  # guard against ceil() rounding
        lr = imresize(hr, output_shape=(hr.shape[0] // scale, hr.shape[1] // scale))
    return SRImage(name=name, hr=hr, lr=lr, bicubic=imresize(lr, output_shape=hr.shape))


def _list_source(source: str) -> tuple[str, list[tuple[str, Path]]]:
    sets = builtin_sr_sets()
    if source in sets:
        refs = sets[source]
        if not refs:
            raise DataError(
                f"built-in set '{source}' has no images in this scikit-image/scikit-learn install"
            )
        return source, [(r.partition(":")[2].rsplit(".", 1)[0], _package_file(r)) for r in refs]
    p = Path(source).expanduser()
    if not p.exists():
        raise DataError(
            f"SR data folder {p} does not exist; give a folder of HR images or one of {sorted(sets)}"
        )
    if p.is_file() and p.suffix.lower() not in IMAGE_SUFFIXES:
        raise DataError(f"{p} is not an image: super-resolution --data is a folder of HR images (or one image); "
                        "extract an archive into a folder and pass that")
    files = [p] if p.is_file() else sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        nested = sorted(d.name for d in p.iterdir() if d.is_dir() and any(
            f.suffix.lower() in IMAGE_SUFFIXES for f in d.iterdir()))
        where = (f"; its subfolders {', '.join(nested[:3])}{', ...' if len(nested) > 3 else ''} hold images: "
                 f"super-resolution --data is one flat folder of HR images, so pass one of them") if nested else ""
        raise DataError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {p}{where}")
    return p.name, [(f.stem, f) for f in files]


@functools.lru_cache(maxsize=16)
def _load_cached(source: str, scale: int) -> SRDataset:
    name, files = _list_source(source)
    for stem, f in files:
        _check_size(stem, f, scale)
    log.info("indexed %d SR images from %s at x%d", len(files), source, scale)
    return SRDataset(name=name, scale=scale, images=SRImages(files, scale))


def _check_size(name: str, path: Path, scale: int) -> None:
    """Refuse, from its header alone, an image that cannot be read or is too small for ``scale``."""

    try:
        with open_image(path) as im:
            w, h = im.size
    except UNREADABLE_IMAGE as e:
        raise DataError(f"cannot read image {path} ({unreadable_reason(e)}): {UNREADABLE_HINT}") from e
    if min(h - h % scale, w - w % scale) < _min_side(scale):
        raise DataError(_too_small(name, h, w, scale))


_SSIM_WINDOW = 11
"""Side of the SSIM window the SR literature uses (Gaussian, sigma 1.5): it must fit in the shaved image."""


def _min_side(scale: int) -> int:
    """The smallest image side (after cropping to a multiple of ``scale``) that can be scored: ``scale`` pixels are
    shaved off each border and SSIM's window must fit in the rest."""
    return 2 * scale + _SSIM_WINDOW


def _too_small(name: str, h: int, w: int, scale: int) -> str:
    """The one-line refusal of an image under :func:`_min_side`."""
    return (f"image '{name}' ({h}x{w}) is too small for scale {scale}: an SR image needs at least "
            f"{_min_side(scale)}x{_min_side(scale)} pixels ({scale} shaved off each border, then SSIM's "
            f"{_SSIM_WINDOW}x{_SSIM_WINDOW} window); remove it from the data or use larger images")


def load_sr_dataset(source: str | Path | SRDataset, scale: int) -> SRDataset:
    """Index (once per process) a super-resolution set at ``scale``; its images are read when used.

    Args:
        source: A folder of HR images, one image file, ``"photos"``, ``"photos-train"``,
            ``"photos-val"``, or an :class:`SRDataset` (returned unchanged if its scale matches).
        scale: Integer upscaling factor (2, 3, 4, ...).

    Returns:
        The cached :class:`SRDataset` (its images: :class:`SRImages`); treat its arrays as read-only.

    Raises:
        ConfigError: ``scale`` is not an integer >= 2 or a given dataset has another scale.
        DataError: The folder is missing, empty or holds images whose header cannot be read or that
            are too small (an image that cannot be decoded is refused when it is read).
        UnknownNameError: ``source`` looks like a set name but is not a built-in one.
    """
    if isinstance(scale, bool) or not isinstance(scale, (int, np.integer)) or scale < 2:
        raise ConfigError(f"SR scale must be an integer >= 2, got {scale!r}")
    if isinstance(source, SRDataset):
        if source.scale != scale:
            raise ConfigError(f"dataset '{source.name}' was built for x{source.scale}, not x{scale}")
        return source
    return _load_cached(sr_source_key(source), int(scale))


def sr_source_key(source: str | Path) -> str:
    """A built-in set's name, or the resolved path of a folder/file (the cache key of a source).

    Raises:
        UnknownNameError: ``source`` looks like a set name but is not a built-in one.
    """
    key = str(source)
    sets = builtin_sr_sets()
    if key not in sets:
        p = Path(key).expanduser()
        if not p.exists() and isinstance(source, str) and not any(c in key for c in "/\\."):
            raise unknown_name("SR dataset", key, sets)  # a bare name, not a path: suggest built-ins
        key = str(p.resolve())
    return key


def sr_files(source: str | Path) -> tuple[str, list[tuple[str, Path]]]:
    """The set's name and its ``(name, path)`` images, nothing decoded.

    Raises:
        DataError: The folder is missing or holds no images.
    """
    return _list_source(sr_source_key(source))


def sample_patches(
    images: Sequence[SRImage],
    n: int,
    *,
    patch: int,
    scale: int,
    sr_input: Literal["upsampled", "lr"],
    rng: np.random.Generator,
    augment: bool = True,
    min_std: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Random aligned (input, target) crops for training, float32.

    For ``sr_input="upsampled"`` the input is a ``patch x patch`` crop of the bicubic image and the
    target the same crop of HR (VDSR: 41, SRCNN: 33). For ``"lr"`` the input is a ``patch x patch``
    LR crop at ``(i, j)`` and the target the HR crop at ``(i*scale, j*scale)`` of size
    ``patch*scale``. Crops start on multiples of ``scale`` in HR so LR and HR pixels line up.
    With ``augment`` each pair gets the same random horizontal flip and 90-degree rotation.
    Images are picked uniformly. With ``min_std > 0`` a crop whose
    HR target has a standard deviation below it (flat sky, black borders) is redrawn, up to 4 times.

    Returns:
        ``inputs [n, 1, p, p]`` and ``targets [n, 1, P, P]``.
    """
    if n < 1 or patch < 1:
        raise ConfigError(f"need n >= 1 and patch >= 1, got n={n}, patch={patch}")
    lr_p = patch if sr_input == "lr" else -(-patch // scale)
    usable = [k for k, im in enumerate(images) if min(im.lr.shape) >= lr_p]
    if not usable:
        raise DataError(f"no training image is large enough for {patch}x{patch} patches at x{scale}")
    in_sz = patch
    out_sz = patch * scale if sr_input == "lr" else patch
    xs = np.empty((n, 1, in_sz, in_sz), dtype=np.float32)
    ys = np.empty((n, 1, out_sz, out_sz), dtype=np.float32)
    picks = rng.choice(usable, size=n)  # uniform over images (area weighting trained worse: see docs)
    for b, k in enumerate(picks):
        im = images[k]
        for _ in range(5 if min_std > 0 else 1):
            if sr_input == "lr":
                i = int(rng.integers(0, im.lr.shape[0] - patch + 1))
                j = int(rng.integers(0, im.lr.shape[1] - patch + 1))
                x = im.lr[i : i + patch, j : j + patch]
                y = im.hr[i * scale : i * scale + out_sz, j * scale : j * scale + out_sz]
            else:
                i = int(rng.integers(0, (im.hr.shape[0] - patch) // scale + 1)) * scale
                j = int(rng.integers(0, (im.hr.shape[1] - patch) // scale + 1)) * scale
                x = im.bicubic[i : i + patch, j : j + patch]
                y = im.hr[i : i + patch, j : j + patch]
            if min_std <= 0 or float(y.std()) >= min_std:
                break
        if augment:
            rot = int(rng.integers(0, 4))
            if rng.random() < 0.5:
                x, y = x[:, ::-1], y[:, ::-1]
            x, y = np.rot90(x, rot), np.rot90(y, rot)
        xs[b, 0] = x
        ys[b, 0] = y
    return xs, ys
