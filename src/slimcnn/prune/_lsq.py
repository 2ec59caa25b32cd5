"""Least-squares compensation (``compensate="lsq"``): refit every conv / ConvTranspose / Linear that reads a
removed channel, weights and bias, to reproduce its original output from the channels it keeps.

The normal equations of each refit are summed over calibration batches (rows of unfolded inputs; one block per
output phase of a strided ConvTranspose) and solved once. From the second pruning of one model with one batch
set on, the statistics of the *full* layers are kept (up to :data:`MAX_CACHED_FEATURES` input features), so
later prunings (a search's trials) restrict them to their kept channels instead of running the calibration
batches again. Consumers that cannot be refitted are mean-folded (:mod:`slimcnn.prune._compensate`).
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from slimcnn.errors import ConfigError, UnsupportedLayerError
from slimcnn.graph import ChannelGraph
from slimcnn.prune._compensate import _run, removed_inputs


class _Normal:
    """Normal equations of one least-squares refit, accumulated over calibration batches.

    Rows fall into blocks (one for a conv or Linear, one per output phase of a strided ConvTranspose) whose
    features are disjoint weights; all blocks share the bias. ``A`` = X^T X, ``u`` = X^T 1, ``g`` = X^T Y,
    ``h`` = 1^T Y and the row count, per block.
    """

    def __init__(self, max_rows: int) -> None:
        self.blocks: dict[Any, list[Any]] = {}
        self.max_rows = max_rows
        self._rng = torch.Generator().manual_seed(0)

    def images(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """A seeded subset of a batch's images giving about ``max_rows`` output positions (cut before im2col,
        whose cost grows with every image)."""
        need = -(-self.max_rows // max(1, y[0, 0].numel()))
        if x.shape[0] <= need:
            return x, y
        pick = torch.randperm(x.shape[0], generator=self._rng)[:need].to(x.device)
        return x[pick], y[pick]

    def add(self, key: Any, x: Tensor, y: Tensor) -> None:
        if x.shape[0] > self.max_rows:  # a seeded subset: the cost is rows x features^2, the fit needs far fewer
            pick = torch.randperm(x.shape[0], generator=self._rng)[:self.max_rows].to(x.device)
            x, y = x[pick], y[pick]
        x, y = x.double(), y.double()
        part = [x.T @ x, x.sum(0), x.T @ y, y.sum(0), x.shape[0]]
        if key in self.blocks:
            self.blocks[key] = [a + b for a, b in zip(self.blocks[key], part, strict=True)]
        else:
            self.blocks[key] = part

    def solve(self, ridge: float) -> tuple[dict[Any, Tensor], Tensor]:
        """``({block: Tensor[features, outputs]}, bias Tensor[outputs])`` minimising the summed squared error.

        With ``w_P = A_P^-1 (g_P - u_P b)`` per block the shared bias is
        ``b = sum_P (h_P - u_P^T A_P^-1 g_P) / sum_P (n_P - u_P^T A_P^-1 u_P)``; ``ridge`` (relative to each
        block's mean diagonal) keeps dead channels (all-zero features) solvable.
        """
        solved = {}
        num, den = 0.0, 0.0
        for key, (a, u, g, h, n) in self.blocks.items():
            a = a + ridge * (a.diagonal().mean() + 1e-12) * torch.eye(a.shape[0], dtype=a.dtype, device=a.device)
            sol = torch.linalg.solve(a, torch.cat([g, u[:, None]], 1))
            ag, au = sol[:, :-1], sol[:, -1]
            num = num + h - u @ ag
            den = den + n - u @ au
            solved[key] = (ag, au)
        bias = num / den
        return {k: ag - au[:, None] * bias[None, :] for k, (ag, au) in solved.items()}, bias


def _conv_rows(m: nn.Conv2d, x: Tensor, chunk: int = 1 << 22) -> Iterable[Tensor]:
    """im2col rows of ``m``'s input (``[rows, C * kh * kw]``, C-major like ``weight.reshape(out, -1)``).

    Chunked by ``m``'s full input width, not ``x``'s: the kept and the full channels then give the same
    chunks, so rows subsampled in :meth:`_Normal.add` are the same rows (see :class:`_FullStats`)."""
    per = max(1, chunk // max(1, m.in_channels * math.prod(m.kernel_size) * x.shape[-1] * x.shape[-2]))
    for i in range(0, x.shape[0], per):
        cols = F.unfold(x[i:i + per], m.kernel_size, dilation=m.dilation, padding=m.padding, stride=m.stride)
        yield cols.transpose(1, 2).reshape(-1, cols.shape[1])


def _convt_phases(m: nn.ConvTranspose2d, x: Tensor, out_hw: Sequence[int]) -> Iterable[tuple[Any, Tensor, Tensor]]:
    """Per output phase ``(ph, pw)`` of a ConvTranspose2d: its taps and the design rows.

    ``y[o, s*i + ph] = b[o] + sum_{c, kh} x[c, i + q(kh)] * W[c, o, kh]`` over the taps with
    ``(ph + p - kh * d) % s == 0``, ``q(kh) = (ph + p - kh * d) / s`` (and the same along the width), so each
    phase is an ordinary correlation over its own taps. Yields ``((ph, pw), taps, rows[N * Hp * Wp, C * taps])``
    with the rows in the phase's row-major output order.
    """
    (s_h, s_w), (p_h, p_w), (d_h, d_w) = m.stride, m.padding, m.dilation
    k_h, k_w = m.kernel_size
    n, c = x.shape[:2]
    for ph in range(min(s_h, out_hw[0])):
        for pw in range(min(s_w, out_hw[1])):
            th = [(k, (ph + p_h - k * d_h) // s_h) for k in range(k_h) if (ph + p_h - k * d_h) % s_h == 0]
            tw = [(k, (pw + p_w - k * d_w) // s_w) for k in range(k_w) if (pw + p_w - k * d_w) % s_w == 0]
            rows_h, rows_w = len(range(ph, out_hw[0], s_h)), len(range(pw, out_hw[1], s_w))
            if not th or not tw:
                continue
            pad = max([abs(q) for _, q in th + tw] + [rows_h, rows_w])
            xp = F.pad(x, (pad, pad + rows_w, pad, pad + rows_h))
            taps = [(kh, kw) for kh, _ in th for kw, _ in tw]
            cols = [xp[:, :, pad + qh:pad + qh + rows_h, pad + qw:pad + qw + rows_w] for _, qh in th for _, qw in tw]
            design = torch.stack(cols, 2)  # [N, C, taps, Hp, Wp]
            yield (ph, pw), taps, design.permute(0, 3, 4, 1, 2).reshape(n * rows_h * rows_w, c * len(taps))


MAX_CACHED_FEATURES = 2048
"""Layers with more input features (``C * kh * kw``) are not cached: X^T X alone would take 32 MB and more."""


def _tensors(obj: Any) -> Iterable[Tensor]:
    if isinstance(obj, Tensor):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _tensors(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _tensors(v)


def _content_key(model: nn.Module, batches: Sequence[Any], max_rows: int) -> str:
    """A digest of everything the calibration activations depend on: the weights, buffers and batches."""
    h = hashlib.blake2b(digest_size=16)
    h.update(str(max_rows).encode())
    for t in itertools.chain(model.state_dict().values(), _tensors(list(batches))):
        t = t.detach().cpu().contiguous()
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


class _FullStats:
    """The normal equations of every input and output channel of each consumer, for one model and batch set.

    A search prunes the same original model many times with the same calibration batches; each pruning's
    refit is these statistics restricted to its kept channels (the same rows: the image subsets do not depend
    on the channels, and :func:`_conv_rows` chunks by the full width), so only the first layers seen pay a
    calibration pass. Kept for the last model and batch set only; filled from the second pruning of that
    pair on, so a single pruning pays nothing extra. Measured on ResNet-56 (l1, 8 calibration batches, one
    thread of a loaded 2-core VM; benchmarks/compensation.py ``--part repeat``): 43 s, 57 s (the full
    statistics), then 0.9 s per pruning, with outputs identical to the uncached refit."""

    def __init__(self) -> None:
        self.key: str | None = None
        self.calls = 0
        self.stats: dict[str, _Normal] = {}

    def use(self, key: str) -> bool:
        """Count a pruning of ``key``; True when its full statistics are worth keeping (the second on)."""
        if key != self.key:
            self.key, self.calls, self.stats = key, 0, {}
        self.calls += 1
        return self.calls > 1


_FULL = _FullStats()


def _features(m: nn.Module) -> int:
    return m.in_features if isinstance(m, nn.Linear) else m.in_channels * math.prod(m.kernel_size)


def _restricted(full: _Normal, m: nn.Module, k_in: Sequence[int], k_out: Sequence[int]) -> _Normal:
    """``full``'s normal equations on the kept input channels ``k_in`` and outputs ``k_out``."""
    out = _Normal(full.max_rows)
    cols = torch.as_tensor(list(k_out), dtype=torch.long)
    for key, (a, u, g, h, n) in full.blocks.items():
        taps = 1 if isinstance(m, nn.Linear) else len(key[1]) if isinstance(m, nn.ConvTranspose2d) \
            else math.prod(m.kernel_size)
        rows = torch.as_tensor([c * taps + t for c in k_in for t in range(taps)], dtype=torch.long)
        out.blocks[key] = [a[rows][:, rows], u[rows], g[rows][:, cols], h[cols], n]
    return out


def _refittable(m: nn.Module) -> bool:
    if isinstance(m, nn.Linear):
        return True
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
        return m.groups == 1 and m.padding_mode == "zeros" and not isinstance(m.padding, str)
    return False


def least_squares_fits(model: nn.Module, graph: ChannelGraph, removed: set[int], batches: Sequence[Any],
                       *, ridge: float = 1e-6, max_rows: int = 4096) -> dict[str, tuple[Tensor, Tensor]]:
    """Weights and bias refitting every consumer of removed channels to its original output ("lsq").

    Each conv (``groups=1``, zero padding), ConvTranspose2d (``groups=1``) or Linear that reads a removed
    channel is fitted, on the *unpruned* model's calibration activations, from its kept input channels to its
    kept outputs: ``min ||X_kept W + b - Y||^2`` (the reconstruction step of He et al. 2017, "Channel Pruning
    for Accelerating Very Deep Neural Networks", on the original inputs as in ThiNet; one pass over the data
    for all layers). On FSRCNN x3 removing a quarter of the first layer's channels (l1) costs 14.6 dB on
    Set5 with no compensation, 12.1 dB with ``mean`` and 0.05 dB with ``lsq`` (benchmarks/compensation.py). Call on the unpruned model, then
    :func:`apply_fits_` after :func:`~slimcnn.prune.prune_`; other consumers keep ``mean`` folding.

    Args:
        model: the unpruned model.
        graph: its trace.
        removed: atom roots to remove.
        batches: calibration inputs.
        ridge: Tikhonov term relative to the mean diagonal of X^T X.
        max_rows: rows (output positions) used per layer, batch and call (a seeded random subset above it).

    Returns:
        ``{consumer FQN: (weight in the pruned layer's shape, bias Tensor[kept outputs])}`` (float64, CPU).

    Raises:
        ConfigError: ``batches`` is empty, or a consumer never ran on them.
    """
    mods = dict(model.named_modules())
    consumers = [f for f in removed_inputs(graph, removed) if _refittable(mods[f])]
    if not consumers:
        return {}
    if not batches:
        raise ConfigError("least-squares compensation needs calibration batches: pass --task/--data (or batches=[...])")
    kept = graph.kept(removed)
    keep_full = _FULL.use(_content_key(model, batches, max_rows))
    full = [f for f in consumers if keep_full and f not in _FULL.stats and _features(mods[f]) <= MAX_CACHED_FEATURES]
    normal = {f: _Normal(max_rows) for f in consumers if f not in _FULL.stats}

    def hook(fqn: str) -> Callable[[nn.Module, tuple[Any, ...], Any], None]:
        k_out, k_in = kept[fqn]
        if fqn in full:  # every channel: the cache restricts them to this and later prunings' kept ones
            m = mods[fqn]
            k_in = list(range(_features(m) if isinstance(m, nn.Linear) else m.in_channels))
            k_out = list(range(m.out_features if isinstance(m, nn.Linear) else m.out_channels))

        def fn(m: nn.Module, args: tuple[Any, ...], out: Any) -> None:
            x, y = args[0].detach(), out.detach()
            nrm = normal[fqn]
            if isinstance(m, nn.Linear):
                x, y = x.reshape(-1, x.shape[-1])[:, k_in], y.reshape(-1, y.shape[-1])[:, k_out]
                nrm.add(0, x, y)
                return
            x, y = nrm.images(x, y)
            if isinstance(m, nn.Conv2d):
                ys = y[:, k_out].movedim(1, -1).reshape(-1, len(k_out))
                start = 0
                for rows in _conv_rows(m, x[:, k_in]):
                    nrm.add(0, rows, ys[start:start + rows.shape[0]])
                    start += rows.shape[0]
                return
            for phase, taps, rows in _convt_phases(m, x[:, k_in], y.shape[-2:]):
                ph, pw = phase
                yp = y[:, k_out, ph::m.stride[0], pw::m.stride[1]].movedim(1, -1).reshape(-1, len(k_out))
                nrm.add((phase, tuple(taps)), rows, yp)
        return fn

    if normal:
        _run(model, batches, [mods[f].register_forward_hook(hook(f)) for f in normal])
    fits: dict[str, tuple[Tensor, Tensor]] = {}
    for f in consumers:
        if f in normal and not normal[f].blocks:
            raise ConfigError(f"'{f}' reads removed channels but did not run on the calibration batches")
        m, (k_out, k_in) = mods[f], kept[f]
        if f in full:
            _FULL.stats[f] = normal[f]
        stats = _restricted(_FULL.stats[f], m, k_in, k_out) if f in _FULL.stats else normal[f]
        solved, bias = stats.solve(ridge)
        if isinstance(m, nn.ConvTranspose2d):
            w = torch.zeros(len(k_in), len(k_out), *m.kernel_size, dtype=torch.float64, device=bias.device)
            for (_, taps), sol in solved.items():  # sol: [C * taps, out], C-major
                sol = sol.reshape(len(k_in), len(taps), len(k_out))
                for t, (kh, kw) in enumerate(taps):
                    w[:, :, kh, kw] = sol[:, t]
        else:
            w = solved[0].T.reshape(len(k_out), len(k_in), *getattr(m, "kernel_size", ()))
        fits[f] = (w.cpu(), bias.cpu())
    return fits


def apply_fits_(model: nn.Module, fits: dict[str, tuple[Tensor, Tensor]]) -> None:
    """Write :func:`least_squares_fits`' weights and biases into the pruned ``model`` (a missing bias is added).

    Raises:
        UnsupportedLayerError: a layer's pruned weight does not have the fitted shape.
    """
    mods = dict(model.named_modules())
    for fqn, (w, b) in fits.items():
        m = mods[fqn]
        if tuple(m.weight.shape) != tuple(w.shape):
            raise UnsupportedLayerError(f"'{fqn}' has weight {tuple(m.weight.shape)} after pruning, "
                                        f"the refit {tuple(w.shape)}")
        with torch.no_grad():
            m.weight.copy_(w.to(m.weight))
            if m.bias is None:
                m.bias = nn.Parameter(b.to(m.weight), requires_grad=m.weight.requires_grad)
            else:
                m.bias.copy_(b.to(m.bias))
