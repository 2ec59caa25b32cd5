"""ONNX export with an ONNX Runtime parity check, written atomically.

Exporter choice (measured on torch 2.14.1 / onnxruntime 1.32): both the TorchScript exporter
(``dynamo=False``) and the dynamo exporter produce correct graphs for ResNet, VDSR, FSRCNN
(``ConvTranspose``), pixel shuffle and grouped convolutions. The TorchScript exporter is ~7x
faster (0.4 s vs 3 s for ResNet-18) and writes opset 17 directly, whereas the dynamo exporter
implements opset >= 18 only and down-converts with a noisy, sometimes failing version
converter. ``exporter="auto"`` therefore tries TorchScript first and falls back to dynamo
(at opset 18 or more) when the TorchScript exporter cannot trace the model.
"""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from slimcnn._io import atomic_write
from slimcnn.errors import ConfigError, SlimcnnError, require
from slimcnn.measure._inputs import ExampleInput, call_args, run_model, tensors_in

log = logging.getLogger(__name__)

Exporter = Literal["auto", "torchscript", "dynamo"]


class ExportError(SlimcnnError, RuntimeError):
    """The model could not be exported to ONNX, or ONNX Runtime disagrees with torch."""


def _export_bytes(model: nn.Module, args: tuple[Any, ...], opset: int, exporter: str, any_size: bool = False) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if exporter == "torchscript":
            names = [f"input{i}" for i in range(len(args))]
            axes = ({names[0]: {0: "batch", 2: "height", 3: "width"}, "output0": {0: "batch", 2: "out_height",
                                                                                 3: "out_width"}} if any_size else None)
            torch.onnx.export(model, args, buf, opset_version=opset, dynamo=False, input_names=names,
                              output_names=["output0"] if any_size else None, dynamic_axes=axes,
                              do_constant_folding=True)
            return buf.getvalue()
        prog = torch.onnx.export(model, args, dynamo=True, opset_version=max(opset, 18), verbose=False)
        if prog is None:  # pragma: no cover - exporter contract
            raise ExportError("the dynamo exporter returned no program")
        return bytes(prog.model_proto.SerializeToString())


def onnx_bytes(model: nn.Module, example_input: ExampleInput, *, opset: int = 17,
               exporter: Exporter = "auto", any_size: bool = False) -> bytes:
    """Serialise ``model`` (eval mode) to an ONNX model in memory.

    Args:
        model: the module; put in eval mode for the export and restored afterwards.
        example_input: a tensor or a tuple of positional tensors (lists/dicts are not exportable).
        opset: ONNX opset for the TorchScript exporter (the dynamo exporter uses ``max(opset, 18)``).
        exporter: ``"torchscript"``, ``"dynamo"`` or ``"auto"`` (TorchScript, then dynamo).
        any_size: batch, height and width of the (4-D) input and of the first output symbolic: an image-to-image
            (super-resolution) net runs on images of any size. TorchScript exporter only.

    Raises:
        ConfigError: ``exporter`` is unknown, ``example_input`` is not tensors, or ``any_size`` without a 4-D
            input or with the dynamo exporter.
        ExportError: every exporter tried failed; the message carries each reason.
    """
    if exporter not in ("auto", "torchscript", "dynamo"):
        raise ConfigError(f"exporter must be 'auto', 'torchscript' or 'dynamo', got '{exporter}'")
    args, kwargs = call_args(example_input)
    if kwargs or not all(isinstance(a, torch.Tensor) for a in args):
        raise ConfigError("ONNX export needs a tensor or a tuple of tensors as example_input "
                          f"(got {type(example_input).__name__}); detection models taking lists are not exportable")
    if any_size and (exporter == "dynamo" or args[0].dim() != 4):
        raise ConfigError("any_size needs the TorchScript exporter and one [N, C, H, W] input")
    order = ["torchscript"] if any_size else ["torchscript", "dynamo"] if exporter == "auto" else [exporter]
    was_training = model.training
    model.eval()
    errors: list[str] = []
    try:
        for name in order:
            try:
                data = _export_bytes(model, args, opset, name, any_size)
                log.debug("exported with the %s exporter (%d bytes)", name, len(data))
                return data
            except Exception as e:  # noqa: BLE001 - exporters raise anything; we report all reasons
                errors.append(f"{name}: {type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"[:300])
                log.info("ONNX %s exporter failed: %s", name, errors[-1])
    finally:
        model.train(was_training)
    raise ExportError("ONNX export failed (" + "; ".join(errors) + ")")


