"""Compact file for kernel-pruned models: only kept 2-D kernels plus an index per layer, no pickle.

Layout (little-endian)::

    b"SLIMKRN1" | u64 header length | header (UTF-8 JSON) | payload | sha256(everything before)

The header holds the format/version, the model source, how to rebuild the architecture (``arch``: a source
string that builds it, or the module pickled with its weights on ``meta`` after the payload's tensors, as in
a ``.slim`` file; :mod:`slimcnn.models._architecture`), the model's info, and one entry per state-dict
tensor: ``dense`` (raw bytes) or ``kernels`` (the kept kernels ``[n_kept, kh, kw]`` in ``(out, in)``
row-major order plus an index: a bitmap of ``out*in`` bits or a list of flat indices as uint16/uint32,
whichever is smaller).
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from slimcnn._io import atomic_write
from slimcnn.errors import ConfigError, ModelLoadError
from slimcnn.models._architecture import architecture_record, info_record, rebuild_architecture, stored_info

__all__ = ["KernelFileStats", "load_kernel_compact", "read_kernel_compact", "save_kernel_compact"]

MAGIC = b"SLIMKRN1"
FORMAT = "slimcnn-kernel-compact"
VERSION = 1
_DTYPES = {str(d).removeprefix("torch."): d for d in (
    torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64, torch.int32, torch.int16,
    torch.int8, torch.uint8, torch.bool,
)}


@dataclass(frozen=True)
class KernelFileStats:
    """Byte accounting of one compact file."""

    file_bytes: int
    header_bytes: int
    """Magic, length, JSON header, the architecture record when one is stored (a pickled module: a few KB) and
    checksum."""
    kernel_value_bytes: int
    """Kept kernel weights of the pruned layers."""
    index_bytes: int
    """Bitmaps / index lists (the overhead of the free pattern)."""
    dense_bytes: int
    """Every other tensor, stored as is."""
    kernels_kept: int
    kernels_total: int


def _raw(t: Tensor) -> bytes:
    return t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def _tensor(b: bytes, dtype: str, shape: list[int]) -> Tensor:
    if dtype not in _DTYPES:
        raise ModelLoadError(f"unsupported dtype '{dtype}' in kernel file; expected one of {sorted(_DTYPES)}")
    return torch.frombuffer(bytearray(b), dtype=torch.uint8).view(_DTYPES[dtype]).reshape(shape).clone()


def _index(mask: Tensor) -> tuple[str, bytes]:
    flat = mask.reshape(-1).cpu().numpy().astype(bool)
    bitmap = np.packbits(flat).tobytes()
    idt = np.uint16 if flat.size <= 65536 else np.uint32
    lst = np.flatnonzero(flat).astype(idt).tobytes()
    return ("list", lst) if len(lst) < len(bitmap) else ("bitmap", bitmap)


def save_kernel_compact(
    model: nn.Module,
    masks: dict[str, Tensor],
    path: str | Path,
    *,
    source: str | None = None,
    scale: int | None = None,
    info: Any = None,
) -> KernelFileStats:
    """Write ``model`` with ``masks`` applied, storing only the kept kernels of masked layers.

    The model itself is not modified; removed kernels are simply not stored (they load as ``+0.0``).

    Args:
        model: the model (masked or not).
        masks: ``{conv FQN: BoolTensor[out, in]}`` (``True`` = keep), e.g. from
            :func:`slimcnn.prune.kernel.kernel_masks`.
        path: output file, written atomically.
        source: model source string (``"slimcnn:vdsr"``, ``file:...``); with it the file records how to
            rebuild the architecture, so :func:`load_kernel_compact` needs no template: a source that builds it
            exactly, else the module itself (a channel-pruned model, a ``file:`` source), so the file loads
            without the source's files.
        scale: SR scale passed back to ``load_model``.
        info: the model's :class:`~slimcnn.models.ModelInfo` (task, input, scale...), stored for
            ``file:model.slimk``.

    Returns:
        :class:`KernelFileStats`.

    Raises:
        ConfigError: a mask names no 4-D ``<fqn>.weight`` or has the wrong shape.
    """
    sd = model.state_dict()
    entries: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    offset = kv = ib = db = kept = total = 0
    masked = {f"{k}.weight": v for k, v in masks.items()}
    for key in masked:
        if key not in sd or sd[key].dim() != 4:
            raise ConfigError(f"mask '{key[:-7]}' names no conv weight in the model's state dict")
    for name, t in sd.items():
        e: dict[str, Any] = {"name": name, "dtype": str(t.dtype).removeprefix("torch."), "shape": list(t.shape)}
        if name in masked:
            mask = masked[name].to(torch.bool).cpu()
            if tuple(mask.shape) != tuple(t.shape[:2]):
                raise ConfigError(f"mask for '{name}' has shape {tuple(mask.shape)}, expected {tuple(t.shape[:2])}")
            values = _raw(t.detach().cpu().reshape(-1, *t.shape[2:])[mask.reshape(-1)])
            kind, idx = _index(mask)
            e.update(kind="kernels", index=kind, n_kept=int(mask.sum()), offset=offset, nbytes=len(values),
                     index_offset=offset + len(values), index_nbytes=len(idx))
            chunks += [values, idx]
            offset += len(values) + len(idx)
            kv, ib = kv + len(values), ib + len(idx)
            kept, total = kept + int(mask.sum()), total + mask.numel()
        else:
            b = _raw(t)
            e.update(kind="dense", offset=offset, nbytes=len(b))
            chunks.append(b)
            offset += len(b)
            db += len(b)
        entries.append(e)
    arch: dict[str, Any] | None = None
    if source:
        # the scale picks the build (an x3 FSRCNN has the x2 one's state-dict shapes, not its stride)
        arch, skeleton = architecture_record(model, source, info if info is not None else SimpleNamespace(scale=scale))
        if arch is not None and skeleton is not None:
            arch |= {"offset": offset, "nbytes": len(skeleton)}
            chunks.append(skeleton)
    header = json.dumps({"format": FORMAT, "version": VERSION, "source": source, "scale": scale, "arch": arch,
                         "info": info_record(info), "tensors": entries}, separators=(",", ":")).encode()
    blob = MAGIC + struct.pack("<Q", len(header)) + header + b"".join(chunks)
    blob += hashlib.sha256(blob).digest()
    p = Path(path)
    atomic_write(p, lambda tmp: tmp.write_bytes(blob))
    return KernelFileStats(len(blob), len(blob) - kv - ib - db, kv, ib, db, kept, total)  # the skeleton: overhead


def read_kernel_compact(path: str | Path) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """Verify and decode a compact file.

    Returns:
        ``(header, state_dict)``; removed kernels are ``+0.0``. A stored module skeleton is
        ``header["arch"]["skeleton"]`` (bytes).

    Raises:
        ModelLoadError: missing file, wrong magic/format/version, checksum mismatch or truncation.
    """
    p = Path(path)
    try:
        blob = p.read_bytes()
    except OSError as e:
        raise ModelLoadError(f"cannot read kernel file {p}: {e}") from e
    if len(blob) < len(MAGIC) + 8 + 32 or blob[: len(MAGIC)] != MAGIC:
        raise ModelLoadError(f"{p} is not a slimcnn kernel-compact file (bad magic)")
    if hashlib.sha256(blob[:-32]).digest() != blob[-32:]:
        raise ModelLoadError(f"{p}: checksum mismatch; the file is corrupt or truncated")
    (hlen,) = struct.unpack("<Q", blob[len(MAGIC): len(MAGIC) + 8])
    start = len(MAGIC) + 8
    header = json.loads(blob[start: start + hlen])
    if header.get("format") != FORMAT or header.get("version") != VERSION:
        raise ModelLoadError(
            f"{p}: format {header.get('format')} v{header.get('version')} not supported (expected {FORMAT} v{VERSION})"
        )
    payload = blob[start + hlen: -32]
    arch = header.get("arch")
    if arch and "offset" in arch:
        arch["skeleton"] = payload[arch["offset"]: arch["offset"] + arch["nbytes"]]
    sd: dict[str, Tensor] = {}
    for e in header["tensors"]:
        data = payload[e["offset"]: e["offset"] + e["nbytes"]]
        shape = e["shape"]
        if e["kind"] == "dense":
            sd[e["name"]] = _tensor(data, e["dtype"], shape)
            continue
        o, i = shape[0], shape[1]
        idx = payload[e["index_offset"]: e["index_offset"] + e["index_nbytes"]]
        if e["index"] == "bitmap":
            keep = np.unpackbits(np.frombuffer(idx, dtype=np.uint8))[: o * i].astype(bool)
        else:
            flat = np.frombuffer(idx, dtype=np.uint16 if o * i <= 65536 else np.uint32).astype(np.int64)
            keep = np.zeros(o * i, dtype=bool)
            keep[flat] = True
        kept = _tensor(data, e["dtype"], [e["n_kept"], *shape[2:]])
        w = torch.zeros(o * i, *shape[2:], dtype=kept.dtype)
        w[torch.from_numpy(keep)] = kept
        sd[e["name"]] = w.reshape(shape)
    return header, sd


def load_kernel_compact(path: str | Path, model: nn.Module | None = None) -> nn.Module:
    """Rebuild the model stored by :func:`save_kernel_compact`.

    Args:
        path: the compact file.
        model: an architecture template to load into (in place); default: rebuilt from the stored
            source with :func:`slimcnn.models.load_model`.

    Returns:
        The model in eval mode, equal bit for bit to the masked model that was saved.

    Raises:
        ModelLoadError: corrupt file, no stored source and no template, or a state-dict mismatch.
    """
    header, sd = read_kernel_compact(path)
    if model is None:
        model = _architecture(path, header)
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        raise ModelLoadError(f"{path} does not fit the model: {str(e).splitlines()[0]}") from e
    return model.eval()


def _architecture(path: str | Path, header: dict[str, Any]) -> nn.Module:
    """The empty architecture a compact file records (its ``arch``), or for older files the build of its source."""
    arch = header.get("arch")
    if arch is not None:
        return rebuild_architecture(path, arch, arch.get("skeleton"), str(header.get("source") or ""),
                                    stored_info(header))
    if not header.get("source"):
        raise ModelLoadError(f"{path} stores no model source; pass model= (an architecture template)")
    from slimcnn.models import load_model

    return load_model(header["source"], scale=header.get("scale")).model


def _slimk_file_loader(path: Path, opts: Any) -> Any:
    """``file:model.slimk`` for every command (registered in ``slimcnn.models.FILE_LOADERS``)."""
    import dataclasses

    from slimcnn.models import LoadedModel, load_model

    if getattr(opts, "arch", None) is not None:
        raise ConfigError(f"'{path}' is a kernel-compact file that names its own architecture; drop --arch")
    header, _ = read_kernel_compact(path)
    if header.get("info") is not None:
        model = load_kernel_compact(path)
        info = dataclasses.replace(stored_info(header), weights=str(path))
        return LoadedModel(model=model, source=f"file:{path}", info=info)
    # a file without stored info (older slimcnn): the info of its source's build
    if not header.get("source"):
        raise ModelLoadError(f"{path} stores no model source; load it with load_kernel_compact(path, model=...)")
    base = load_model(header["source"], scale=header.get("scale"), weights=None)
    model = load_kernel_compact(path, model=base.model)
    info = dataclasses.replace(base.info, pretrained=True, weights=str(path),
                               notes=tuple(n for n in base.info.notes if not n.startswith("untrained")))
    return dataclasses.replace(base, model=model, source=f"file:{path}", info=info)


def register_slimk_loader() -> None:
    """Register :func:`_slimk_file_loader` for ``.slimk`` (idempotent)."""
    from slimcnn.models.files import FILE_LOADERS, register_file_loader

    if ".slimk" not in FILE_LOADERS:
        register_file_loader(".slimk")(_slimk_file_loader)


register_slimk_loader()
