"""torch.distributed as the engine for more than one device or machine.

Under ``torchrun`` (``python -m torch.distributed.run``) every process runs the same command; the
environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``) says who it is.
:func:`join_from_env` joins the process group (NCCL on CUDA, gloo on CPU). Fine-tuning
(:func:`slimcnn.train.fit_`) then runs DistributedDataParallel: every rank draws the same global batch
order, keeps its own equal slice of each batch (:func:`local_part`, a DistributedSampler over the
batch) and gradients are averaged, so N ranks with global batch B train like one process with batch B.
BatchNorm statistics are synchronised over the ranks (:func:`synced_batchnorm`) for the same reason.
Work that splits into independent items (a sensitivity sweep's knobs) is sharded over the ranks and
gathered (:func:`all_gather_objects`); :func:`on_local_ranks` starts such a group on one machine
without ``torchrun`` (``--workers N``).
"""

from __future__ import annotations

import atexit
import contextlib
import datetime
import logging
import os
import types
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import torch
from torch import nn

from slimcnn.errors import ConfigError

logger = logging.getLogger(__name__)
T = TypeVar("T")

__all__ = [
    "all_gather_objects", "alone", "from_main", "is_main", "join_from_env", "local_part", "on_local_ranks", "rank_device",
    "synced_batchnorm", "world",
]


RANK_WAIT = datetime.timedelta(hours=6)
"""How long a rank waits in a collective for the others (torch's default, 30 min, is shorter than a trial)."""

_alone = False
"""Set by :func:`alone`: this rank works on an item of its own."""


def world() -> tuple[int, int]:
    """``(rank, world_size)`` of this process; ``(0, 1)`` outside a process group and inside :func:`alone`."""
    dist = torch.distributed
    if not _alone and dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    """True on rank 0 (the one process that writes outputs), also outside a process group."""
    return world()[0] == 0


def join_from_env(device: str = "cpu") -> bool:
    """Join the process group ``torchrun`` describes in the environment; True when there are several ranks.

    Safe to call more than once and outside ``torchrun`` (then it does nothing and returns False).

    Args:
        device: Where this process computes; ``cuda`` picks NCCL, anything else gloo.

    Raises:
        ConfigError: The environment names several ranks but torch.distributed is unavailable.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    dist = torch.distributed
    if not dist.is_available():
        raise ConfigError("WORLD_SIZE > 1 but this torch build has no torch.distributed; run one process")
    if not dist.is_initialized():
        cuda = torch.device(device).type == "cuda"
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        # a rank with no trial left waits in the gather while the others fine-tune theirs (can be hours)
        dist.init_process_group("nccl" if cuda else "gloo", timeout=RANK_WAIT)
        atexit.register(_leave_group)
        logger.info("joined torch.distributed: rank %d of %d (%s)", dist.get_rank(), dist.get_world_size(),
                    dist.get_backend())
    return dist.get_world_size() > 1


def _leave_group() -> None:
    """Destroy the process group :func:`join_from_env` joined, at exit: left to the interpreter's teardown, gloo's
    threads now and then aborted a rank ("terminate called without an active exception", exit -6, torchrun
    reporting the run failed after it had finished)."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def rank_device(device: str | torch.device) -> torch.device:
    """``cuda`` without an index means this rank's GPU (``LOCAL_RANK``) inside a process group."""
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None and world()[1] > 1:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return dev


def ddp_wrapped(model: nn.Module, dev: torch.device) -> nn.Module:
    """``model`` wrapped in DistributedDataParallel inside a process group (rank 0's weights win), else itself."""
    if world()[1] == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)


def mean_over_ranks(value: float) -> float:
    """The global batch's mean loss (every rank holds an equal slice), so all ranks agree on divergence."""
    if world()[1] == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64)
    torch.distributed.all_reduce(t)
    return float(t) / world()[1]