def ort_providers(device: str, available: Sequence[str]) -> list[Any]:
    """ONNX Runtime execution providers for ``device``, best first.

    ``cpu``: the CPU provider. ``cuda[:N]``: TensorRT's provider when this onnxruntime has it, then CUDA's, then
    the CPU's (for the few ops the GPU providers lack), on GPU ``N``.

    Raises:
        ConfigError: an unknown device, or ``cuda`` with an onnxruntime that has no CUDA provider.
    """
    if device == "cpu":
        return ["CPUExecutionProvider"]
    kind, _, index = device.partition(":")
    if kind != "cuda" or not (index == "" or index.isdigit()):
        raise ConfigError(f"--device for --runtime onnxruntime must be cpu, cuda or cuda:N, got '{device}'")
    if "CUDAExecutionProvider" not in available:
        raise ConfigError(f"--runtime onnxruntime --device {device} needs ONNX Runtime's CUDAExecutionProvider, "
                          f"missing here (this onnxruntime has {', '.join(available) or 'no provider'}): install "
                          "onnxruntime-gpu (pip install 'slimcnn[gpu]'), or time on the GPU with --runtime torch")
    opts = {"device_id": int(index or 0)}
    trt = [("TensorrtExecutionProvider", opts)] if "TensorrtExecutionProvider" in available else []
    return [*trt, ("CUDAExecutionProvider", opts), "CPUExecutionProvider"]


Spin = Literal["always", "in-run", "never"]
"""When ONNX Runtime's intra-op workers busy-wait for work: ``"always"`` (its default, what a deployment runs),
``"in-run"`` (between the nodes of a run, as deployed, but parked as soon as a run returns:
``session.force_spinning_stop``; for models timed interleaved in one process, so one session's idle workers do
not busy-wait on the cores the next one needs) or ``"never"`` (``session.intra_op.allow_spinning=0``: every
parallel node wakes a sleeping worker; a small model pays that per node, see ``benchmarks/latency_protocol.py``)."""


def ort_session(model_bytes: bytes | str | Path, *, threads: int, optimize: bool = True, spin: Spin = "always",
                device: str = "cpu", profile_prefix: str | None = None) -> Any:
    """An ONNX Runtime session: ``threads`` intra-op, 1 inter-op, sequential, all optimisations.

    ``spin``: see :data:`Spin`; ``"in-run"`` when other work (another model, another runtime) runs interleaved in
    the same process. ``device="cuda[:N]"`` runs on
    the GPU through TensorRT's or CUDA's execution provider (:func:`ort_providers`). ``profile_prefix``: ONNX
    Runtime's per-node profiler writes its JSON there (``session.end_profiling()`` returns the path).

    Raises:
        ConfigError: see :func:`ort_providers`; also a GPU provider that is installed but does not start
            (no GPU, CUDA libraries missing): ONNX Runtime would silently fall back to the CPU.
    """
    ort: Any = require("onnxruntime", "onnx")
    providers = ort_providers(device, ort.get_available_providers())
    so = ort.SessionOptions()
    so.intra_op_num_threads = int(threads)
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                   else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    so.log_severity_level = 3
    if profile_prefix is not None:
        so.enable_profiling = True
        so.profile_file_prefix = profile_prefix
    if spin not in ("always", "in-run", "never"):
        raise ConfigError(f"spin must be 'always', 'in-run' or 'never', got {spin!r}")
    if spin == "in-run":
        so.add_session_config_entry("session.force_spinning_stop", "1")
    elif spin == "never":
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    src = str(model_bytes) if isinstance(model_bytes, Path) else model_bytes
    session = ort.InferenceSession(src, sess_options=so, providers=providers)
    if device != "cpu" and not {"CUDAExecutionProvider", "TensorrtExecutionProvider"} & set(session.get_providers()):
        raise ConfigError(f"ONNX Runtime could not start its CUDA execution provider for --device {device} (no "
                          "usable GPU, or its CUDA/cuDNN libraries are missing); time with --device cpu or "
                          "--runtime torch")
    return session


