"""int8 static post-training quantization through ONNX Runtime (QDQ, per-channel weights).

The fp32 ONNX model (batch norm folded, dynamic batch) goes through ONNX Runtime's
``quant_pre_process`` (shape inference + graph optimisation) and ``quantize_static`` with a
:class:`TaskCalibrationReader` over the task's calibration batches (training images, the task's
preprocessing). The int8 QDQ model is the artifact: it is what is evaluated and timed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fnmatch
import io
import json
import logging
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from slimcnn.errors import ConfigError

log = logging.getLogger(__name__)

Calibration = Literal["minmax", "entropy", "percentile"]
CALIBRATIONS: tuple[str, ...] = ("minmax", "entropy", "percentile")
QuantFormatName = Literal["qdq", "qoperator"]
QUANT_FORMATS: tuple[str, ...] = ("qdq", "qoperator")


@dataclass(frozen=True)
class Int8Spec:
    """How to quantise to int8 with ONNX Runtime's static quantization."""

    calibration: Calibration = "minmax"
    """Activation ranges: ``minmax``, ``entropy`` (KL divergence) or ``percentile``."""
    samples: int = 512
    """Calibration images drawn from the task's training data."""
    per_channel: bool = True
    """One weight scale per output channel (otherwise per tensor)."""
    percentile: float = 99.999
    """The percentile of ``calibration="percentile"``."""
    reduce_range: bool | None = None
    """7-bit weights. ``None``: on an x86 CPU without VNNI (:func:`needs_reduce_range`), where ORT's u8s8
    kernels add pairs of uint8 x int8 products in int16 and saturate, else full 8-bit."""
    float_layers: tuple[str, ...] = ()
    """fnmatch patterns of module FQNs kept in float32 (the most sensitive layers)."""
    float_fallback: str | None = None
    """``"auto"`` (fewest most sensitive layers in float that meet ``max_drop``) or ``"N"`` (the N most
    sensitive); sensitivity measured per layer on the task's data (:mod:`slimcnn.export._fallback`)."""
    max_drop: str | None = None
    """The target of ``float_fallback="auto"`` in :func:`slimcnn.search.budget.parse_drop`'s grammar."""
    sweep_limit: int = 1000
    """Images of the task's evaluation data the sensitivity sweep runs on (the final score uses all)."""
    symmetric_activations: bool = False
    """Activations as int8 symmetric around 0 (ORT ``ActivationSymmetric``) instead of asymmetric uint8."""
    quant_format: QuantFormatName = "qdq"
    """``qdq`` (QuantizeLinear/DequantizeLinear pairs, fused by ORT) or ``qoperator`` (QLinearConv... nodes)."""

    def __post_init__(self) -> None:
        from slimcnn.search.budget import parse_drop

        fb = self.float_fallback
        if fb is not None and fb != "auto" and not (str(fb).isdigit() and int(fb) >= 1):
            raise ConfigError(f"--float-fallback must be 'auto' or a number of layers >= 1, got '{fb}'")
        if fb == "auto" and self.max_drop is None:
            raise ConfigError("--float-fallback auto needs --max-drop (e.g. --max-drop 0.5 or --max-drop 1%)")
        if self.max_drop is not None:
            if fb != "auto":
                raise ConfigError("--max-drop is the target of --float-fallback auto; add --float-fallback auto")
            parse_drop(self.max_drop)
        if isinstance(self.sweep_limit, bool) or not isinstance(self.sweep_limit, int) or self.sweep_limit < 1:
            raise ConfigError(f"--sweep-limit must be an integer >= 1, got {self.sweep_limit!r}")
        if self.quant_format not in QUANT_FORMATS:
            raise ConfigError(f"--quant-format must be one of {list(QUANT_FORMATS)}, got '{self.quant_format}'")
        if self.calibration not in CALIBRATIONS:
            raise ConfigError(f"--calibration must be one of {list(CALIBRATIONS)}, got '{self.calibration}'")
        if isinstance(self.samples, bool) or not isinstance(self.samples, int) or self.samples < 1:
            raise ConfigError(f"--calibration-samples must be an integer >= 1, got {self.samples!r}")
        if not 50.0 < float(self.percentile) < 100.0:
            raise ConfigError(f"--percentile must be in (50, 100), got {self.percentile!r}")


