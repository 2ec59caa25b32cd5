"""Streaming super-resolution training data: on-the-fly patches through a torch DataLoader.

A large HR set (DIV2K: 800 images of ~2.8 MP, about 38 GB as float64 HR/LR/bicubic triples) is not
degraded into memory. Only the file list and each image's size (read from its header) are kept; each
batch is built by a DataLoader worker: it decodes a few images, cuts a random window of each, degrades
the window with the MATLAB bicubic kernel and samples patches inside it
(:func:`~slimcnn.data.sr.sample_patches`: same flips, rotations and flat-patch redraws as in memory).

The window is the patch region plus a margin of ``6 * scale`` HR pixels (clipped at the image's
edges), wider than the reach of the two bicubic resizes (about ``4 * scale``), so every patch equals
the same crop of the whole image's triple — the in-memory protocol, without the whole image. Batch
``b`` is drawn from ``seed`` and ``b`` alone, so the stream is the same with any number of workers.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from slimcnn._io import UNREADABLE_HINT, UNREADABLE_IMAGE, open_image, unreadable_reason
from slimcnn.data.imresize import modcrop
from slimcnn.data.sr import SRImage, make_sr_image, read_y, sample_patches
from slimcnn.errors import DataError

SR_STREAM_ABOVE_BYTES = 1 << 30
"""Training sets whose degraded triples (HR, LR and bicubic Y as float64) would take more are streamed."""

MARGIN = 6
"""Window margin around the patch region, in multiples of the scale (see the module docstring)."""

PATCHES_PER_IMAGE = 8
"""Patches cut from one decoded image (a batch of 64 decodes 8 images)."""


def image_sizes(files: list[tuple[str, Path]]) -> list[tuple[int, int]]:
    """``(H, W)`` of each image, read from its header (nothing decoded)."""

    sizes = []
    for _, f in files:
        try:
            with open_image(f) as im:
                sizes.append((im.size[1], im.size[0]))
        except UNREADABLE_IMAGE as e:
            raise DataError(f"cannot read image {f} ({unreadable_reason(e)}): {UNREADABLE_HINT}") from e
    return sizes


def triple_bytes(sizes: list[tuple[int, int]], scale: int) -> int:
    """What the in-memory set would take: HR, bicubic and LR Y as float64."""
    return sum(int(h * w * 8 * (2 + 1 / scale**2)) for h, w in sizes)


def window_triple(name: str, y: np.ndarray, scale: int, top: int, left: int, height: int, width: int) -> SRImage:
    """The triple of the HR region ``[top:top+height, left:left+width]`` (multiples of ``scale``) of the
    modcropped ``y``, equal to that region of the whole image's triple: degraded from a window with a margin."""
    hr = modcrop(np.asarray(y, dtype=np.float64), scale)
    m = MARGIN * scale
    t0, l0 = max(0, top - m), max(0, left - m)
    t1, l1 = min(hr.shape[0], top + height + m), min(hr.shape[1], left + width + m)
    win = make_sr_image(name, hr[t0:t1, l0:l1], scale)
    i, j = top - t0, left - l0
    return SRImage(name, win.hr[i : i + height, j : j + width],
                   win.lr[i // scale : (i + height) // scale, j // scale : (j + width) // scale],
                   win.bicubic[i : i + height, j : j + width])


class SRPatchBatches(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Batch ``b`` of random aligned (input, HR target) patches, cut from freshly decoded images.

    Args:
        files: ``(name, path)`` of the HR images.
        sizes: Their ``(H, W)`` (:func:`image_sizes`).
        scale: SR factor.
        patch: Input patch side (as :func:`~slimcnn.data.sr.sample_patches`).
        batch_size: Patches per batch.
        sr_input: ``"upsampled"`` (bicubic input) or ``"lr"``.
        seed: Batch ``b`` is drawn from ``(seed, b)``.
        augment: Random flips and rotations.
        min_std: Redraw flat patches (see :func:`~slimcnn.data.sr.sample_patches`).
    """

    def __init__(self, files: list[tuple[str, Path]], sizes: list[tuple[int, int]], *, scale: int, patch: int,
                 batch_size: int, sr_input: Literal["upsampled", "lr"], seed: int, augment: bool = True,
                 min_std: float = 0.0) -> None:
        self.files, self.scale, self.patch, self.batch_size = files, scale, patch, batch_size
        self.sr_input, self.seed, self.augment, self.min_std = sr_input, seed, augment, min_std
        self.region = (patch * scale if sr_input == "lr" else patch) * 4  # HR side of the region patches come from
        self.region += -self.region % scale
        lr_side = patch if sr_input == "lr" else -(-patch // scale)
        self.sizes = [(h - h % scale, w - w % scale) for h, w in sizes]
        self.usable = [k for k, (h, w) in enumerate(self.sizes) if min(h, w) // scale >= lr_side]
        if not self.usable:
            raise DataError(f"no training image is large enough for {patch}x{patch} patches at x{scale}")

    def __len__(self) -> int:
        return 2**62  # endless: fit_ draws as many batches as it needs

    def __getitem__(self, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([self.seed, b])
        xs, ys = [], []
        left = self.batch_size
        while left > 0:
            k = self.usable[int(rng.integers(len(self.usable)))]
            name, path = self.files[k]
            h, w = min(self.region, self.sizes[k][0]), min(self.region, self.sizes[k][1])
            top = int(rng.integers(0, (self.sizes[k][0] - h) // self.scale + 1)) * self.scale
            left_px = int(rng.integers(0, (self.sizes[k][1] - w) // self.scale + 1)) * self.scale
            region = window_triple(name, read_y(path), self.scale, top, left_px, h, w)
            n = min(PATCHES_PER_IMAGE, left)
            x, y = sample_patches((region,), n, patch=self.patch, scale=self.scale, sr_input=self.sr_input, rng=rng,
                                  augment=self.augment, min_std=self.min_std)
            xs.append(x)
            ys.append(y)
            left -= n
        return torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys))


def stream_sr_patches(data: SRPatchBatches, *, workers: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The batches of ``data`` in order, built by ``workers`` DataLoader processes (0: in this process)."""
    loader = DataLoader(data, batch_size=None, sampler=range(len(data)), num_workers=workers,
                        prefetch_factor=2 if workers else None)
    yield from loader
