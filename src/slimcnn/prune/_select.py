"""How many and which channels to remove: per-group ratio, global ratio, MACs target, keep counts.

Counts are in *group channels* (units removed together). Rules applied everywhere:

* fixed channels (reaching an output, passing an unmappable op, or in an ``exclude``d layer's group) stay;
* keep-counts are rounded **up** to a multiple of ``round_to`` (the group width, e.g. 8 for SIMD);
* no layer axis ever loses all its channels (a channel whose removal would empty a layer is skipped).
"""

from __future__ import annotations

import fnmatch
import logging
import math
from collections.abc import Mapping, Sequence
from typing import Literal

import torch
from torch import Tensor

from slimcnn.errors import BudgetError, ConfigError
from slimcnn.graph import ChannelGraph, ChannelGroup

Removal = dict[int, list[int]]

log = logging.getLogger(__name__)


def _excluded(g: ChannelGroup, exclude: Sequence[str]) -> bool:
    if not exclude:
        return False  # the usual case: skip listing the group's layers
    return any(fnmatch.fnmatch(layer, pat) for layer in g.layers() for pat in exclude)


def validate_amount(*, prune_ratio: float | Mapping[str, float] | None = None, macs: float | None = None,
                    round_to: int = 1) -> None:
    """Raise :class:`ConfigError` for a ratio outside [0, 1), a MACs fraction outside (0, 1] or ``round_to < 1``."""
    if isinstance(prune_ratio, (int, float)) and not 0.0 <= prune_ratio < 1.0:
        raise ConfigError(f"--ratio is the fraction removed and must be in [0, 1), got {prune_ratio}")
    if macs is not None and not 0.0 < macs <= 1.0:
        raise ConfigError(f"--macs must be a fraction of the original in (0, 1], e.g. 0.5x; got {macs}")
    if round_to < 1:
        raise ConfigError(f"--round-to must be >= 1, got {round_to}")


def prunable_groups(graph: ChannelGraph, exclude: Sequence[str] = ()) -> list[ChannelGroup]:
    """The groups a selection may touch: prunable and not matched by an ``exclude`` pattern."""
    return [g for g in graph.groups() if g.prunable and not _excluded(g, exclude)]


def _pick(g: ChannelGroup, scores: Tensor, n_remove: int, allowed: set[int] | None = None,
          already: Sequence[int] = (), round_to: int = 1) -> list[int]:
    """The ``n_remove`` lowest-scoring free channels of ``g`` (within ``allowed``) that leave every member
    layer non-empty, after the channels in ``already``; with ``round_to > 1``, where layers each make or read
    part of them, every part's kept width aligned (:func:`_pick_aligned`)."""
    if n_remove <= 0:
        return []
    if round_to > 1:
        pool = (set(range(g.size)) if allowed is None else set(allowed)) - set(already)
        parts = _split_parts(g, pool)
        if len(parts) > 1 and max(map(len, parts)) > round_to:
            aligned = _pick_aligned(g, parts, scores, n_remove, round_to)
            if not _empties(g, set(aligned) | set(already)):
                return aligned
    fixed = g.fixed_set | set(already)
    vals = scores.tolist()
    order = sorted((i for i in range(g.size) if i not in fixed and (allowed is None or i in allowed)),
                   key=lambda i: (vals[i], i))
    if not _empties(g, set(order[:n_remove]) | set(already)):
        return sorted(order[:n_remove])  # the usual case: the greedy below would skip nothing
    left = []
    per_atom: dict[int, list[tuple[int, int]]] = {}
    for mi, mem in enumerate(g.members):
        counts: dict[int, int] = {}
        for a in mem.index:
            if a >= 0:
                counts[a] = counts.get(a, 0) + 1
        left.append(len(mem.index))
        for a, c in counts.items():
            per_atom.setdefault(a, []).append((mi, c))
    for a in already:
        for mi, c in per_atom.get(a, []):
            left[mi] -= c
    chosen: list[int] = []
    for a in order:
        if len(chosen) >= n_remove:
            break
        hits = per_atom.get(a, [])
        if any(left[mi] - c <= 0 for mi, c in hits):
            continue
        for mi, c in hits:
            left[mi] -= c
        chosen.append(a)
    return sorted(chosen)


