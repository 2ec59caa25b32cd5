"""Standard ONNX files: fp32 (dynamic batch) and k-means weights decoded inside the graph.

A k-means layer's weight initializer is replaced by its :class:`~slimcnn.export.PackedLayer` bytes
(uint8 initializers: the bit-packed indices, the keep mask) and a float32 codebook, plus a small
subgraph of standard opset-17 operators that rebuilds the dense weight under the initializer's
own name:

- bits of a byte stream: ``BitShift`` left by ``0..7`` then right by 7 (uint8 wraps), ``Reshape``;
- ``width``-bit indices: ``Slice`` the bits, ``Reshape [count, width]``, ``Cast`` to float,
  ``MatMul`` with the powers of two, ``Cast`` to int64 (8-bit indices: one ``Cast``);
- values: ``Gather`` from the codebook (per output channel: row ``pos // per`` times ``k`` plus
  the index, into the flattened codebook);
- a keep mask: a bitmap's bits, or for relative indexing (entries ``< 2^w-1`` are kept weights at
  ``CumSum(entry + is_weight) - 1``) a ``ScatterElements`` of ones at those positions; then each
  dense position takes index number ``CumSum(keep) - 1`` (``Gather``) and ``Where(keep, value, 0)``;
- ``Reshape`` to the weight's shape.

A float weight with all-zero k×k kernels (kernel-pruned, not shared; as ``model.slim`` stores it) becomes its kept
kernels ``[kept, kh*kw]`` and their keep mask over the ``out*in`` kernels, decoded the same way: each kernel
takes row ``CumSum(keep) - 1`` (``Gather``), ``Where(keep, row, 0)``, ``Reshape``.

Only static shapes (no ``NonZero``/``Compress``): ONNX Runtime's constant folding skips
data-dependent shapes, and the weight would then be decoded on every run.

Every input of the subgraph is a constant, so ONNX Runtime folds it into the fp32 weight once,
when the session is created: the file is small and inference runs at fp32 speed.
"""

from __future__ import annotations

import io
import logging
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from slimcnn._io import atomic_write
from slimcnn.errors import ConfigError
from slimcnn.export._packed import PackedLayer, kernel_weights
from slimcnn.measure import ExportError
from slimcnn.quantize._model import KernelWeight

log = logging.getLogger(__name__)

OPSET = 17
INPUT_NAME = "input"
OUTPUT_NAME = "output"


def torch_to_onnx(model: nn.Module, example: torch.Tensor, *, keep_batchnorm: bool = False, dynamic_batch: bool = True,
                  dynamic_spatial: bool = False, opset: int = OPSET) -> Any:
    """Export ``model`` (eval mode) with the TorchScript exporter; returns the ``onnx.ModelProto``.

    Args:
        model: the module (its train/eval mode is restored).
        example: ``Tensor[N, C, H, W]`` fixing every dimension but the batch.
        keep_batchnorm: keep ``BatchNormalization`` nodes and every parameter under its state-dict
            name (needed to find the k-means weights); otherwise batch norm is folded into the
            convolutions (the faster fp32 graph).
        dynamic_batch: make the batch dimension of the input and outputs symbolic (``"batch"``).
        dynamic_spatial: make height and width of the input and of image outputs symbolic too (a
            super-resolution net runs on images of any size).
        opset: ONNX opset.

    Raises:
        ExportError: the exporter failed (the message says why).
    """
    import onnx

    if not isinstance(example, torch.Tensor):
        raise ConfigError("the ONNX export takes a single input tensor (an image batch)")
    was_training = model.training
    model.eval()
    buf = io.BytesIO()
    mode = torch.onnx.TrainingMode.PRESERVE if keep_batchnorm else torch.onnx.TrainingMode.EVAL
    axes: dict[str, dict[int, str]] = {INPUT_NAME: {}, OUTPUT_NAME: {}}
    if dynamic_batch:
        axes = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}
    if dynamic_spatial:
        axes[INPUT_NAME] |= {2: "height", 3: "width"}
        axes[OUTPUT_NAME] |= {2: "out_height", 3: "out_width"}
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (example,), buf, opset_version=opset, dynamo=False, training=mode,
                              input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                              dynamic_axes={k: v for k, v in axes.items() if v} or None,
                              do_constant_folding=True)
    except Exception as e:  # noqa: BLE001 - the exporter raises anything; report the reason
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ExportError(f"ONNX export of {type(model).__name__} failed: {first}") from e
    finally:
        model.train(was_training)
    return onnx.load_from_string(buf.getvalue())