def ort_feed(session: Any, example_input: ExampleInput) -> dict[str, np.ndarray]:
    """Map ``example_input``'s tensors onto the session's inputs, in order."""
    args, _ = call_args(example_input)
    names = [i.name for i in session.get_inputs()]
    arrays = [a.detach().cpu().numpy() for a in args]
    if len(names) != len(arrays):  # unused inputs are dropped by the exporter
        arrays = arrays[: len(names)]
    return dict(zip(names, arrays, strict=True))


def parity(model: nn.Module, example_input: ExampleInput, session: Any) -> tuple[float, float]:
    """``(max |torch - ORT|, max |torch|)`` over all outputs."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            ref = tensors_in(run_model(model, example_input))
    finally:
        model.train(was_training)
    got = session.run(None, ort_feed(session, example_input))
    if len(ref) != len(got):
        raise ExportError(f"ONNX model has {len(got)} outputs but torch returned {len(ref)}")
    diff, scale = 0.0, 0.0
    for r, g in zip(ref, got, strict=True):
        r_np = r.detach().cpu().float().numpy()
        if r_np.shape != np.shape(g):
            raise ExportError(f"ONNX output shape {np.shape(g)} differs from torch {r_np.shape}")
        if r_np.size:
            d = float(np.max(np.abs(r_np - np.asarray(g, dtype=np.float32))))
            diff = max(diff, d if np.isfinite(d) else float("inf"))
            scale = max(scale, float(np.max(np.abs(r_np))))
    return diff, scale


def export_onnx(model: nn.Module, example_input: ExampleInput, path: str | Path, *, opset: int = 17,
                check: bool = True, atol: float = 1e-4, rtol: float = 1e-3,
                exporter: Exporter = "auto", any_size: bool = False) -> Path:
    """Export ``model`` to ``path`` (atomically) and check ONNX Runtime against torch.

    The tolerance is ``atol + rtol * max|torch output|``, so large-valued outputs (logits,
    un-normalised images) are not failed for float32 rounding.

    Args:
        model: the module to export (left in its train/eval mode).
        example_input: ``Tensor[N, C, H, W]`` or a tuple of tensors; fixes the exported shapes.
        path: destination ``.onnx`` file; written via a temporary file and renamed.
        opset: ONNX opset (17 by default; see the module notes on exporters).
        check: run ONNX Runtime on ``example_input`` and compare every output with torch.
        atol: absolute tolerance of the parity check.
        rtol: tolerance relative to the largest torch output magnitude.
        exporter: ``"auto"``, ``"torchscript"`` or ``"dynamo"``.
        any_size: a file that takes any batch, height and width (see :func:`onnx_bytes`); the check also runs
            a batch of 2 at 8 rows and 16 columns more than ``example_input``.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        ExportError: export failed or the outputs diverge (the message gives the max abs diff).
    """
    data = onnx_bytes(model, example_input, opset=opset, exporter=exporter, any_size=any_size)
    if check:
        session = ort_session(data, threads=1)
        inputs = [example_input]
        if any_size:
            _, c, h, w = example_input.shape  # type: ignore[union-attr]
            inputs.append(torch.randn(2, c, h + 8, w + 16, generator=torch.Generator().manual_seed(0)))
        for x in inputs:
            try:
                diff, scale = parity(model, x, session)
            except ExportError:
                raise
            except Exception as e:  # noqa: BLE001 - ORT raises its own classes: a size the graph cannot take
                raise ExportError(f"the ONNX file does not run on input {tuple(x.shape)}: "
                                  f"{str(e).strip().splitlines()[0][:200]}") from e
            tol = atol + rtol * scale
            log.info("ONNX parity at %s: max abs diff %.3g (tolerance %.3g)", tuple(x.shape), diff, tol)
            if not diff <= tol:
                raise ExportError(f"ONNX Runtime output diverges from torch at input {tuple(x.shape)}: max abs diff "
                                  f"{diff:.3g} > tolerance {tol:.3g} (atol={atol}, rtol={rtol}); the export is not "
                                  "faithful")
    path = Path(path)
    atomic_write(path, lambda p: p.write_bytes(data))
    return path
