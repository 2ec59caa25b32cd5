"""An ONNX file as an ``nn.Module`` (ONNX Runtime inside), so every task can evaluate it; ORT timing.

``load_model("file:model.onnx")`` (and so ``slimcnn evaluate file:model.onnx --task ...``) returns an
:class:`OrtModule`: ``forward`` runs an ONNX Runtime CPU session. The :class:`ModelInfo` (input shape,
preprocessing, classes) comes from the ``model.json`` sidecar slimcnn writes beside the file; without
one the input shape is read from the graph and no normalisation is known.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from slimcnn.errors import ModelLoadError
from slimcnn.types import LatencyStats


class OrtModule(nn.Module):
    """An ONNX model run by ONNX Runtime on the CPU, behind the ``nn.Module`` call interface.

    A graph with a fixed batch dimension of 1 is run one sample at a time. The module has no
    parameters of its own (an int8 plan step's module holds the ``float_model`` it came from, which
    ``forward`` never runs); ``to(device)`` and ``train()`` are accepted and change nothing.

    Args:
        path: the ``.onnx`` file, or the serialised model (kept, so the module pickles and deep-copies).
        threads: ONNX Runtime intra-op threads (``None``: the physical cores).
        float_model: the float model an int8 model was quantised from (its structure and costs).
    """

    def __init__(self, path: str | Path | bytes, *, threads: int | None = None,
                 float_model: nn.Module | None = None) -> None:
        super().__init__()
        from slimcnn.measure._latency import resolve_threads

        # an int8 model's params/MACs are those of the float model it quantised (never run by forward)
        self.float_model = float_model

        # an in-memory model (an int8 plan step's output) keeps its bytes: it pickles and can be written
        self.onnx_bytes: bytes | None = path if isinstance(path, bytes) else None
        self.path = None if isinstance(path, bytes) else Path(path)
        self.threads = resolve_threads(threads)
        self._open()

    def _open(self) -> None:
        from slimcnn.measure._onnx import ort_session

        src: bytes | Path = self.onnx_bytes if self.onnx_bytes is not None else self.path  # type: ignore[assignment]
        try:
            self.session = ort_session(src, threads=self.threads)
        except Exception as e:  # noqa: BLE001 - ORT raises its own exception types for bad files
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ModelLoadError(f"ONNX Runtime cannot load '{self.name}': {first[:300]}") from e
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise ModelLoadError(f"'{self.name}' takes {len(inputs)} inputs; slimcnn evaluates single-input ONNX models")
        self.input_name = inputs[0].name
        self.input_dims: list[Any] = list(inputs[0].shape)
        self.n_outputs = len(self.session.get_outputs())

    @property
    def name(self) -> str:
        """The file, or ``<in-memory ONNX model>``."""
        return str(self.path) if self.path is not None else "<in-memory ONNX model>"

    def model_bytes(self) -> bytes:
        """The serialised ONNX model (read from the file when the module was made from one)."""
        return self.onnx_bytes if self.onnx_bytes is not None else self.path.read_bytes()  # type: ignore[union-attr]

    def __getstate__(self) -> dict[str, Any]:
        """Pickle without the session (rebuilt on load); a file-backed module pickles its bytes too."""
        state = {k: v for k, v in self.__dict__.items() if k != "session"}
        if state["onnx_bytes"] is None:
            state["onnx_bytes"], state["path"] = self.model_bytes(), None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._open()

    @property
    def fixed_batch(self) -> int | None:
        """The graph's batch size when it is a fixed number, else None."""
        first = self.input_dims[0] if self.input_dims else None
        return first if isinstance(first, int) and first > 0 else None

    def input_shape(self) -> tuple[int, ...]:
        """The graph's input shape with symbolic dimensions set to 1."""
        return tuple(d if isinstance(d, int) and d > 0 else 1 for d in self.input_dims)

    def forward(self, x: torch.Tensor) -> Any:
        """Run the session on ``x`` (``Tensor[N, ...]``); one output -> a tensor, several -> a tuple."""
        arr = x.detach().to("cpu", torch.float32).contiguous().numpy()
        want = self.input_dims[1:]
        if len(want) != arr.ndim - 1 or any(isinstance(d, int) and d > 0 and d != n
                                            for d, n in zip(want, arr.shape[1:], strict=True)):
            shown = "x".join(str(d) if isinstance(d, int) and d > 0 else "any" for d in want)
            torch_file = self.path.with_suffix(".pt") if self.path is not None else None
            source = f"file:{torch_file}" if torch_file is not None and torch_file.is_file() else "MODEL"
            raise ModelLoadError(
                f"'{self.name}' takes inputs of {shown} (fixed when it was exported), got "
                f"{'x'.join(map(str, arr.shape[1:]))}; give it inputs of that size (for a super-resolution model, "
                f"`slimcnn export {source} --format onnx --task sr --data D` writes a file that takes any size)")
        fixed = self.fixed_batch
        if fixed is not None and arr.shape[0] != fixed:
            if fixed != 1:
                raise ModelLoadError(f"'{self.name}' has a fixed batch of {fixed}; got a batch of {arr.shape[0]}")
            parts = [self.session.run(None, {self.input_name: arr[i:i + 1]}) for i in range(arr.shape[0])]
            outs = [np.concatenate([p[j] for p in parts]) for j in range(self.n_outputs)]
        else:
            outs = self.session.run(None, {self.input_name: arr})
        tensors = tuple(torch.from_numpy(np.asarray(o)) for o in outs)
        return tensors[0] if len(tensors) == 1 else tensors

    def extra_repr(self) -> str:
        return f"path={self.name!r}, threads={self.threads}"