class TaskCalibrationReader:
    """An ONNX Runtime ``CalibrationDataReader`` over model-ready input batches.

    Args:
        batches: ``Tensor[N, C, H, W]`` batches (e.g. ``task.calibration_batches(n)``).
        input_name: the graph input they feed.
        samples: stop after this many images; they are served in equal batches of at most 64.
    """

    def __init__(self, batches: Sequence[torch.Tensor], input_name: str, samples: int | None = None) -> None:
        arrays, left = [], samples
        for b in batches:
            a = b.detach().cpu().float().numpy()
            if left is not None:
                a, left = a[:left], left - min(left, a.shape[0])
            if a.shape[0]:
                arrays.append(a)
            if left == 0:
                break
        if not arrays:
            raise ConfigError("no calibration images: the task's training data is empty")
        # equal batches (ORT's histogram calibrators stack them): the largest divisor of the total up to 64
        every = np.concatenate(arrays)
        size = max(d for d in range(1, 65) if every.shape[0] % d == 0)
        self.arrays = [every[i:i + size] for i in range(0, every.shape[0], size)]
        self.input_name = input_name
        self._it: Iterator[np.ndarray] = iter(self.arrays)

    @property
    def samples(self) -> int:
        """Images served per pass."""
        return int(sum(a.shape[0] for a in self.arrays))

    def get_next(self) -> dict[str, np.ndarray] | None:
        """The next feed, or None at the end of the pass."""
        a = next(self._it, None)
        return None if a is None else {self.input_name: a}

    def rewind(self) -> None:
        """Start the pass again."""
        self._it = iter(self.arrays)


def _reader_class() -> type:
    from onnxruntime.quantization import CalibrationDataReader

    class _Reader(TaskCalibrationReader, CalibrationDataReader):  # type: ignore[misc]
        pass

    return _Reader


def needs_reduce_range() -> bool:
    """True on an x86 CPU without VNNI (AVX-512 VNNI, AVX-VNNI or AMX), read from ``/proc/cpuinfo``.

    There ORT's u8s8 GEMM uses ``vpmaddubsw``, which sums two uint8 x int8 products in int16 and saturates
    (255 * 127 * 2 > 32767); 7-bit weights cannot (measured: ResNet-56 on an AVX2 EPYC, 0.69 pt lost with
    8-bit weights, 0.01 pt with 7-bit; see docs/readme/export.md). Elsewhere (ARM, unknown): False.
    """
    import platform

    if platform.machine().lower() not in ("x86_64", "amd64", "i686", "x86"):
        return False
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return not {"avx512_vnni", "avx_vnni", "amx_int8"} & set(flags)


def resolve_reduce_range(spec: Int8Spec) -> bool:
    """``spec.reduce_range``, deciding ``None`` for this CPU."""
    return needs_reduce_range() if spec.reduce_range is None else bool(spec.reduce_range)


def scope_fqn(node_name: str) -> str:
    """``/layer1/layer1.0/conv1/Conv`` -> ``layer1.0.conv1``."""
    fqn = ""
    for el in node_name.strip("/").split("/")[:-1]:
        fqn = el if not fqn or el.startswith(fqn + ".") else f"{fqn}.{el}"
    return fqn


def quantizable_layers(onnx_model: Any) -> dict[str, list[str]]:
    """Module FQN -> names of its Conv/Gemm/MatMul nodes, in graph order (what ``--float-layers`` matches)."""
    layers: dict[str, list[str]] = {}
    for node in onnx_model.graph.node:
        if node.op_type in ("Conv", "Gemm", "MatMul", "ConvTranspose") and node.name.count("/") >= 2:
            layers.setdefault(scope_fqn(node.name), []).append(node.name)
    return layers


