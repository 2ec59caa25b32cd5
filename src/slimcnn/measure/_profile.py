"""Params, MACs, weight bytes and peak activation memory from one real forward.

How it works: forward pre/post hooks keep a stack of the modules currently running, and a
``TorchDispatchMode`` sees every ATen op. Multiply-accumulates of convolutions (plain, grouped,
dilated, strided, transposed) and matrix products (``linear``, ``matmul``, ``mm``, ``addmm``,
``bmm``, ``baddbmm``, ``mv``, ``dot``) are charged to the innermost running module, so
functional calls (``F.conv2d`` in a custom block, ``q @ k``) are counted as well as ``nn``
layers. Everything else (batch norm, activations, pooling, additions, bias) counts 0 MACs,
the convention of the compression papers (conv + FC multiply-accumulates only).

Peak activation memory is a real liveness count: each op's output storage is added to a live
total when it is created and removed when its last Python tensor is freed (``weakref``); the
peak of that total over the forward, plus the input, is ``activation_bytes``. Parameters and
buffers are not activations. Views share their base's storage and are not double counted.
"""

from __future__ import annotations

import logging
import math
import weakref
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from slimcnn.measure._inputs import ExampleInput, forward_error, input_shape, run_model, tensors_in
from slimcnn.types import Cost, LayerCost

log = logging.getLogger(__name__)

_aten = torch.ops.aten
_CONV = {
    _aten.conv1d.default, _aten.conv2d.default, _aten.conv3d.default,
    _aten.conv1d.padding, _aten.conv2d.padding, _aten.conv3d.padding,
}
_CONV_T = {_aten.conv_transpose1d.default, _aten.conv_transpose2d.input, _aten.conv_transpose3d.input}
_CONV_GENERIC = {_aten.convolution.default, _aten._convolution.default}
_MM_LAST = {  # MACs = output elements x the contracted length a.shape[-1]
    _aten.mm.default: 0, _aten.bmm.default: 0, _aten.matmul.default: 0,
    _aten.addmm.default: 1, _aten.baddbmm.default: 1, _aten.mv.default: 0,
}


def _op_macs(func: Any, args: tuple[Any, ...], out: Any) -> int:
    """Multiply-accumulates of one ATen op call (0 for ops that are not conv/matmul)."""
    if not isinstance(out, torch.Tensor):
        return 0
    if func in _CONV:
        weight = args[1]
        return out.numel() * math.prod(weight.shape[1:])
    if func in _CONV_T or (func in _CONV_GENERIC and bool(args[6])):
        # weight [C_in, C_out/groups, k...]: every input element meets C_out/groups x k^d weights
        inp, weight = args[0], args[1]
        return inp.numel() * math.prod(weight.shape[1:])
    if func in _CONV_GENERIC:
        return out.numel() * math.prod(args[1].shape[1:])
    if func is _aten.linear.default:
        return out.numel() * args[1].shape[-1]
    if func in _MM_LAST:
        a = args[_MM_LAST[func]]
        return out.numel() * a.shape[-1]
    if func is _aten.dot.default:
        return int(args[0].numel())
    return 0


@dataclass
class _Layer:
    module: nn.Module
    macs: int = 0
    calls: int = 0
    input_shape: tuple[int, ...] = ()
    output_shape: tuple[int, ...] = ()
    output_bytes: int = 0


@dataclass
class _Trace:
    """What one instrumented forward saw, per module FQN."""

    layers: dict[str, _Layer] = field(default_factory=dict)
    stack: list[str] = field(default_factory=list)
    live: dict[int, list[int]] = field(default_factory=dict)  # storage ptr -> [bytes, refs]
    live_bytes: int = 0
    peak_bytes: int = 0
    unattributed_macs: int = 0

    def track(self, t: torch.Tensor) -> None:
        """Count ``t``'s storage as live until its last Python tensor is freed."""
        if t.device.type == "meta" or t.is_sparse:
            return
        try:
            storage = t.untyped_storage()
        except (RuntimeError, NotImplementedError):  # tensor subclasses without storage
            return
        key, nbytes = storage.data_ptr(), storage.nbytes()
        if key == 0 or nbytes == 0:
            return
        entry = self.live.get(key)
        if entry is None:
            self.live[key] = [nbytes, 1]
            self.live_bytes += nbytes
            self.peak_bytes = max(self.peak_bytes, self.live_bytes)
        else:
            entry[1] += 1
        weakref.finalize(t, self._release, key)

    def _release(self, key: int) -> None:
        entry = self.live.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] <= 0:
            self.live_bytes -= entry[0]
            del self.live[key]


class _CountMode(TorchDispatchMode):
    def __init__(self, trace: _Trace) -> None:
        super().__init__()
        self.trace = trace

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        macs = _op_macs(func, args, out)
        if macs:
            if self.trace.stack:
                self.trace.layers[self.trace.stack[-1]].macs += macs
            else:
                self.trace.unattributed_macs += macs
        for t in tensors_in(out if isinstance(out, (tuple, list)) else [out]):
            if not any(t is a for a in args):  # in-place ops return their input
                self.trace.track(t)
        return out


