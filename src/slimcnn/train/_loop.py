"""The one fine-tune loop every task and method shares: :func:`fit_`."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from slimcnn._io import save_torch
from slimcnn.errors import ConfigError, SlimcnnError, unknown_name
from slimcnn.progress import phase
from slimcnn.tasks.base import Batch, TrainStats
from slimcnn.train._distributed import (
    ddp_wrapped,
    join_from_env,
    local_part,
    mean_over_ranks,
    rank_device,
    synced_batchnorm,
    world,
)
from slimcnn.train._schedule import Schedule, lr_at

logger = logging.getLogger(__name__)

OptimizerName = Literal["sgd", "adam", "adamw"]
OPTIMIZERS: tuple[str, ...] = ("sgd", "adam", "adamw")
AMP_DTYPES: dict[str, torch.dtype] = {"bf16": torch.bfloat16, "fp16": torch.float16}
"""``amp=`` names: autocast to bfloat16, or to float16 with a GradScaler."""
BatchSource = Iterable[Batch] | Callable[[], Iterable[Batch]]
_LOSS_WINDOW = 20


class TrainingDivergedError(SlimcnnError, FloatingPointError):
    """The loss became NaN or infinite; the message says at which step and what to try."""


def to_device(obj: Any, device: str | torch.device) -> Any:
    """Move tensors (also inside lists, tuples and dicts) to ``device``; other objects pass through."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_device(o, device) for o in obj)
    if isinstance(obj, dict):
        return {k: to_device(v, device) for k, v in obj.items()}
    return obj


def _batch_size(batch: Any) -> int:
    x = batch[0] if isinstance(batch, (list, tuple)) and batch else batch
    return int(x.shape[0]) if isinstance(x, torch.Tensor) and x.dim() > 0 else 1


class _Cycle:
    """Endless batches: a factory is called again per pass, an iterable re-iterated, a one-shot
    iterator replayed from what it yielded (kept in memory)."""

    def __init__(self, source: BatchSource) -> None:
        self._factory: Callable[[], Iterable[Batch]] | None = None
        self._seen: list[Batch] | None = None
        if callable(source) and not isinstance(source, Iterable):
            self._factory = source
        elif isinstance(source, Iterator):
            self._seen = []
            src = source
            self._factory = lambda: src
        else:
            self._factory = lambda: source  # type: ignore[return-value]
        self._it: Iterator[Batch] = iter(self._factory())
        self._replay = False

    def __next__(self) -> Batch:
        for _ in range(2):
            try:
                batch = next(self._it)
            except StopIteration:
                if self._seen is not None:
                    if not self._seen:
                        break
                    self._replay = True
                    self._it = iter(list(self._seen))
                else:
                    self._it = iter(self._factory())  # type: ignore[misc]
                continue
            if self._seen is not None and not self._replay:
                self._seen.append(batch)
            return batch
        raise ConfigError("the training batches are empty; check the training data")


def _make_optimizer(
    name: str, params: list[nn.Parameter], *, lr: float, momentum: float, weight_decay: float
) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    raise unknown_name("optimizer", name, OPTIMIZERS)


def _check_args(steps: int, lr: float, checkpoint_every: int, optimizer: str, schedule: str, amp: str | None) -> None:
    if steps < 0:
        raise ConfigError(f"--steps must be >= 0, got {steps}")
    if not lr > 0 or not math.isfinite(lr):
        raise ConfigError(f"--lr must be a positive number, got {lr}")
    if checkpoint_every < 0:
        raise ConfigError(f"checkpoint_every must be >= 0, got {checkpoint_every}")
    if optimizer not in OPTIMIZERS:
        raise unknown_name("optimizer", optimizer, OPTIMIZERS)
    lr_at(0, steps=1, lr=lr, schedule=schedule)  # type: ignore[arg-type]  # validates the name
    if amp is not None and amp not in AMP_DTYPES:
        raise unknown_name("amp", amp, tuple(AMP_DTYPES))


def autocast(device: str | torch.device, amp: str | None) -> contextlib.AbstractContextManager[Any]:
    """``torch.autocast`` to the ``amp`` dtype (``"bf16"``/``"fp16"``) on ``device``; a no-op for None."""
    if amp is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=AMP_DTYPES[amp])


def _channels_last(batch: Any) -> Any:
    """4-D input tensors in channels-last memory order (what cuDNN's fastest convolutions read)."""
    if isinstance(batch, torch.Tensor):
        return batch.contiguous(memory_format=torch.channels_last) if batch.dim() == 4 else batch
    if isinstance(batch, tuple) and batch:
        return (_channels_last(batch[0]), *batch[1:])
    return batch


def _model_device(model: nn.Module) -> torch.device:
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


