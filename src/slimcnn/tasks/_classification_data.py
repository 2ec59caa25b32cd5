"""Classification images, decoded into memory or streamed, and batched (split out of classification.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from slimcnn.data._stream import (
    STREAM_ABOVE_BYTES,
    StreamIndex,
    decoded_bytes,
    index_images,
    shard_paths,
    stream_batches,
)
from slimcnn.data.classification import BUILTIN, ImageSet, _cifar_root, augment_uint8, load_classification
from slimcnn.errors import ConfigError
from slimcnn.tasks.base import Batch

if TYPE_CHECKING:  # the task module imports this one
    from slimcnn.tasks.classification import ClassificationTask


def load_images(task: ClassificationTask, spec: str | Path, split: str) -> ImageSet | StreamIndex:
    """The images of ``spec``'s ``split`` for ``task``: an index to stream, or decoded into memory."""
    split = "train" if split == "train" else "test"
    streamed = _streamed(task, spec, split)
    if streamed is not None:
        return streamed
    return load_classification(spec, split, size=task.size, channels=task.channels)  # type: ignore[arg-type]


def _streamed(task: ClassificationTask, spec: str | Path, split: str) -> StreamIndex | None:
    """The index to stream ``spec`` from, or None to decode it into memory (see ``stream``)."""
    if task.stream is False or spec in BUILTIN:
        return None
    if shard_paths(spec) is not None:
        return index_images(spec, split)
    path = Path(spec)
    if path.is_file() and not path.name.lower().endswith(".tar"):  # compressed: no random access
        return None
    if task.stream is None:
        small_archive = path.is_file() and path.stat().st_size < STREAM_ABOVE_BYTES // 32
        if task.size is None or small_archive or _cifar_root(path) is not None:
            return None
        if decoded_bytes(len(index_images(path, split)), task.size, task.channels) <= STREAM_ABOVE_BYTES:
            return None
    if task.size is None:
        raise ConfigError("streaming needs the model's input size (ModelInfo.input_shape)")
    return index_images(path, split)


def _stream_options(task: ClassificationTask) -> dict[str, Any]:
    return {"size": task.size, "channels": task.channels, "workers": task.loader_workers,
            "strict": task.strict_data, "skipped": task.skipped}


def shuffled_batches(task: ClassificationTask, ds: ImageSet | StreamIndex, batch_size: int, *, augment: bool,
                     seed: int, ranks: tuple[int, int] = (0, 1)) -> Iterator[Batch]:
    """Endless shuffled batches (a new permutation per pass), deterministic from ``seed``.

    A streamed set yields rank ``ranks[0]``'s slice of each global batch (of ``ranks[1]``).
    """
    if isinstance(ds, StreamIndex):
        for x, y in stream_batches(ds, batch_size=batch_size, train=True, augment=augment, seed=seed,
                                   rank=ranks[0], world=ranks[1], **_stream_options(task)):
            yield task._inputs(x), y
        return
    g = torch.Generator().manual_seed(seed)
    n = len(ds)
    bs = min(batch_size, n)
    while True:
        perm = torch.randperm(n, generator=g)
        for i in range(0, n - bs + 1, bs):
            idx = perm[i : i + bs]
            x = ds.images[idx]
            if augment:
                x = augment_uint8(x, g, pad=max(1, x.shape[-1] // 8))
            yield task._inputs(x), ds.labels[idx]


def ordered_batches(task: ClassificationTask, ds: ImageSet | StreamIndex,
                    n: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The first ``n`` images (``uint8``) and labels in the set's fixed order, a batch at a time."""
    if isinstance(ds, StreamIndex):
        yield from stream_batches(ds, batch_size=task.batch_size, train=False, limit=n, **_stream_options(task))
        return
    for i in range(0, n, task.batch_size):
        j = min(n, i + task.batch_size)
        yield ds.images[i:j], ds.labels[i:j]