class _Builder:
    """Appends nodes and initializers for one layer's decoder.

    Names are short (``k3_12``) and nodes unnamed, and small constants (shift amounts, axes) are
    shared by every layer: on a 20-layer net this keeps the decoders to a few KB of graph.
    """

    def __init__(self, graph: Any, prefix: str, shared: dict[tuple[str, tuple[int, ...], bytes], str]) -> None:
        self.graph, self.prefix, self.n, self.shared = graph, prefix, 0, shared
        self.nodes: list[Any] = []

    def name(self, what: str = "") -> str:
        self.n += 1
        return f"{self.prefix}_{self.n}"

    def const(self, what: str, array: np.ndarray) -> str:
        from onnx import numpy_helper

        arr = np.array(array, order="C", copy=True)  # keeps 0-d scalars 0-d (ascontiguousarray would not)
        key = (arr.dtype.str, arr.shape, arr.tobytes()) if arr.nbytes <= 64 else None
        if key is not None and key in self.shared:
            return self.shared[key]
        name = f"c_{len(self.shared)}" if key is not None else self.name()
        self.graph.initializer.append(numpy_helper.from_array(arr, name))
        if key is not None:
            self.shared[key] = name
        return name

    def op(self, op_type: str, inputs: list[str], out: str | None = None, **attrs: Any) -> str:
        from onnx import helper

        out = out or self.name()
        self.nodes.append(helper.make_node(op_type, inputs, [out], **attrs))
        return out

    def filled(self, n: int, value: float | int, dtype: Any) -> str:
        """``ConstantOfShape([n], value)``: a constant tensor that costs no bytes in the file."""
        from onnx import helper

        tensor = helper.make_tensor("value", helper.np_dtype_to_tensor_dtype(np.dtype(dtype)), [1], [value])
        return self.op("ConstantOfShape", [self.const("n", np.array([n], dtype=np.int64))], value=tensor)

    def arange(self, n: int) -> str:
        """``Range(0, n, 1)`` as int64."""
        return self.op("Range", [self.const("zero", np.array(0, dtype=np.int64)), self.const("n", np.array(n, dtype=np.int64)),
                                 self.const("one", np.array(1, dtype=np.int64))])

    def unpack_bits(self, stream: bytes, nbits: int) -> str:
        """The first ``nbits`` bits (uint8 0/1, MSB first) of ``stream``."""
        data = self.const("bytes", np.frombuffer(stream, dtype=np.uint8).reshape(-1, 1))
        left = self.op("BitShift", [data, self.const("shift", np.arange(8, dtype=np.uint8))], direction="LEFT")
        bits = self.op("BitShift", [left, self.const("seven", np.array([7], dtype=np.uint8))], direction="RIGHT")
        flat = self.op("Reshape", [bits, self.const("flat", np.array([-1], dtype=np.int64))])
        if len(stream) * 8 == nbits:
            return flat
        return self.op("Slice", [flat, self.const("start", np.array([0], dtype=np.int64)),
                                 self.const("end", np.array([nbits], dtype=np.int64))])

    def unpack_uint(self, stream: bytes, width: int, count: int) -> str:
        """``count`` unsigned ``width``-bit integers (int64) from a :func:`pack_uint` stream."""
        from onnx import TensorProto

        if width == 8:
            data = self.const("bytes", np.frombuffer(stream, dtype=np.uint8)[:count].copy())
            return self.op("Cast", [data], to=TensorProto.INT64)
        bits = self.unpack_bits(stream, count * width)
        if width == 1:
            return self.op("Cast", [bits], to=TensorProto.INT64)
        grid = self.op("Reshape", [bits, self.const("grid", np.array([count, width], dtype=np.int64))])
        fl = self.op("Cast", [grid], to=TensorProto.FLOAT)
        powers = self.const("powers", (2.0 ** np.arange(width - 1, -1, -1)).astype(np.float32))
        return self.op("Cast", [self.op("MatMul", [fl, powers])], to=TensorProto.INT64)