def fit_(
    model: nn.Module,
    batches: BatchSource,
    loss_fn: Callable[[nn.Module, Batch], torch.Tensor],
    *,
    steps: int,
    optimizer: OptimizerName = "sgd",
    lr: float,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    warmup_steps: int = 0,
    schedule: Schedule = "cosine",
    grad_clip: float | None = None,
    checkpoint: str | Path | None = None,
    checkpoint_every: int = 0,
    progress: bool = True,
    device: str = "cpu",
    params: Iterable[nn.Parameter] | None = None,
    seed: int = 0,
    amp: str | None = None,
    channels_last: bool = False,
    local_batches: bool = False,
) -> TrainStats:
    """Train ``model`` in place for ``steps`` optimiser steps.

    The learning rate follows :func:`~slimcnn.train.lr_at` (linear warm-up, then the schedule).
    Batches cycle endlessly: a callable is called again for each pass (so a factory can reshuffle),
    an iterable is re-iterated, a one-shot iterator is replayed from memory. With ``checkpoint``,
    model, optimiser, step and RNG state are written atomically every ``checkpoint_every`` steps and
    at the end; when the file already exists the run resumes from it, replaying the batch stream up
    to the saved step, so an interrupted run ends with the same weights as an uninterrupted one
    (for a deterministic batch source and ops).

    Under ``torchrun`` (``WORLD_SIZE`` > 1) the call joins the process group and trains with
    DistributedDataParallel: each rank keeps its equal slice of every global batch, gradients and
    BatchNorm statistics are averaged over the ranks, so the result equals one process with the same
    global batch (up to float rounding; dropout masks differ). Only rank 0 writes the checkpoint.

    Args:
        model: The module to train (mutated; returned to its device in eval mode).
        batches: ``(inputs, targets)`` batches, or a callable returning a fresh iterable of them.
        loss_fn: ``loss_fn(model, batch) -> scalar Tensor`` (``batch`` already on ``device``).
        steps: Number of optimiser steps (0 only evaluates nothing and returns).
        optimizer: ``"sgd"`` (with ``momentum``), ``"adam"`` or ``"adamw"``.
        lr: Peak learning rate.
        momentum: SGD momentum.
        weight_decay: L2 (SGD/Adam) or decoupled (AdamW) weight decay.
        warmup_steps: Linear warm-up steps.
        schedule: ``"cosine"``, ``"constant"`` or ``"step"``.
        grad_clip: Clip the global gradient norm to this value.
        checkpoint: Checkpoint file; resumed from when it exists.
        checkpoint_every: Save every N steps (0: only at the end, when ``checkpoint`` is set).
        progress: Report the phase (:func:`slimcnn.progress.phase`: a bar on a terminal, a log line).
        device: Where to train (``"cpu"``, ``"cuda"``, ...; ``"cuda"`` under torchrun is this rank's GPU).
        params: Train only these parameters; the others are frozen during the call.
        seed: Seeds torch's RNG (dropout etc.) for the call; the caller's RNG state is restored.
        amp: Mixed precision: ``"bf16"`` or ``"fp16"`` autocast (fp16 with a GradScaler); None = fp32.
        channels_last: Train in channels-last memory order (faster convolutions on CUDA); the model
            is returned contiguous.
        local_batches: The batches are already this rank's slices (a DistributedSampler-like source,
            e.g. a streaming loader that decodes only its rank's images); they are not cut again.

    Returns:
        :class:`~slimcnn.tasks.base.TrainStats` for the steps run by this call
        (``final_loss`` is the mean of the last up to 20 losses).

    Raises:
        ConfigError: Bad option values or empty batches.
        TrainingDivergedError: The loss became NaN/inf.
    """
    _check_args(steps, lr, checkpoint_every, optimizer, schedule, amp)
    join_from_env(device)
    home = _model_device(model)
    dev = rank_device(device)
    model.to(dev)
    if channels_last:
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    all_params = list(model.parameters())
    train_params = all_params if params is None else list(params)
    ids = {id(p) for p in train_params}
    frozen = [(p, p.requires_grad) for p in all_params if id(p) not in ids]
    for p, _ in frozen:
        p.requires_grad_(False)
    opt = _make_optimizer(optimizer, train_params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    scaler = torch.amp.GradScaler(dev.type) if amp == "fp16" else None
    ckpt = Path(checkpoint) if checkpoint is not None else None

    rng_devices = [dev.index or 0] if dev.type == "cuda" else []
    with torch.random.fork_rng(devices=rng_devices):
        torch.manual_seed(seed)
        start, losses, rng = 0, deque[float](maxlen=_LOSS_WINDOW), None
        if ckpt is not None and ckpt.exists():
            start, losses, rng = _resume(ckpt, model, opt, dev, steps, scaler)
        stream = _Cycle(batches)
        for _ in range(start):  # replay the batch stream up to the saved step
            next(stream)
        if rng is not None:  # after the replay, in case the batch source draws from torch's RNG
            torch.set_rng_state(rng)
        try:
            with _deterministic_cudnn(dev.type == "cuda"), synced_batchnorm(model):
                seconds, samples = _run(
                    model, ddp_wrapped(model, dev), stream, loss_fn, opt, losses, start=start, steps=steps, lr=lr,
                    warmup_steps=warmup_steps, schedule=schedule, grad_clip=grad_clip, ckpt=ckpt,
                    checkpoint_every=checkpoint_every, progress=progress, dev=dev,
                    precision=_Precision(amp, scaler, channels_last), local_batches=local_batches,
                )
        finally:
            for p, flag in frozen:
                p.requires_grad_(flag)
            model.eval()
            model.to(home)
            if channels_last:
                model.to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]
    final = float(sum(losses) / len(losses)) if losses else float("nan")
    return TrainStats(
        steps=steps - start,
        final_loss=final,
        seconds=seconds,
        samples_per_s=samples / seconds if seconds > 0 else 0.0,
        device=str(dev),
    )