def excluded_nodes(onnx_model: Any, patterns: tuple[str, ...]) -> list[str]:
    """Names of the graph's Conv/Gemm/MatMul nodes whose module FQN matches one of ``patterns``.

    The TorchScript exporter names a node by its module scope (``/layer1/layer1.0/conv1/Conv`` for
    ``layer1.0.conv1``): each scope element either extends the FQN so far (``layer1.0``) or is a
    child name appended to it (``conv1``).

    Raises:
        ConfigError: a pattern matches no layer (the message lists some layer names).
    """
    layers = quantizable_layers(onnx_model)
    out: list[str] = []
    for pat in patterns:
        hit = [n for fqn, names in layers.items() if fnmatch.fnmatchcase(fqn, pat) for n in names]
        if not hit:
            some = ", ".join(list(layers)[:8])
            raise ConfigError(f"--float-layers pattern '{pat}' matches no conv/linear layer (layers: {some}, ...)")
        out += hit
    return list(dict.fromkeys(out))


class Int8Quantizer:
    """Calibrate once, then write int8 variants that differ only in which layers stay float.

    The graph is pre-processed (``quant_pre_process``) and the activation ranges are computed once
    (:meth:`ranges`) and cached (ORT's ``calibration_cache_path``), reduced to each tensor's
    ``lowest``/``highest`` (all that quantisation reads): the ranges are those of the fp32 graph and do
    not depend on which nodes are excluded, so every variant uses the same ones. Given ``ranges``
    (from :meth:`ranges`, e.g. an ``int8`` plan step), no calibration data is needed and the same
    graph quantises to the same bytes. Use as a context manager (it owns a temporary folder).

    Args:
        fp32_onnx: the serialised fp32 model (one image input).
        batches: calibration input batches, model-ready (the task's preprocessing applied); None with ``ranges``.
        spec: :class:`Int8Spec` (default: MinMax, 512 images, per-channel weights).
        ranges: activation ranges recorded by an earlier :meth:`ranges` on the same graph.

    Raises:
        ConfigError: neither ``batches`` nor ``ranges``; a ``float_layers`` pattern matches nothing.
    """

    def __init__(self, fp32_onnx: bytes, batches: Sequence[torch.Tensor] | None, spec: Int8Spec | None = None, *,
                 ranges: dict[str, Any] | None = None) -> None:
        import onnx

        from slimcnn.errors import require

        if batches is None and ranges is None:
            raise ConfigError("int8 quantisation needs calibration batches or recorded activation ranges")
        spec = spec or Int8Spec()
        # decided once, here: the step records it, so a replay on another CPU writes the same bytes
        self.spec = dataclasses.replace(spec, reduce_range=resolve_reduce_range(spec))
        self._quant: Any = require("onnxruntime.quantization", "onnx")
        self.model = onnx.load_from_string(fp32_onnx)
        self.layers = quantizable_layers(self.model)
        self.base_exclude = excluded_nodes(self.model, self.spec.float_layers)
        name = self.model.graph.input[0].name
        self.reader = _reader_class()(batches, name, self.spec.samples) if batches is not None else None
        self._tmp = tempfile.TemporaryDirectory(prefix="slimcnn-int8-")
        tmp = Path(self._tmp.name)
        src, self._pre, self._cache = tmp / "fp32.onnx", tmp / "pre.onnx", tmp / "calibration.json"
        src.write_bytes(fp32_onnx)
        if ranges is not None:
            self._cache.write_text(json.dumps(ranges))
        try:
            from onnxruntime.quantization.shape_inference import quant_pre_process

            quant_pre_process(str(src), str(self._pre))
        except Exception as e:  # noqa: BLE001 - pre-processing is an optimisation; quantise the plain graph
            log.warning("ONNX Runtime quant_pre_process failed (%s); quantising the graph as exported", e)
            self._pre = src
        self._n = 0

    def __enter__(self) -> Int8Quantizer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Remove the temporary folder."""
        self._tmp.cleanup()

    def ranges(self) -> dict[str, Any]:
        """The activation ranges every variant uses (ORT's calibration cache, JSON), calibrating on first use.

        Histogram calibrators also cache their histograms; only ``lowest``/``highest`` are kept (quantisation
        reads nothing else), so the ranges fit a ``plan.json`` and a replay from them gives the same bytes.
        """
        if not self._cache.is_file():
            self._run_quantize(self._cache.with_name("calibrate.onnx"), [])
        raw = json.loads(self._cache.read_text())
        keep = {"CLS", "lowest", "highest"}
        raw["data"] = {t: {k: v for k, v in d.items() if k in keep} for t, d in raw["data"].items()}
        self._cache.write_text(json.dumps(raw))
        return dict(raw)

    def quantize(self, float_layers: Sequence[str] = (), *, only: str | None = None) -> bytes:
        """The int8 QDQ model with ``float_layers`` (module FQNs, on top of ``spec.float_layers``) in float.

        ``only``: quantise just this layer (every other node stays float), for per-layer sensitivity.
        """
        unknown = [f for f in [*float_layers, *([only] if only else [])] if f not in self.layers]
        if unknown:
            raise ConfigError(f"no conv/linear layer named {unknown[0]!r} (layers: {', '.join(list(self.layers)[:8])}, ...)")
        if only is not None:
            keep = set(self.layers[only])
            exclude = [n.name for n in self.model.graph.node if n.name not in keep]
        else:
            exclude = list(dict.fromkeys([*self.base_exclude, *(n for f in float_layers for n in self.layers[f])]))
        self.ranges()
        self._n += 1
        dst = Path(self._tmp.name) / f"int8_{self._n}.onnx"
        self._run_quantize(dst, exclude)
        data = dst.read_bytes()
        dst.unlink()
        return data

    def _run_quantize(self, dst: Path, exclude: list[str]) -> None:
        quant, spec = self._quant, self.spec
        method = {"minmax": quant.CalibrationMethod.MinMax, "entropy": quant.CalibrationMethod.Entropy,
                  "percentile": quant.CalibrationMethod.Percentile}[spec.calibration]
        extra: dict[str, Any] = {"ActivationSymmetric": bool(spec.symmetric_activations)}
        if spec.calibration == "percentile":
            extra["CalibPercentile"] = float(spec.percentile)
        if self.reader is not None:
            self.reader.rewind()
        chatter = io.StringIO()  # ORT's calibrators print progress; stdout belongs to --json
        with contextlib.redirect_stdout(chatter):
            quant.quantize_static(
                str(self._pre), str(dst), self.reader, per_channel=spec.per_channel,
                quant_format=quant.QuantFormat.QDQ if spec.quant_format == "qdq" else quant.QuantFormat.QOperator,
                activation_type=quant.QuantType.QInt8 if spec.symmetric_activations else quant.QuantType.QUInt8,
                weight_type=quant.QuantType.QInt8, calibrate_method=method,
                reduce_range=spec.reduce_range, nodes_to_exclude=exclude, extra_options=extra,
                calibration_cache_path=str(self._cache),
            )
        log.debug("onnxruntime.quantization: %s", chatter.getvalue().strip())


def calibration_batches(task: Any, samples: int) -> list[torch.Tensor]:
    """About ``samples`` calibration inputs from ``task``, in its own batches (a task without a fixed
    ``batch_size``, e.g. super-resolution's recipe default, is asked for one batch to learn its size)."""
    size = getattr(task, "batch_size", None)
    if not size:
        size = len(task.calibration_batches(1)[0])
    return list(task.calibration_batches(-(-samples // max(1, int(size)))))


def int8_weight_bytes(int8_onnx: bytes) -> int:
    """Bytes of every initializer of an ONNX model: int8 weights, int32 biases, scales and zero points."""
    from slimcnn.export._onnx import initializer_sizes

    return initializer_sizes(int8_onnx)[1]


def int8_model_bytes(model: torch.nn.Module, example_input: torch.Tensor, spec: Int8Spec | None = None) -> int:
    """:func:`int8_weight_bytes` of the int8 file ``model`` quantises to with ``spec``, before any float fallback.

    The model's fp32 ONNX export is quantised once: the initializers' sizes follow the layers' shapes and the
    spec (per-channel scales, int32 biases, layers kept in float), never the activation ranges, so
    ``example_input`` alone calibrates (min-max). About 2 s for ResNet-56 on one core. A constant ratio to the
    fp32 bytes misjudges a pruned model: each output channel costs 17 B of scales, zero points and int32 bias
    besides its int8 weights, a larger share of a thinner layer (ResNet-56: 0.259x whole, 0.268x at 0.28x).
    """
    from slimcnn.export._onnx import torch_to_onnx

    spec = dataclasses.replace(spec or Int8Spec(), calibration="minmax", float_fallback=None, max_drop=None)
    return int8_weight_bytes(quantize_int8(torch_to_onnx(model, example_input).SerializeToString(),
                                           [example_input], spec))


def int8_step_params(quantizer: Int8Quantizer, float_layers: Sequence[str]) -> dict[str, Any]:
    """The ``int8`` plan step's params: the spec, the layers kept in float and the recorded activation ranges."""
    spec = {k: v for k, v in dataclasses.asdict(quantizer.spec).items()
            if k not in ("float_fallback", "max_drop", "sweep_limit")}
    dims = quantizer.model.graph.input[0].type.tensor_type.shape.dim
    any_size = len(dims) == 4 and all(d.dim_param for d in dims[2:])  # a super-resolution file: any image size
    return {"spec": spec, "float_layers": list(float_layers), "ranges": quantizer.ranges(), "any_size": any_size}


def replay_int8(model: torch.nn.Module, params: dict[str, Any], example_input: torch.Tensor) -> bytes:
    """The int8 ONNX model of an ``int8`` plan step: ``model`` exported to fp32 ONNX, quantised with the
    step's spec, float layers and recorded ranges (no data needed; the run's bytes, bit for bit)."""
    from slimcnn.export._onnx import torch_to_onnx
    from slimcnn.types import from_dict

    raw = dict(params.get("spec", {}))
    raw["float_layers"] = tuple(raw.get("float_layers", ()))
    spec = from_dict(Int8Spec, raw)
    fp32 = torch_to_onnx(model, example_input, dynamic_spatial=bool(params.get("any_size"))).SerializeToString()
    with Int8Quantizer(fp32, None, spec, ranges=params["ranges"]) as q:
        return q.quantize(list(params.get("float_layers", ())))


def quantize_int8(fp32_onnx: bytes, batches: Sequence[torch.Tensor], spec: Int8Spec | None = None) -> bytes:
    """Static int8 quantization (QDQ; uint8 activations, int8 weights) of an fp32 ONNX model.

    Args:
        fp32_onnx: the serialised fp32 model (one image input).
        batches: calibration input batches, model-ready (the task's preprocessing applied).
        spec: :class:`Int8Spec` (default: MinMax, 512 images, per-channel weights).

    Returns:
        The serialised int8 QDQ model.

    Raises:
        ConfigError: a ``float_layers`` pattern matches nothing, or there are no calibration images.
    """
    with Int8Quantizer(fp32_onnx, batches, spec) as q:
        data = q.quantize()
        log.info("int8: %d calibration images, %s, reduce range %s, %d float layers", q.reader.samples if q.reader is not None
                 else 0, q.spec.calibration, q.spec.reduce_range, len(q.base_exclude))
        return data