def _keep_bits(b: _Builder, p: PackedLayer | KernelWeight) -> str:
    """int64 0/1 keep mask over the weights of a k-means layer or the kernels of a :class:`KernelWeight` (static
    shapes only, so ONNX Runtime constant-folds it)."""
    from onnx import TensorProto

    n = p.kernels if isinstance(p, KernelWeight) else p.numel
    if p.mask_kind == "bitmap":
        return b.op("Cast", [b.unpack_bits(p.mask, n)], to=TensorProto.INT64)
    entries = b.unpack_uint(p.mask, p.mask_width, p.mask_entries)
    filler = b.const("filler", np.array([(1 << p.mask_width) - 1], dtype=np.int64))
    is_w = b.op("Less", [entries, filler])
    step = b.op("Add", [entries, b.op("Cast", [is_w], to=TensorProto.INT64)])
    cum = b.op("CumSum", [step, b.const("axis", np.array(0, dtype=np.int64))])
    pos = b.op("Sub", [cum, b.const("one", np.array([1], dtype=np.int64))])
    # fillers write to a spare slot past the end, sliced off below
    target = b.op("Where", [is_w, pos, b.const("spare", np.array([n], dtype=np.int64))])
    zeros = b.filled(n + 1, 0, np.int64)
    ones = b.filled(p.mask_entries, 1, np.int64)
    scattered = b.op("ScatterElements", [zeros, target, ones], axis=0)
    return b.op("Slice", [scattered, b.const("start", np.array([0], dtype=np.int64)),
                          b.const("end", np.array([n], dtype=np.int64))])


def _kept_rank(b: _Builder, keep: str) -> str:
    """Position -> its index among the kept ones: CumSum(keep) - 1, clipped at 0 before the first."""
    cum = b.op("CumSum", [keep, b.const("axis", np.array(0, dtype=np.int64))])
    return b.op("Max", [b.op("Sub", [cum, b.const("one", np.array([1], dtype=np.int64))]),
                        b.const("zero", np.array([0], dtype=np.int64))])


def _add_kernel_decoder(graph: Any, w: KernelWeight, prefix: str,
                        shared: dict[tuple[str, tuple[int, ...], bytes], str]) -> list[Any]:
    """Nodes that rebuild ``w``'s dense float32 weight (its removed kernels zero) as tensor ``w.key``."""
    from onnx import TensorProto

    b = _Builder(graph, prefix, shared)
    per = int(math.prod(w.shape[2:]))
    keep = _keep_bits(b, w)
    kept = b.const("kernels", w.values.reshape(len(w.values), per).numpy().astype(np.float32))
    rows = b.op("Gather", [kept, _kept_rank(b, keep)], axis=0)  # [kernels, per]
    mask = b.op("Reshape", [b.op("Cast", [keep], to=TensorProto.BOOL), b.const("col", np.array([-1, 1], dtype=np.int64))])
    values = b.op("Where", [mask, rows, b.const("fzero", np.array([0.0], dtype=np.float32))])
    b.op("Reshape", [values, b.const("shape", np.array(w.shape, dtype=np.int64))], out=w.key)
    return b.nodes


def _add_decoder(graph: Any, p: PackedLayer, out_name: str, prefix: str,
                 shared: dict[tuple[str, tuple[int, ...], bytes], str]) -> list[Any]:
    """Nodes that rebuild ``p``'s dense float32 weight as tensor ``out_name``."""
    from onnx import TensorProto

    b = _Builder(graph, prefix, shared)
    shape = b.const("shape", np.array(p.shape, dtype=np.int64))
    if p.count == 0:  # every weight pruned
        b.op("Reshape", [b.filled(p.numel, 0.0, np.float32), shape], out=out_name)
        return b.nodes
    idx = b.unpack_uint(p.indices, p.width, p.count)
    book = b.const("codebook", p.codebook.reshape(-1).astype(np.float32))
    keep = None
    if p.mask_kind != "none":
        keep = _keep_bits(b, p)
        idx = b.op("Gather", [idx, _kept_rank(b, keep)], axis=0)
    if p.rows > 1:
        per = p.numel // p.rows
        row = b.op("Mul", [b.op("Div", [b.arange(p.numel), b.const("per", np.array([per], dtype=np.int64))]),
                           b.const("k", np.array([p.k], dtype=np.int64))])
        idx = b.op("Add", [row, idx])
    values = b.op("Gather", [book, idx], axis=0)
    if keep is not None:
        kept = b.op("Cast", [keep], to=TensorProto.BOOL)
        values = b.op("Where", [kept, values, b.const("fzero", np.array([0.0], dtype=np.float32))])
    b.op("Reshape", [values, shape], out=out_name)
    return b.nodes