def _nbytes(tensors: list[torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def trace_forward(model: nn.Module, example_input: ExampleInput) -> tuple[_Trace, Any]:
    """Run one instrumented forward in eval/inference mode; returns the trace and the output.

    Raises:
        ConfigError: the forward failed on ``example_input`` (wrong shape, channels, ...).
    """
    trace = _Trace()
    handles = []

    def pre(name: str) -> Any:
        def hook(mod: nn.Module, args: tuple[Any, ...]) -> None:
            layer = trace.layers[name]
            layer.calls += 1
            if not layer.input_shape:
                t = tensors_in(list(args))
                layer.input_shape = tuple(t[0].shape) if t else ()
            trace.stack.append(name)

        return hook

    def post(name: str) -> Any:
        def hook(mod: nn.Module, args: tuple[Any, ...], out: Any) -> None:
            if trace.stack and trace.stack[-1] == name:
                trace.stack.pop()
            outs = tensors_in(out)
            layer = trace.layers[name]
            layer.output_shape = tuple(outs[0].shape) if outs else ()
            layer.output_bytes = _nbytes(outs)

        return hook

    for name, mod in model.named_modules():
        trace.layers[name] = _Layer(mod)
        handles.append(mod.register_forward_pre_hook(pre(name)))
        handles.append(mod.register_forward_hook(post(name)))
    was_training = model.training
    model.eval()
    try:
        for t in tensors_in(example_input if not isinstance(example_input, dict) else list(example_input.values())):
            trace.track(t)
        with torch.inference_mode(), _CountMode(trace):
            out = run_model(model, example_input)
    except (RuntimeError, ValueError, TypeError, IndexError, AssertionError) as e:
        raise forward_error(model, example_input, e) from e
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return trace, out


def count_params(model: nn.Module) -> int:
    """All parameters, each shared tensor once (``model.parameters()`` de-duplicates)."""
    return sum(p.numel() for p in model.parameters())


def weight_bytes(params: int, bits: int) -> int:
    """Bytes to store ``params`` weights at ``bits`` each, rounded up to a whole byte."""
    return -(-params * bits // 8)


def profile(model: nn.Module, example_input: ExampleInput, *, bits: int = 32) -> Cost:
    """Count what ``model`` costs on ``example_input``: params, MACs, weight bytes, peak activations.

    Args:
        model: any ``nn.Module``; it is run once in eval mode under ``torch.inference_mode`` and
            returned to its previous train/eval mode. Outputs may be tensors, tuples, lists or dicts.
        example_input: a ``Tensor[N, C, H, W]``, a ``list`` of images passed as one argument
            (torchvision detection models), a ``tuple`` of positional args or a ``dict`` of kwargs.
        bits: bits per weight for ``weight_bytes`` (32 = float32, 8 = int8, 4 = 4-bit codebook).

    Returns:
        A :class:`~slimcnn.types.Cost` without latency; ``layers`` holds one row per leaf module
        with parameters or MACs (plus any non-leaf module running functional conv/matmul ops
        itself), named by FQN, in ``named_modules`` order.

    Raises:
        ConfigError: ``bits`` is not in [1, 64] or the forward fails on ``example_input``.
    """
    from slimcnn.errors import ConfigError

    if not 1 <= bits <= 64:
        raise ConfigError(f"bits must be in [1, 64], got {bits}")
    trace, _ = trace_forward(model, example_input)
    rows: list[LayerCost] = []
    for name, layer in trace.layers.items():
        leaf = next(iter(layer.module.children()), None) is None
        n_params = sum(p.numel() for p in layer.module.parameters(recurse=False)) if leaf else 0
        if not (leaf and n_params) and not layer.macs:
            continue
        rows.append(
            LayerCost(
                name=name,
                type=type(layer.module).__name__,
                params=n_params,
                macs=layer.macs,
                weight_bytes=weight_bytes(n_params, bits),
                activation_bytes=layer.output_bytes,
                output_shape=layer.output_shape,
            )
        )
    total_macs = sum(lay.macs for lay in trace.layers.values()) + trace.unattributed_macs
    params = count_params(model)
    log.debug("profile: %d params, %d MACs, peak activations %d B", params, total_macs, trace.peak_bytes)
    return Cost(
        params=params,
        macs=total_macs,
        weight_bytes=weight_bytes(params, bits),
        activation_bytes=trace.peak_bytes,
        input_shape=input_shape(example_input),
        layers=tuple(rows),
    )


def layer_input_shapes(model: nn.Module, example_input: ExampleInput) -> dict[str, tuple[int, ...]]:
    """Input shape of every module's first call (FQN -> shape) from one forward."""
    trace, _ = trace_forward(model, example_input)
    return {name: lay.input_shape for name, lay in trace.layers.items() if lay.calls}