def load_onnx_file(path: Path, opts: Any) -> Any:
    """``file:model.onnx`` for every command (registered for ``.onnx`` in ``slimcnn.models.FILE_LOADERS``)."""
    from slimcnn.errors import ConfigError
    from slimcnn.models import LoadedModel, ModelInfo

    if getattr(opts, "arch", None) is not None:
        raise ConfigError(f"'{path}' is an ONNX model; drop --arch (it is only for bare state_dicts)")
    module = OrtModule(path)
    out = module.session.get_outputs()
    task = "classification" if len(out) == 1 and len(out[0].shape) == 2 else None
    classes = out[0].shape[1] if task and isinstance(out[0].shape[1], int) else None
    note = "ONNX model without a model.json sidecar: no input normalisation is known (none applied)"
    info = ModelInfo(task=task, input_shape=module.input_shape(), num_classes=classes, pretrained=True,
                     weights=str(path), notes=(note,))
    return LoadedModel(module.eval(), f"file:{path}", info)


def compare_onnx_latency(models: dict[str, bytes | str | Path], example: torch.Tensor, *, threads: int | None = None,
                         warmup: int = 10, runs: int = 50,
                         clock: Callable[[], float] = time.perf_counter) -> dict[str, LatencyStats]:
    """Time ONNX files side by side in one process, interleaved round-robin (fair ratios).

    Like :func:`slimcnn.measure.compare_latency`, for models that exist only as ONNX (an int8
    QDQ model has no torch module): warm-up, then in each round every model runs twice in a row and
    the second run is timed (:func:`slimcnn.measure._latency.round_robin`), the order rotating from
    round to round; sessions spin only inside a run (``spin="in-run"``).

    Returns:
        name -> :class:`~slimcnn.types.LatencyStats` (median, p10, p90 in ms; ``runtime="onnxruntime"``).
    """
    from slimcnn.measure._latency import _make_stats, resolve_threads, round_robin, wall_timed
    from slimcnn.measure._onnx import ort_session

    n_threads = resolve_threads(threads)
    sessions = {n: ort_session(m, threads=n_threads, spin="in-run") for n, m in models.items()}
    feeds = {n: {s.get_inputs()[0].name: example.detach().cpu().float().numpy()} for n, s in sessions.items()}
    samples = round_robin({n: wall_timed(functools.partial(s.run, None, feeds[n]), clock) for n, s in sessions.items()},
                          warmup=warmup, runs=runs)
    shape = tuple(int(s) for s in example.shape)
    return {n: _make_stats(samples[n], runtime="onnxruntime", threads=n_threads, device="cpu", shape=shape,
                           warmup=warmup) for n in models}
