"""Channel importance criteria (registry ``CRITERIA``) and group scoring.

A criterion returns per-layer channel scores ``{(layer FQN, role): Tensor[channels]}`` (higher = more
important); :func:`group_scores` sums (or averages / maxes) them over the members of each coupled group.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor, nn

from slimcnn.errors import ConfigError
from slimcnn.graph import ChannelGraph, ChannelRule, get_channel_rule
from slimcnn.registry import Registry

log = logging.getLogger(__name__)
LayerScores = dict[tuple[str, str], Tensor]


@dataclass
class ScoreContext:
    """Inputs a criterion may use."""

    model: nn.Module
    graph: ChannelGraph
    example_input: Any = None
    task: Any = None
    """A :class:`slimcnn.tasks.base.Task` (needed by ``taylor`` and ``chip`` unless batches are given)."""
    calib: int = 8
    """Number of calibration / training batches for data-driven criteria."""
    seed: int = 0
    batches: list[Any] = field(default_factory=list)
    """Explicit calibration inputs (used instead of the task's when given)."""

    def modules(self) -> dict[str, nn.Module]:
        return dict(self.model.named_modules())


Criterion = Callable[[ScoreContext], LayerScores]
CRITERIA: Registry[Criterion] = Registry("pruning criterion")


def _producers(ctx: ScoreContext) -> list[tuple[str, nn.Module, str]]:
    mods = ctx.modules()
    return [
        (f, mods[f], r.kind)
        for f, r in ctx.graph.layers.items()
        if r.out_base >= 0 and r.kind != "scatter" and f in mods  # a scatter has no filters to score
    ]


def _rule(m: nn.Module, kind: str) -> ChannelRule | None:
    return get_channel_rule(m) if kind.startswith("rule:") else None


def _weighted(ctx: ScoreContext) -> list[tuple[str, nn.Module, str]]:
    """Producers with filters to score: built-in ones and rule-handled ones whose rule gives ``filters``."""
    out = []
    for f, m, k in _producers(ctx):
        rule = _rule(m, k)
        if rule is None or rule.filters is not None:
            out.append((f, m, k))
    return out


def _filters(m: nn.Module, kind: str) -> Tensor:
    """Weight as [out channels, everything else]."""
    rule = _rule(m, kind)
    if rule is not None and rule.filters is not None:
        f = rule.filters(m).detach()
        return f.reshape(f.shape[0], -1)
    w = m.weight.detach()
    if kind == "convt":
        g = int(m.groups)
        cin, per_out = w.shape[0], w.shape[1]
        w = w.reshape(g, cin // g, per_out, -1).permute(0, 2, 1, 3).reshape(g * per_out, -1)
        return w
    return w.reshape(w.shape[0], -1)


@CRITERIA.register("l1")
def l1(ctx: ScoreContext) -> LayerScores:
    """L1 norm of each filter ([Li et al. 2017](https://arxiv.org/abs/1608.08710))."""
    return {(f, "out"): _filters(m, k).abs().sum(1) for f, m, k in _weighted(ctx)}


@CRITERIA.register("l2")
def l2(ctx: ScoreContext) -> LayerScores:
    """L2 norm of each filter."""
    return {(f, "out"): _filters(m, k).norm(dim=1) for f, m, k in _weighted(ctx)}


@CRITERIA.register("bn_scale")
def bn_scale(ctx: ScoreContext) -> LayerScores:
    """|gamma| of the BatchNorm/GroupNorm on each channel ([Liu et al. 2017, network slimming](https://arxiv.org/abs/1708.06519)).

    Groups without a normalisation layer fall back to ``l1``."""
    mods = ctx.modules()
    out: LayerScores = {}
    for f, rec in ctx.graph.layers.items():
        m = mods.get(f)
        if rec.kind in ("bn", "gn", "in") and m is not None and getattr(m, "weight", None) is not None:
            out[(f, "in")] = m.weight.detach().abs().flatten()
    return out


@CRITERIA.register("sparsity")
def sparsity(ctx: ScoreContext) -> LayerScores:
    """Minus the filter sparsity of Liu et al. (TCAS-I 2019, PAPERS.md §1.3).

    ``S(n) = #{|w| < M} / (C*H*W)`` over filter ``n``, with ``M`` the mean |w| of the *whole layer*;
    the sparsest filters are pruned first, so importance is ``-S``."""
    res: LayerScores = {}
    for f, m, k in _weighted(ctx):
        w = _filters(m, k).abs()
        res[(f, "out")] = -(w < w.mean()).float().mean(1)
    return res


@CRITERIA.register("random")
def random(ctx: ScoreContext) -> LayerScores:
    """Uniform random scores from ``torch.Generator().manual_seed(seed)`` (a baseline)."""
    gen = torch.Generator().manual_seed(ctx.seed)
    return {(f, "out"): torch.rand(len(ctx.graph.out_roots[f]), generator=gen) for f, _, _ in _producers(ctx)}


def _out_dim(kind: str, t: Tensor) -> int:
    return t.dim() - 1 if kind == "linear" else 1


@CRITERIA.register("taylor")
def taylor(ctx: ScoreContext) -> LayerScores:
    """First-order Taylor ``|mean_{h,w}(a * dL/da)|`` per output channel, averaged over images and
    training batches ([Molchanov et al. 2017](https://arxiv.org/abs/1611.06440)). Needs ``task``
    (``training_batches`` and ``loss``)."""
    if ctx.task is None:
        raise ConfigError("criterion 'taylor' needs a task with training data: pass --task and --data")
    prods = _producers(ctx)
    acc: dict[str, Tensor] = {}
    acts: dict[str, Tensor] = {}
    handles = []

    def hook(fqn: str, kind: str) -> Callable[..., None]:
        def fn(m: nn.Module, i: Any, o: Tensor) -> None:
            if isinstance(o, Tensor) and o.requires_grad:
                o.retain_grad()
                acts[fqn] = o
        return fn

    for f, m, k in prods:
        handles.append(m.register_forward_hook(hook(f, k)))
    was = ctx.model.training
    ctx.model.eval()
    try:
        for batch in ctx.task.training_batches(ctx.calib):
            acts.clear()
            ctx.model.zero_grad(set_to_none=True)
            with torch.enable_grad():
                ctx.task.loss(ctx.model, batch).backward()
            for f, _m, k in prods:
                a = acts.get(f)
                if a is None or a.grad is None:
                    continue
                d = _out_dim(k, a)
                prod = (a * a.grad).detach().movedim(d, -1)
                per = prod.reshape(prod.shape[0], -1, prod.shape[-1]).mean(1).abs().mean(0)
                acc[f] = acc.get(f, torch.zeros_like(per)) + per
    finally:
        for h in handles:
            h.remove()
        ctx.model.zero_grad(set_to_none=True)
        ctx.model.train(was)
    return {(f, "out"): v for f, v in acc.items()}


@CRITERIA.register("chip")
def chip(ctx: ScoreContext) -> LayerScores:
    """CHIP channel independence ([Sui et al. 2021](https://arxiv.org/abs/2110.13981)) of the
    post-activation features: the input of the first consuming layer of each group (for a conv-BN-ReLU
    chain that is the ReLU output; in a residual stream it is the post-add activation, as in CHIP)."""
    from slimcnn.prune.chip import chip_scores

    batches = ctx.batches or (ctx.task.calibration_batches(ctx.calib) if ctx.task is not None else [])
    if not batches:
        if ctx.example_input is None:
            raise ConfigError("criterion 'chip' needs calibration data: pass --task/--data (or batches)")
        batches = [ctx.example_input]
    # one consumer per group: the first layer (forward order) reading the group's channels
    taps: dict[int, str] = {}
    for f, rec in ctx.graph.layers.items():
        ins = ctx.graph.in_roots[f]
        valid = [r for r in ins if r >= 0]
        if rec.out_base >= 0 and valid and rec.kind in ("conv", "convt"):
            taps.setdefault(ctx.graph.atom[valid[0]][0], f)
    mods = ctx.modules()
    feats: dict[str, list[Tensor]] = {f: [] for f in taps.values()}
    handles = [
        mods[f].register_forward_pre_hook(lambda m, a, f=f: feats[f].append(a[0].detach().float()))
        for f in feats
    ]
    was = ctx.model.training
    ctx.model.eval()
    try:
        with torch.no_grad():
            for x in batches:
                ctx.model(*x) if isinstance(x, tuple) else ctx.model(x)
    finally:
        for h in handles:
            h.remove()
        ctx.model.train(was)
    out: LayerScores = {}
    for f, fs in feats.items():
        x = torch.cat([t for t in fs if t.dim() == 4], 0) if fs else None
        if x is not None and x.numel():
            out[(f, "in")] = chip_scores(x).float()
    return out


def group_scores(
    graph: ChannelGraph,
    layer_scores: LayerScores,
    *,
    reduce: Literal["sum", "mean", "max"] = "sum",
    fallback: LayerScores | None = None,
) -> dict[int, Tensor]:
    """Score each group channel by reducing its members' channel scores.

    A layer channel that maps to group channel ``i`` adds its score to ``i`` (several layer channels
    in one group channel, e.g. a pixel-shuffle block, add up). Groups that no criterion score reaches
    use ``fallback`` (typically ``l1``), else zeros.

    When a scored member covers only part of the group (a concat of several producers, e.g. SqueezeNet's
    expand1x1 ‖ expand3x3), every member's scores are divided by their mean magnitude first: the norms
    of a 1×1 and a 3×3 filter are not on one scale, and ranking them raw would empty the 1×1 branch.
    """
    res: dict[int, Tensor] = {}
    for g in graph.groups():
        if not g.prunable:
            continue
        for source in (layer_scores, fallback or {}):
            scored = [(mem.index, s) for mem in g.members
                      if (s := source.get((mem.layer, mem.role))) is not None and s.numel() == len(mem.index)]
            if len(scored) == 1 and scored[0][0] == tuple(range(g.size)):  # one member, channel c = group channel c
                res[g.id] = scored[0][1].detach().to(torch.float64, copy=True).cpu()  # = any reduction of one score
                break
            if scored:
                res[g.id] = _reduce_members(g.size, [(torch.tensor(i, dtype=torch.long), s.detach().double().cpu())
                                                     for i, s in scored], reduce)
                break
        else:
            res[g.id] = torch.zeros(g.size, dtype=torch.float64)
    return res


def _reduce_members(size: int, scored: list[tuple[Tensor, Tensor]], reduce: str) -> Tensor:
    """Group channel scores from ``(member index, member channel scores)`` pairs (see :func:`group_scores`)."""
    picks = [(idx[idx >= 0], s[idx >= 0]) for idx, s in scored]
    partial = any(torch.zeros(size, dtype=torch.bool).index_fill_(0, i, True).sum() < size for i, _ in picks)
    if partial:  # put the members on one scale
        picks = [(i, v / v.abs().mean() if v.numel() and float(v.abs().mean()) > 0 else v) for i, v in picks]
    if reduce == "max":
        mx = torch.full((size,), -float("inf"), dtype=torch.float64)
        for i, v in picks:
            mx = mx.scatter_reduce(0, i, v, "amax")
        return torch.where(torch.isfinite(mx), mx, 0.0)
    vals = torch.zeros(size, dtype=torch.float64)
    for i, v in picks:
        vals.index_add_(0, i, v)
    if reduce == "mean":
        cnt = torch.zeros(size, dtype=torch.float64)
        for i, v in picks:
            cnt.index_add_(0, i, torch.ones_like(v))
        return vals / cnt.clamp(min=1)
    return vals


def score_groups(ctx: ScoreContext, criterion: str, *, reduce: Literal["sum", "mean", "max"] = "sum") -> dict[int, Tensor]:
    """Run ``criterion`` (a ``CRITERIA`` name) and return group channel scores."""
    fn = CRITERIA.get(criterion)
    scores = fn(ctx)
    fallback = l1(ctx) if criterion != "l1" else None
    return group_scores(ctx.graph, scores, reduce=reduce, fallback=fallback)