def kmeans_onnx(model: nn.Module, layers: dict[str, PackedLayer], example: torch.Tensor, *,
                dynamic_batch: bool = True, dynamic_spatial: bool = False) -> bytes:
    """A standard ONNX model whose k-means weights are stored packed and decoded in-graph.

    Args:
        model: the decoded (k-means) model; each ``f"{layer}.weight"`` must equal ``layers[layer].decode()``.
        layers: the packed k-means layers by module FQN.
        example: ``Tensor[N, C, H, W]``.
        dynamic_batch: symbolic batch dimension.
        dynamic_spatial: symbolic height and width (see :func:`torch_to_onnx`).

    Returns:
        The serialised ONNX model.

    Raises:
        ExportError: a k-means weight is not an initializer of the exported graph under its name,
            or it does not hold the decoded values (the model and the packed layers disagree).
    """
    from onnx import numpy_helper

    proto = torch_to_onnx(model, example, keep_batchnorm=True, dynamic_batch=dynamic_batch,
                          dynamic_spatial=dynamic_spatial)
    graph = proto.graph
    inits = {t.name: t for t in graph.initializer}
    decoders: list[Any] = []
    shared: dict[tuple[str, tuple[int, ...], bytes], str] = {}
    for i, (name, p) in enumerate(layers.items()):
        key = f"{name}.weight"
        init = inits.get(key)
        if init is None:
            raise ExportError(f"k-means weight '{key}' is not a named initializer of the exported graph "
                              "(shared or transformed by the exporter); export this model with --format onnx")
        have = numpy_helper.to_array(init)
        want = p.decode().numpy()
        if have.shape != want.shape or not np.array_equal(have, want):
            raise ExportError(f"'{key}' in the model differs from its k-means codes; the model is not the decoded one")
        graph.initializer.remove(init)
        decoders += _add_decoder(graph, p, key, f"k{i}", shared)
    # the other weights with removed kernels: their kept kernels and keep mask, as model.slim stores them
    for i, w in enumerate(kernel_weights(dict(model.state_dict()), {f"{n}.weight" for n in layers}).values()):
        init = inits.get(w.key)
        if init is None or numpy_helper.to_array(init).shape != w.shape:
            continue  # folded or renamed by the exporter: stays a dense initializer
        graph.initializer.remove(init)
        decoders += _add_kernel_decoder(graph, w, f"z{i}", shared)
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(decoders + nodes)  # decoders first: topological order
    proto.producer_name = "slimcnn"
    return bytes(proto.SerializeToString())


def decoded_weights(onnx_model: bytes | str | Path, names: list[str]) -> dict[str, np.ndarray]:
    """Run ONNX Runtime on the in-graph decoders alone and return the weights ``names`` it builds.

    The check that the file's decoders are bit-exact: the named tensors become graph outputs, and
    the session is built without graph optimisations (so nothing is folded or fused away).
    """
    import onnx

    from slimcnn.measure._onnx import ort_session

    proto = onnx.load_from_string(onnx_model) if isinstance(onnx_model, bytes) else onnx.load(str(onnx_model))
    for n in names:
        proto.graph.output.append(onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None))
    sess = ort_session(proto.SerializeToString(), threads=1, optimize=False)
    shape = [d.dim_value or 1 for d in proto.graph.input[0].type.tensor_type.shape.dim]
    feed = {proto.graph.input[0].name: np.zeros(shape, dtype=np.float32)}
    outs = sess.run(names, feed)
    return dict(zip(names, outs, strict=True))


def initializer_sizes(onnx_model: bytes) -> tuple[int, int]:
    """``(values, bytes)`` of every initializer of an ONNX model: its weights as the file stores them (int8
    weights, int32 biases, scales and zero points of an int8 model)."""
    import onnx
    from onnx import numpy_helper

    arrays = [numpy_helper.to_array(t) for t in onnx.load_from_string(onnx_model).graph.initializer]
    return sum(int(a.size) for a in arrays), sum(int(a.nbytes) for a in arrays)


def write_onnx(path: str | Path, data: bytes) -> Path:
    """Write ONNX bytes atomically."""
    p = Path(path)
    atomic_write(p, lambda t: t.write_bytes(data))
    return p