@contextlib.contextmanager
def _deterministic_cudnn(on: bool) -> Iterator[None]:
    """Seeded GPU training reproduces exactly: a search re-trains its chosen point and must get the same model."""
    cudnn = torch.backends.cudnn
    saved = cudnn.deterministic, cudnn.benchmark
    if on:
        cudnn.deterministic, cudnn.benchmark = True, False
    try:
        yield
    finally:
        cudnn.deterministic, cudnn.benchmark = saved


@dataclasses.dataclass(frozen=True)
class _Precision:
    amp: str | None
    scaler: torch.amp.GradScaler | None
    channels_last: bool


def _run(
    model: nn.Module,
    net: nn.Module,
    stream: _Cycle,
    loss_fn: Callable[[nn.Module, Batch], torch.Tensor],
    opt: torch.optim.Optimizer,
    losses: deque[float],
    *,
    start: int,
    steps: int,
    lr: float,
    warmup_steps: int,
    schedule: Schedule,
    grad_clip: float | None,
    ckpt: Path | None,
    checkpoint_every: int,
    progress: bool,
    dev: torch.device,
    precision: _Precision,
    local_batches: bool,
) -> tuple[float, int]:
    rank, size = world()
    scaler = precision.scaler
    model.train()
    samples = 0
    t0 = time.perf_counter()
    title = f"fine-tune ({size} ranks)" if size > 1 else "fine-tune"
    with phase(title, total=steps - start, unit="steps") if progress else contextlib.nullcontext(_no_advance) as advance:
        for step in range(start, steps):
            for group in opt.param_groups:
                group["lr"] = lr_at(step, steps=steps, lr=lr, warmup_steps=warmup_steps, schedule=schedule)
            whole = next(stream)
            batch = to_device(whole if local_batches else local_part(whole, rank, size), dev)
            if precision.channels_last:
                batch = _channels_last(batch)
            opt.zero_grad(set_to_none=True)
            with autocast(dev, precision.amp):
                loss = loss_fn(net, batch)
            value = mean_over_ranks(float(loss.detach()))
            if not math.isfinite(value):
                raise TrainingDivergedError(
                    f"the training loss became {value} at step {step + 1}; lower --lr or add grad_clip"
                )
            (scaler.scale(loss) if scaler is not None else loss).backward()
            if grad_clip is not None:
                if scaler is not None:
                    scaler.unscale_(opt)
                params = [p for g in opt.param_groups for p in g["params"]]
                torch.nn.utils.clip_grad_norm_(params, grad_clip)
            if scaler is not None:
                scaler.step(opt)
                scaler.update()
            else:
                opt.step()
            losses.append(value)
            samples += _batch_size(whole) * (size if local_batches else 1)
            advance(1)
            done = step + 1
            if ckpt is not None and (done == steps or (checkpoint_every and done % checkpoint_every == 0)) and rank == 0:
                _save(ckpt, model, opt, done, steps, losses, scaler)
    seconds = time.perf_counter() - t0
    if steps > start:
        logger.info("trained %d steps in %.1fs (%.0f samples/s)", steps - start, seconds, samples / max(seconds, 1e-9))
    return seconds, samples


def _no_advance(n: int = 1) -> None:
    """The ``advance`` of a fine-tune that reports no progress."""


def _save(path: Path, model: nn.Module, opt: torch.optim.Optimizer, step: int, steps: int, losses: deque[float],
          scaler: torch.amp.GradScaler | None) -> None:
    state = {
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "step": step,
        "steps": steps,
        "losses": list(losses),
        "rng": torch.get_rng_state(),
    }
    if scaler is not None:
        state["scaler"] = scaler.state_dict()
    save_torch(path, state)
    logger.debug("checkpoint at step %d -> %s", step, path)


def _resume(
    path: Path, model: nn.Module, opt: torch.optim.Optimizer, dev: torch.device, steps: int,
    scaler: torch.amp.GradScaler | None,
) -> tuple[int, deque[float], torch.Tensor]:
    try:
        state = torch.load(path, map_location=dev, weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        step = int(state["step"])
        rng = state["rng"].cpu()
        if scaler is not None and "scaler" in state:
            scaler.load_state_dict(state["scaler"])
    except (RuntimeError, KeyError, ValueError, OSError) as e:
        raise ConfigError(
            f"cannot resume from checkpoint {path} ({type(e).__name__}: {str(e)[:200]}); "
            "delete it or choose another checkpoint path"
        ) from e
    if step > steps:
        raise ConfigError(f"checkpoint {path} is at step {step}, beyond steps={steps}; delete it or raise --steps")
    logger.info("resuming from %s at step %d of %d", path, step, steps)
    return step, deque((float(v) for v in state.get("losses", [])), maxlen=_LOSS_WINDOW), rng
