"""The compact file a run writes beside ``model.pt`` when its weights have one: ``model.slim`` (k-means codebooks
and indices) or ``model.slimk`` (free-pattern kernel removal: only the kept kernels and an index).

A byte budget is judged on these formats, so each is written, decoded again and compared with ``model.pt``
bit for bit, and its weight bytes are recorded next to the ones the run claimed.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn


def same_weights(a: nn.Module, b: nn.Module) -> bool:
    """Bit for bit the same state (same keys, dtypes and values)."""
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]) for k in sa)


def write_slim(folder: Path, loaded: Any, packed: Any, written: nn.Module, *, huffman: bool = False) -> dict[str, Any]:
    """``model.slim`` of ``packed`` (a :class:`~slimcnn.quantize.QuantizeResult`; ``huffman``: indices Huffman-coded
    where smaller); ``decodes_to_model_pt`` says whether it decodes bit for bit to ``written`` (``model.pt``
    re-loaded). ``weight_bytes`` is what the file stores of the parameters (codebooks, indices, float32 rest),
    which the k-means family's cost bounds."""
    from slimcnn.quantize import load_packed, save_packed

    pack = save_packed(folder / "model.slim", packed, source=loaded.source, info=loaded.info, huffman=huffman)
    decoded = load_packed(folder / "model.slim").model
    return {"file_bytes": pack.file_bytes, "weight_bytes": pack.weight_bytes, "payload_bytes": pack.payload_bytes,
            "paper_payload_bytes": pack.paper_payload_bytes, "decodes_to_model_pt": same_weights(decoded, written)}


def write_slimk(folder: Path, loaded: Any, written: nn.Module, layers: Sequence[str]) -> dict[str, Any]:
    """``model.slimk`` of ``written`` (``model.pt`` re-loaded) storing only the nonzero kernels of ``layers``.

    ``weight_bytes`` counts what the file stores of the parameters: kept kernel values, their index and every
    other parameter dense (buffers, header and checksum are in ``file_bytes``), which is what the kernel family's
    cost (:func:`slimcnn.search.families.kernel_sparse_cost`) claims.
    """
    from dataclasses import asdict

    from slimcnn.errors import ModelLoadError
    from slimcnn.prune.kernel import load_kernel_compact, save_kernel_compact

    masks = {name: written.get_submodule(name).weight.detach().abs().amax(dim=(2, 3)) > 0 for name in layers}
    path = folder / "model.slimk"
    stats = save_kernel_compact(written, masks, path, source=loaded.source, scale=loaded.info.scale, info=loaded.info)
    try:  # as a user loads it: the architecture from the file's own record
        decoded, rebuilds = load_kernel_compact(path), True
    except ModelLoadError:  # a module that cannot be pickled: the file holds the weights, loaded into a template
        template = copy.deepcopy(written)  # NaN everywhere: every value compared below comes from the file
        for t in template.state_dict().values():
            if t.is_floating_point():
                t.fill_(float("nan"))
        decoded, rebuilds = load_kernel_compact(path, template), False
    stored = {f"{name}.weight" for name in layers}
    dense = sum(p.numel() * p.element_size() for n, p in written.named_parameters() if n not in stored)
    return asdict(stats) | {"weight_bytes": stats.kernel_value_bytes + stats.index_bytes + dense,
                            "decodes_to_model_pt": same_weights(decoded, written), "rebuilds_architecture": rebuilds}


def write_plan_artifact(folder: Path, loaded: Any, steps: Sequence[Any], written: nn.Module) -> dict[str, Any]:
    """The compact file of a replayed plan, as the run that made it wrote one: ``{"slim": ...}`` when its last
    weight-format step is ``kmeans`` (the written weights re-shared at the step's spec, which leaves shared weights
    as they are), ``{"slimk": ...}`` when it is ``prune_kernels`` (its kernel layers' kept kernels; channels the
    step emptied and dropped are gone from ``written``, and the file records that architecture), ``{}`` after
    ``int8`` or without either."""
    last = next((s for s in reversed(steps) if s.transform in ("kmeans", "int8", "prune_kernels")), None)
    if last is None or last.transform == "int8":
        return {}
    if last.transform == "kmeans":
        from slimcnn.quantize import quantize_model
        from slimcnn.run._plan import kmeans_step_spec

        return {"slim": write_slim(folder, loaded, quantize_model(written, kmeans_step_spec(last)), written)}
    return {"slimk": write_slimk(folder, loaded, written, list(last.params.get("kept", {})))}


def still_convs(model: nn.Module, names: Sequence[str]) -> list[str]:
    """``names`` (once each, in order) that are still convolutions of ``model``: a later low-rank step may have
    factorised a kernel-pruned layer."""
    convs = {n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    return [n for n in dict.fromkeys(names) if n in convs]


def compact_source(model: str) -> list[Any]:
    """The promises of a model source that is a compact file: what every fine-tune of it must keep (a ``.slimk``'s
    removed kernels stay zero, a ``.slim``'s k-means layers keep their codebooks and zeros, the kernels it leaves out
    of its other weights stay zero); they also say how the file counts and stores the model
    (:mod:`slimcnn.search._stored`). Any other source: ``[]``."""
    from slimcnn.export._run import is_slim_source
    from slimcnn.train import Promise

    path = model.removeprefix("file:")
    if model.startswith("file:") and path.lower().endswith(".slimk"):
        from slimcnn.prune._kernel_format import read_kernel_compact

        header, _ = read_kernel_compact(path)
        layers = [str(e["name"]).removesuffix(".weight") for e in header["tensors"] if e["kind"] == "kernels"]
        return [Promise(layer, "zeros") for layer in layers]
    if is_slim_source(model):
        from slimcnn.quantize import read_packed

        header = read_packed(path).header
        spec = header["spec"]
        kernels = [str(k).removesuffix(".weight") for k, e in header["tensors"].items() if e["kind"] == "kernels"]
        huffman = any(e["indices"]["coding"] == "huffman" for e in header["tensors"].values() if e["kind"] == "kmeans")
        return [*(Promise(str(r["name"]), "codebook", bits=int(r["bits"]), per_channel=bool(spec["per_channel"]),
                          fp16=spec["codebook_dtype"] == "fp16", huffman=huffman) for r in header["layers"]),
                *(Promise(layer, "zeros") for layer in kernels)]
    return []