def _split_parts(g: ChannelGroup, units: set[int]) -> list[list[int]]:
    """``units`` cut into the parts every member layer takes whole or not at all: one part unless some layers each
    make or read only some of them (split convs such as MixNet's ``conv_pw.0`` / ``.1``, a concatenation's
    producers)."""
    seen_by: dict[int, list[int]] = {u: [] for u in units}
    for mi, mem in enumerate(g.members):
        seen = {i for i in mem.index if i >= 0} & units
        if seen != units:
            for u in seen:
                seen_by[u].append(mi)
    parts: dict[tuple[int, ...], list[int]] = {}
    for u in sorted(units):
        parts.setdefault(tuple(seen_by[u]), []).append(u)
    return list(parts.values())


def _pick_aligned(g: ChannelGroup, parts: list[list[int]], scores: Tensor, n_remove: int, round_to: int) -> list[int]:
    """Remove about ``n_remove`` channels of ``parts`` (:func:`_split_parts`) so that each part keeps a multiple of
    ``round_to`` or all its channels, the most important kept.

    A width off the block costs a whole block on a blocked runtime (ONNX Runtime's NCHWc convs): MixNet's split
    convs kept e.g. 37 of 80 channels and ran slower than the latency table said (``--latency 0.7x``: 0.93x
    measured where it predicted 0.69x). Kept channels are added a block at a time, the highest mean score first,
    until ``n_remove`` are gone or fewer; so up to a block per part more may stay than asked, and a part no wider
    than the block stays whole.
    """
    vals = scores.tolist()
    parts = [sorted(p, key=lambda u: (u not in g.fixed_set, -vals[u], u)) for p in parts]

    def next_width(part: list[int], k: int) -> int:
        return min(len(part), (k // round_to + 1) * round_to)

    kept = []
    for part in parts:  # the narrowest allowed width that holds the part's fixed channels
        k = next_width(part, 0)
        while k < sum(u in g.fixed_set for u in part):
            k = next_width(part, k)
        kept.append(k)
    goal = sum(map(len, parts)) - n_remove
    while sum(kept) < goal:
        grow = [(sum(vals[u] for u in part[k:n]) / (n - k), i, n)
                for i, (part, k) in enumerate(zip(parts, kept, strict=True)) if (n := next_width(part, k)) > k]
        _, i, n = max(grow, key=lambda t: (t[0], -t[1]))
        kept[i] = n
    return sorted(u for part, k in zip(parts, kept, strict=True) for u in part[k:])


def _empties(g: ChannelGroup, removed: set[int]) -> bool:
    """Whether removing the group channels ``removed`` leaves some member layer axis with no channel."""
    return any(all(a >= 0 and a in removed for a in mem.index) for mem in g.members)


def _n_remove(g: ChannelGroup, ratio: float, round_to: int) -> int:
    keep = g.size - int(math.floor(ratio * g.size + 1e-9))
    if round_to > 1 and g.size >= round_to:  # a group of exactly round_to channels stays whole
        keep = min(g.size, int(math.ceil(keep / round_to)) * round_to)
    keep = max(keep, len(g.fixed), 1)
    return g.size - keep


def _ratio_of(g: ChannelGroup, prune_ratio: float | Mapping[str, float]) -> float:
    if isinstance(prune_ratio, (int, float)):
        return float(prune_ratio)
    for mem in g.producers:
        for pat, r in prune_ratio.items():
            if fnmatch.fnmatch(mem.layer, pat):
                return float(r)
    return 0.0


def select_removal(
    graph: ChannelGraph,
    scores: Mapping[int, Tensor],
    prune_ratio: float | Mapping[str, float],
    *,
    scope: Literal["local", "global"] = "local",
    round_to: int = 1,
    exclude: Sequence[str] = (),
) -> Removal:
    """Choose channels to remove.

    Args:
        graph: the traced graph.
        scores: ``{group id: Tensor[group size]}`` (higher = keep).
        prune_ratio: fraction of each group's channels to remove (``local``), of all prunable
            channels ranked together (``global``; scores are divided by their group's mean), or a
            ``{FQN pattern: ratio}`` map matched against each group's producers (per-layer).
        scope: ``local`` or ``global`` (ignored for a per-layer map).
        round_to: keep-counts rounded up to a multiple of this.
        exclude: fnmatch patterns of layer FQNs whose groups are left untouched.

    Returns:
        ``{group id: [group channels to remove]}``.
    """
    validate_amount(prune_ratio=prune_ratio, round_to=round_to)
    groups = [g for g in graph.groups() if g.prunable and g.id in scores and not _excluded(g, exclude)]
    counts: dict[int, int] = {}
    if scope == "global" and isinstance(prune_ratio, (int, float)):
        pool: list[tuple[float, int]] = []
        for g in groups:
            s = scores[g.id].double()
            norm = s / (s.abs().mean() + 1e-12)
            pool += [(float(norm[i]), g.id) for i in range(g.size) if i not in g.fixed_set]
        total = sum(g.size for g in groups)
        pool.sort()
        for _, gid in pool[: int(prune_ratio * total)]:
            counts[gid] = counts.get(gid, 0) + 1
        for g in groups:
            counts[g.id] = _n_remove(g, counts.get(g.id, 0) / g.size, round_to)
    else:
        for g in groups:
            counts[g.id] = _n_remove(g, _ratio_of(g, prune_ratio), round_to)
    out: Removal = {}
    for g in groups:
        picked = _pick(g, scores[g.id], counts.get(g.id, 0), round_to=round_to)
        if picked:
            out[g.id] = picked
    return out


def removal_for_macs(
    graph: ChannelGraph,
    scores: Mapping[int, Tensor],
    macs_ratio: float,
    *,
    scope: Literal["local", "global"] = "local",
    round_to: int = 1,
    exclude: Sequence[str] = (),
    tol: float = 0.005,
    best_effort: bool = False,
) -> tuple[Removal, float]:
    """Bisect the prune ratio until conv/linear MACs are at most ``macs_ratio`` x the original.

    When the bisected ratio lands more than ``tol`` under the target (rounded widths move in steps), groups get
    the channels of the ratio's last step back while the target holds (:func:`_give_back`).

    Returns the removal and the ratio used (the bisected one). When even the largest ratio (0.99) cannot reach
    the target (e.g. most channels are protected) it raises :class:`BudgetError`, or with ``best_effort`` logs
    a warning and returns that largest removal (the closest point).
    """
    validate_amount(macs=macs_ratio, round_to=round_to)
    base = graph.estimate_macs()

    def macs_at(r: float) -> tuple[Removal, float]:
        rem = select_removal(graph, scores, r, scope=scope, round_to=round_to, exclude=exclude)
        return rem, graph.estimate_macs(graph.removed_roots(rem)) / max(base, 1)

    lo, hi = 0.0, 0.99
    best, frac = macs_at(hi)
    if frac > macs_ratio + tol:
        msg = (f"cannot reach {macs_ratio:.3g}x MACs: pruning 99% of every prunable group gives {frac:.3g}x "
               "(the rest is protected: outputs, unmappable ops, excluded layers)")
        if not best_effort:
            raise BudgetError(msg)
        log.warning("%s; keeping that closest point", msg)
        return best, hi
    best_r = hi
    for _ in range(20):
        mid = (lo + hi) / 2
        rem, f = macs_at(mid)
        if f <= macs_ratio:
            best, best_r, hi, frac = rem, mid, mid, f
            if macs_ratio - f < tol:
                break
        else:
            lo = mid
    if macs_ratio - frac >= tol:  # the ratio's last step jumped past the target: give some of it back
        best = _give_back(graph, scores, best, select_removal(graph, scores, lo, scope=scope, round_to=round_to,
                                                              exclude=exclude), base, macs_ratio)
    return best, best_r


def _give_back(graph: ChannelGraph, scores: Mapping[int, Tensor], removal: Removal, short_of: Removal, base: int,
               macs_ratio: float) -> Removal:
    """``removal`` (within ``macs_ratio``) with groups put back, one at a time, to ``short_of``'s removal (the
    next smaller ratio, over the target) while the MACs stay within it; the group whose extra channels score
    highest against its mean goes back first.

    With rounded widths the MACs of a ratio are a staircase: ResNet-56 at ``round_to`` 8 keeps 0.65x MACs up to
    ratio 0.5, where every 16-channel group halves at once, and 0.25x from there; asked for 0.5x it got 0.25x.
    """
    extra: list[tuple[float, int, set[int]]] = []
    for gid, chans in removal.items():
        back = set(chans) - set(short_of.get(gid, ()))
        if back:
            s = scores[gid].double()
            idx = torch.tensor(sorted(back))
            extra.append((float(s[idx].mean() / (s.abs().mean() + 1e-12)), gid, back))
    out = dict(removal)
    for _, gid, back in sorted(extra, key=lambda e: (-e[0], e[1])):
        trial = {**out, gid: sorted(set(out[gid]) - back)}
        if not trial[gid]:
            del trial[gid]
        if graph.estimate_macs(graph.removed_roots(trial)) / max(base, 1) <= macs_ratio:
            out = trial
    return out


def removal_for_keep(
    graph: ChannelGraph,
    scores: Mapping[int, Tensor],
    keep: Mapping[str, int],
    round_to: int = 1,
) -> Removal:
    """Remove channels so that each listed producer layer keeps ``keep[fqn]`` output channels.

    Layers of one coupled group must agree (their group is pruned once); the count is in the
    producer's own channels, so e.g. a pixel-shuffle producer keeps a multiple of r^2. With ``round_to > 1``,
    where layers each make or read only part of a listed layer's channels (split convs, a concatenation) and some
    part is wider than ``round_to``, every part keeps a multiple of it or all of it (:func:`_pick_aligned`): up to
    ``round_to`` channels per part more than asked may stay.
    """
    out: Removal = {}
    want: dict[tuple[int, frozenset[int]], tuple[str, int]] = {}
    decided: dict[int, set[int]] = {}
    for fqn, k in keep.items():
        gid = graph.producer_group(fqn)
        g = graph.group(gid)
        n_layer = len(graph.out_roots[fqn])
        units = frozenset(graph.atom[r][1] for r in graph.out_roots[fqn])
        per = max(1, n_layer // len(units))
        if not 1 <= int(k) <= n_layer:
            raise ConfigError(f"keep count {k} for '{fqn}' must be in [1, {n_layer}]")
        remove = len(units) - int(k) // per
        if (gid, units) in want:
            if want[(gid, units)][1] != remove:
                raise ConfigError(f"'{fqn}' and '{want[(gid, units)][0]}' are coupled (group {gid}) but ask for different widths")
            continue
        want[(gid, units)] = (fqn, remove)
        # layers listed before may make some of these channels too (a residual's full-width producer): what they
        # removed counts, and the channels they decide stay as they left them
        done = units & decided.setdefault(gid, set())
        need = remove - len(units & set(out.get(gid, [])))
        group_scores, allowed = scores.get(gid, torch.zeros(g.size)), set(units - done)
        picked = _pick(g, group_scores, need, allowed, out.get(gid, []), round_to=1 if done else round_to)
        if done and (need < 0 or len(picked) < need):
            raise ConfigError(f"keep count {k} for '{fqn}' conflicts with the coupled layers listed before it (group "
                              f"{gid}), which decide {len(done)} of its {len(units)} channel units: omit it")
        # an aligned pick may leave up to a block per part more than asked; short without alignment is protection
        if len(picked) < need and len(_pick(g, group_scores, need, allowed, out.get(gid, []))) < need:
            raise BudgetError(f"'{fqn}' can drop only {len(picked)} of the {remove} channels asked (protected)")
        decided[gid] |= units
        if picked:
            out[gid] = sorted(set(out.get(gid, [])) | set(picked))
    return out