def _rows(batch: Any) -> int | None:
    if isinstance(batch, torch.Tensor) and batch.dim() > 0:
        return int(batch.shape[0])
    if isinstance(batch, (list, tuple)) and batch:
        return _rows(batch[0])
    return None


def _take(obj: Any, lo: int, hi: int, n: int) -> Any:
    """Cut rows ``lo:hi`` of every per-sample part: tensors with ``n`` rows and lists of ``n`` items."""
    if isinstance(obj, torch.Tensor):
        return obj[lo:hi] if obj.dim() > 0 and obj.shape[0] == n else obj
    if isinstance(obj, list) and len(obj) == n:  # per-sample targets (e.g. box lists)
        return obj[lo:hi]
    if isinstance(obj, (list, tuple)):
        return type(obj)(_take(o, lo, hi, n) for o in obj)
    if isinstance(obj, dict):
        return {k: _take(v, lo, hi, n) for k, v in obj.items()}
    return obj


def local_part(batch: Any, rank: int, size: int) -> Any:
    """This rank's contiguous, equal slice of a global batch (every per-sample tensor or list is cut).

    Raises:
        ConfigError: The global batch does not divide evenly over the ranks (the mean of unequal
            slices' mean losses would not be the global mean).
    """
    if size == 1:
        return batch
    n = _rows(batch)
    if n is None:
        raise ConfigError("cannot split this batch over the ranks: its first element is not a batched tensor")
    if n % size:
        raise ConfigError(f"a batch of {n} does not split evenly over {size} ranks; "
                          f"choose --batch-size a multiple of {size}")
    per = n // size
    return _take(batch, rank * per, (rank + 1) * per, n)


@contextlib.contextmanager
def alone() -> Iterator[None]:
    """This rank works on an item of its own (a trial of a sharded search): inside, :func:`world` is
    ``(0, 1)``, so its fine-tunes and data streams do not split over the ranks. No collective may run inside."""
    global _alone
    before, _alone = _alone, True
    try:
        yield
    finally:
        _alone = before


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order (``[obj]`` outside a process group)."""
    _, size = world()
    if size == 1:
        return [obj]
    out: list[Any] = [None] * size
    torch.distributed.all_gather_object(out, obj)
    return out


def from_main(make: Callable[[], T]) -> T:
    """``make()`` run on rank 0 alone and its result sent to every rank (``make()`` itself outside a group).

    For what is rank-local but decides the search's course: a timing (every rank would measure its own),
    a resume file (another node may not see it). An error on rank 0 is raised on every rank.
    """
    rank, size = world()
    if size == 1:
        return make()
    box: list[Any] = [None]
    if rank == 0:
        try:
            box[0] = make()
        except Exception as e:  # re-raised below on every rank, after the broadcast every rank waits in
            box[0] = e
    torch.distributed.broadcast_object_list(box, src=0)
    if isinstance(box[0], BaseException):
        raise box[0]
    return box[0]  # type: ignore[no-any-return]


def round_robin(items: Sequence[T], work: Callable[[T], Any]) -> Iterator[list[Any]]:
    """Rank r works on items r, r + size, ...; yields each round's results from every rank, in item order
    (``None`` from a rank with no item left). An error on any rank is gathered too and raised on every
    rank, so no rank is left waiting in a collective."""
    rank, size = world()
    for first in range(0, len(items), size):
        result: Any = None
        if first + rank < len(items):
            try:
                result = work(items[first + rank])
            except Exception as e:  # re-raised below, after every rank has reached the gather
                result = e
        gathered = all_gather_objects(result)
        for r in gathered:
            if isinstance(r, BaseException):
                raise r
        yield gathered


class _SumOverRanks(torch.autograd.Function):
    """All-reduce (sum) whose gradient is the all-reduced gradient: every rank's loss reaches every input."""

    @staticmethod
    def forward(ctx: Any, t: torch.Tensor) -> torch.Tensor:  # noqa: D102
        out = t.clone()
        torch.distributed.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:  # noqa: D102
        out = grad.clone()
        torch.distributed.all_reduce(out)
        return out


def _synced_bn_forward(bn: nn.modules.batchnorm._BatchNorm, x: torch.Tensor) -> torch.Tensor:
    """Batch statistics over every rank's slice (differentiable all-reduce), as one process would compute."""
    all_reduce = _SumOverRanks.apply
    if not bn.training:  # running statistics: nothing to synchronise
        return type(bn).forward(bn, x)
    dims = [0, *range(2, x.dim())]
    shape = [1, -1] + [1] * (x.dim() - 2)
    count = torch.tensor([x.numel() / x.shape[1]], dtype=torch.float64)
    torch.distributed.all_reduce(count)
    n = float(count)
    mean = all_reduce(x.sum(dims)) / n
    centred = x - mean.view(shape)
    var = all_reduce(centred.square().sum(dims)) / n
    y = centred * torch.rsqrt(var + bn.eps).view(shape)
    if bn.affine:
        y = y * bn.weight.view(shape) + bn.bias.view(shape)
    if bn.track_running_stats and bn.running_mean is not None:
        with torch.no_grad():
            bn.num_batches_tracked.add_(1)  # type: ignore[union-attr,operator]
            m = bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked)  # type: ignore[arg-type]
            bn.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
            bn.running_var.mul_(1 - m).add_(var.detach() * (n / max(n - 1, 1)), alpha=m)  # type: ignore[union-attr]
    return y


@contextlib.contextmanager
def synced_batchnorm(model: nn.Module) -> Iterator[int]:
    """Inside a process group, BatchNorm layers of ``model`` use statistics over all ranks; yields how many.

    The layers are patched in place (no module is replaced, so names and state_dict keys stay) and
    restored on exit. Outside a process group nothing changes.
    """
    patched = []
    if world()[1] > 1:
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and "forward" not in vars(m):
                m.forward = types.MethodType(_synced_bn_forward, m)  # type: ignore[method-assign]
                patched.append(m)
    try:
        yield len(patched)
    finally:
        for m in patched:
            del m.forward



def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def on_local_ranks(size: int, fn: Callable[[], T]) -> T:
    """Run ``fn`` on ``size`` ranks of a gloo group on this machine; returns rank 0's result.

    This process is rank 0; ranks 1..size-1 are forked from it (they share the loaded model and data
    without pickling) and run ``fn`` too, with one thread each. ``fn`` must take part in the same
    collectives on every rank and must not raise on one rank only (gather errors instead). For CUDA,
    launch under ``torchrun`` instead: a forked child cannot use the parent's CUDA context.

    Raises:
        ConfigError: Already inside a process group, or CUDA is initialised in this process.
    """
    import multiprocessing as mp

    dist = torch.distributed
    if dist.is_initialized():
        raise ConfigError("already inside a torch.distributed process group; run with --workers 1 under torchrun")
    if torch.cuda.is_initialized():
        raise ConfigError("--workers N with CUDA: launch with torchrun --nproc-per-node N instead "
                          "(a forked worker cannot use this process's CUDA context)")
    init = f"tcp://127.0.0.1:{_free_port()}"
    timeout = RANK_WAIT

    def child(rank: int) -> None:
        torch.set_num_threads(1)
        dist.init_process_group("gloo", init_method=init, rank=rank, world_size=size, timeout=timeout)
        try:
            fn()
        finally:
            dist.destroy_process_group()

    procs = [mp.get_context("fork").Process(target=child, args=(r,), daemon=True) for r in range(1, size)]
    for p in procs:
        p.start()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        dist.init_process_group("gloo", init_method=init, rank=0, world_size=size, timeout=timeout)
        try:
            return fn()
        finally:
            dist.destroy_process_group()
    finally:
        torch.set_num_threads(threads)
        for p in procs:
            p.join(timeout=60)
            if p.is_alive():
                p.terminate()
