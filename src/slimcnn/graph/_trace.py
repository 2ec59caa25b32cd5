"""One real forward pass that labels every tensor element with the channel it carries.

Each output channel of a *producer* (Conv, ConvTranspose, Linear) gets a global integer id. A tensor
carries a compact id tensor (broadcastable to its shape, ``-1`` = data of no prunable channel). Module
hooks handle parameterised layers; a ``TorchFunctionMode`` sees every functional op and Tensor method.
Shape ops are replayed on the id tensors; element-wise ops union the ids they combine (union-find);
consumers union all ids that land in one of their input channels. Ops that cannot be mapped, and every
tensor the model returns, *block* the ids they touch. Along the way the trace notes the first thing that keeps
it from proving the pruned model's shapes (``TraceState.check_reason``; see ``ChannelGraph.check_reason``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

from slimcnn.graph._context import eval_mode
from slimcnn.graph._labels import _out_tensors, _tensors, compact
from slimcnn.graph._layer_rules import rule_of_kind
from slimcnn.graph._leaf import is_builtin, is_leaf, leaf_kind
from slimcnn.graph._state import LayerRecord, TraceState
from slimcnn.graph._watch import note_query, watched_widths

log = logging.getLogger(__name__)
_ATTR = "_slimcnn_ids"


_PLAIN = (bool, int, float, torch.Size, torch.dtype, torch.device)
"""Results of tensor queries (``dim``, ``shape``, ``__bool__``, ...): they never carry channel labels."""


class _Tracer(TorchFunctionMode):
    def __init__(self, model: nn.Module, names: dict[nn.Module, str],
                 zero_mask: Callable[[str, int], bool] | None = None) -> None:
        super().__init__()
        self.model = model
        self.st = TraceState()
        self.token = object()
        self.suspended = 0
        self.names = names
        self.zero_mask = zero_mask
        self._mask: Tensor | None = None
        self._tensor_names: dict[int, str] | None = None
        self._escape: dict[Any, bool] = {}
        self.query_names: dict[Any, str] = {}  # op -> normalized name, for note_query
        self._lists: dict[int, list[tuple[str, str]]] | None = None
        self.inputs: set[int] = set()
        """ids of the model's input tensors: data the trace did not see made, and need not have."""

    def tensor_name(self, t: Tensor) -> str | None:
        """Qualified name of the model parameter/buffer ``t`` is (or is a view of), else None."""
        if self._tensor_names is None:
            self._tensor_names = {id(v): n for n, v in (*self.model.named_parameters(), *self.model.named_buffers())}
        for cand in (t, getattr(t, "_base", None)):
            if cand is not None and id(cand) in self._tensor_names:
                return self._tensor_names[id(cand)]
        return None

    def list_owners(self, obj: list[Any]) -> list[tuple[str, str]]:
        """Every (module FQN, attribute) whose value is the list ``obj`` itself."""
        if self._lists is None:  # once per trace: the lists a forward reads were made before it
            self._lists = {}
            for m, fqn in self.names.items():
                for attr, v in vars(m).items():
                    if type(v) is list:
                        self._lists.setdefault(id(v), []).append((fqn, attr))
        return self._lists.get(id(obj), [])

    # ---- id tensors -------------------------------------------------------------------------
    def ids(self, t: Any) -> Tensor | None:
        if not isinstance(t, Tensor):
            return None
        v = getattr(t, _ATTR, None)
        if v is None or v[0] is not self.token or v[1] is None:
            return None
        ids: Tensor = v[1]
        if ids.dim() != t.dim():
            return None
        if any(a != 1 and a != b for a, b in zip(ids.shape, t.shape, strict=False)):
            return None
        return ids

    def set_ids(self, t: Tensor, ids: Tensor | None) -> None:
        if ids is not None:
            ids = compact(ids)  # before the check below: it then scans a few labels, not a feature map
        if ids is None or not bool((ids >= 0).any()):
            setattr(t, _ATTR, (self.token, None))  # seen made, carries no channel
            return
        setattr(t, _ATTR, (self.token, ids))
        if self.zero_mask is not None:
            m = self.mask_table()[ids]
            if bool(m.any()):
                with torch.no_grad():
                    t.masked_fill_(m.expand(t.shape), 0)

    def pass_ids(self, t: Tensor, ids: Tensor) -> None:
        """Label ``t`` with ``ids`` that need none of :meth:`set_ids`' work: an input's labels as they are, or a
        producer's fresh ones (compact, with a prunable channel). Under a zero mask ``t`` is masked as usual."""
        if self.zero_mask is None:
            setattr(t, _ATTR, (self.token, ids))
        else:
            self.set_ids(t, ids)

    def mask_table(self) -> Tensor:
        n = self.st.uf.n
        if self._mask is None or self._mask.numel() != n + 1:
            assert self.zero_mask is not None
            vals = [self.zero_mask(f, c) for f, c in self.st.owners()] + [False]
            self._mask = torch.tensor(vals, dtype=torch.bool)
        return self._mask

    # ---- whether the pruned model must be run to check its shapes ----------------------------
    def needs_check(self, reason: str) -> None:
        """Record the first reason the trace cannot prove that pruning keeps every shape."""
        if self.st.check_reason is None:
            self.st.check_reason = reason

    def width_used(self, attr: str) -> None:
        """Model code (not a layer's own forward) computed with a layer width, e.g. ``self.conv.out_channels``."""
        if not self.suspended:
            self.needs_check(f"the forward computes with '{attr}', a width pruning changes")

    def seen(self, t: Tensor) -> bool:
        """Whether ``t`` is a model input or came out of an op or layer the trace saw."""
        v = getattr(t, _ATTR, None)
        return (v is not None and v[0] is self.token) or id(t) in self.inputs

    def _unseen_reason(self, t: Tensor) -> str:
        name = self.tensor_name(t)
        if name is not None:
            return f"the forward uses '{name}' outside a layer the trace slices (its shape may change with pruning)"
        return ("the forward uses a tensor the trace did not see made (a tensor kept on a module, TorchScript or a "
                "C++ extension)")

    def block(self, ids: Tensor | None, reason: str) -> None:
        if ids is None:
            return
        # compact labels are mostly a channel vector: a Python set beats four tensor ops on so few
        found = set(ids.flatten().tolist()) if ids.numel() <= 4096 else torch.unique(ids[ids >= 0]).tolist()
        for i in found:
            if i >= 0:
                self.st.blocked.setdefault(int(i), reason)

    def union_pairs(self, a: Tensor, b: Tensor) -> None:
        a, b = torch.broadcast_tensors(a, b)
        both = compact(torch.stack([a, b]), first=1)  # axes constant in both carry no new pair
        a, b = both[0], both[1]
        m = (a >= 0) & (b >= 0) & (a != b)
        if bool(m.any()):
            # one int64 key per pair: a 1-D unique sorts, far faster than unique(dim=0) on big label maps
            n = self.st.uf.n + 1
            keys = torch.unique(a[m] * n + b[m])
            self.st.uf.union_many((keys // n).tolist(), (keys % n).tolist())

    def union_all(self, ids: Tensor) -> int:
        u = torch.unique(ids[ids >= 0]).tolist()
        self.st.uf.union_many(u[:1] * (len(u) - 1), u[1:])
        return int(u[0]) if u else -1

    # ---- per-channel view of an input ------------------------------------------------------
    def channel_reps(self, x: Tensor, dim: int, where: str) -> list[int]:
        """One id per channel along ``dim``; unions ids sharing a channel, blocks partly-fixed channels."""
        ids = self.ids(x)
        c = x.shape[dim]
        if ids is None:
            return [-1] * c
        if ids.numel() == c and ids.shape[dim] == c:  # a channel vector (the usual case): one label per channel
            return ids.reshape(c).tolist()
        # per-channel rows of the compact labels (broadcast axes stay size 1: same constancy, far fewer elements)
        full = ids.expand([c if d == dim else s for d, s in enumerate(ids.shape)]).movedim(dim, 0).reshape(c, -1)
        first = full[:, :1]
        const = (full == first).all(1)
        reps = first[:, 0].tolist()
        for ch in (~const).nonzero().flatten().tolist():
            row = full[ch]
            if bool((row < 0).any()):
                self.block(row, f"channel {ch} of the input of {where} mixes prunable and fixed data")
            reps[ch] = self.union_all(row)
        return reps

    # ---- leaf modules -------------------------------------------------------------------------
    def pre_hook(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        self.suspended += 1

    def post_hook(self, module: nn.Module, args: tuple[Any, ...], out: Any) -> Any:
        try:  # the label bookkeeping below is no model op: torch functions bypass the tracer (and its cost)
            with torch._C.DisableTorchFunction():
                return self._leaf(module, args, out)
        finally:
            self.suspended -= 1

    def _leaf(self, module: nn.Module, args: tuple[Any, ...], out: Any) -> None:
        fqn = self.names.get(module)
        x = args[0] if args else None
        if fqn is None or not isinstance(x, Tensor) or not isinstance(out, Tensor):
            self.needs_check(f"{type(module).__name__} is called outside the model's module tree or not on one tensor")
            for t in tree_flatten((args, out))[0]:
                self.block(self.ids(t), f"{type(module).__name__} called outside the model's module tree")
            return None
        if not self.seen(x):
            self.needs_check(f"'{fqn}' reads data the trace did not see made (TorchScript, a C++ extension, a tensor "
                             "kept on a module)")
        kind = leaf_kind(module)
        if kind.startswith("rule:"):
            self.needs_check(f"'{fqn}' is a custom layer type (its channel rule is user code)")
        elif kind != "scatter" and not is_builtin(module):  # a ChannelScatter subclass routes by its own contract
            self.needs_check(f"'{fqn}' is a {type(module).__name__}, a subclass of a built-in layer (its own forward "
                             "may use more than the tensors pruning slices)")
        rule = rule_of_kind(kind)
        rec = self.st.layers.get(fqn)
        if rec is None:
            groups = (rule.groups(module) if rule.groups else 1) if rule else int(getattr(module, "groups", 1))
            rec = self.st.layers[fqn] = LayerRecord(fqn, kind, groups=int(groups))
        rec.calls += 1
        ch_dim = x.dim() - 1 if kind == "linear" else 1
        if rule is not None:
            ch_dim = rule.channel_dim % max(x.dim(), 1)
        reps = self.channel_reps(x, ch_dim, f"{type(module).__name__} '{fqn}'") if x.dim() > ch_dim else []
        self._merge_in(rec, reps, fqn)
        if kind in ("conv", "convt", "linear", "scatter") or (rule is not None and rule.couples == "producer"):
            return self._producer(module, rec, x, out, fqn)
        if rule is not None:
            return self._channelwise(rec, reps, ch_dim, x, out, fqn)
        if kind == "gn":
            self._tie_groups(rec, int(module.num_groups), None, fqn)  # type: ignore[arg-type]
        ids = self.ids(x)
        if ids is None:
            self.set_ids(out, None)
        else:
            self.pass_ids(out, ids)
        return None

    def _channelwise(self, rec: LayerRecord, reps: list[int], ch_dim: int, x: Tensor, out: Tensor, fqn: str) -> None:
        """A rule-declared channel-wise layer: output channel ``c`` carries input channel ``c``."""
        if out.dim() != x.dim() or out.shape[ch_dim] != x.shape[ch_dim]:
            ids = self.ids(x)
            self.block(ids, f"'{fqn}' is declared channel-wise but changes the channel count "
                            f"{x.shape[ch_dim]} -> {out.shape[ch_dim] if out.dim() > ch_dim else None}")
            self.set_ids(out, None)
            return None
        shape = [1] * out.dim()
        shape[ch_dim] = len(reps)
        self.set_ids(out, torch.tensor(reps, dtype=torch.long).view(shape))
        return None

    def _merge_in(self, rec: LayerRecord, reps: list[int], fqn: str) -> None:
        if not rec.in_rep:
            rec.in_rep = list(reps)
            return
        for c, (old, new) in enumerate(zip(rec.in_rep, reps, strict=False)):
            if old >= 0 and new >= 0:
                self.st.uf.union(old, new)
            elif old >= 0 or new >= 0:
                i = max(old, new)
                self.st.blocked.setdefault(i, f"'{fqn}' input channel {c} is prunable in one call but not another")
                rec.in_rep[c] = i

    def _producer(self, module: nn.Module, rec: LayerRecord, x: Tensor, out: Tensor, fqn: str) -> None:
        rule = rule_of_kind(rec.kind)
        o_dim = out.dim() - 1 if rec.kind == "linear" else 1
        if rule is not None:
            o_dim = rule.channel_dim % out.dim()
        n_out = out.shape[o_dim]
        if rec.out_base < 0:
            rec.out_base = self.st.uf.add(n_out)
            rec.n_out = n_out
        shape = [1] * out.dim()
        shape[o_dim] = n_out
        ids = torch.arange(rec.out_base, rec.out_base + n_out).view(shape)
        w = getattr(module, "weight", None)
        k = math.prod(w.shape[2:]) if isinstance(w, Tensor) and w.dim() > 2 else 1  # kernel elements
        spatial = out.numel() // max(n_out, 1)
        if rec.kind != "scatter":  # a scatter only copies
            rec.macs_per_pair += spatial * k
        if rec.kind == "linear" or (rule is not None and o_dim == out.dim() - 1):
            xi = self.ids(x)
            if xi is not None:
                from slimcnn.graph._rules import varying_dims

                if any(d != xi.dim() - 1 for d in varying_dims(xi)):
                    self.block(xi, f"{type(module).__name__} '{fqn}' sees channels along a non-feature axis")
        if rec.groups > 1:
            self._tie_groups(rec, rec.groups, ids, fqn)
        self.pass_ids(out, ids)
        return None

    def _tie_groups(self, rec: LayerRecord, groups: int, out_ids: Tensor | None, fqn: str) -> None:
        """Grouped conv / GroupNorm: the channels of one group go (or stay) together."""
        n_in = len(rec.in_rep)
        if groups <= 1 or n_in % groups:
            return
        members = np.asarray(rec.in_rep, dtype=np.int64).reshape(groups, n_in // groups)
        if out_ids is not None:
            per_out = rec.n_out // groups
            outs = np.arange(rec.out_base, rec.out_base + groups * per_out, dtype=np.int64)
            members = np.concatenate([members, outs.reshape(groups, per_out)], axis=1)
        valid = members >= 0
        whole = valid.all(1)
        if members.shape[1] > 1:  # vectorised: a depthwise conv has one group per channel
            tied = members[whole]
            self.st.uf.union_many(np.repeat(tied[:, 0], tied.shape[1] - 1).tolist(), tied[:, 1:].ravel().tolist())
        for g in np.flatnonzero(valid.any(1) & ~whole).tolist():
            row = members[g][valid[g]].tolist()
            for m in row:
                self.st.blocked.setdefault(m, f"group {g} of '{fqn}' also holds fixed channels")
            self.st.uf.union_many(row[:1] * (len(row) - 1), row[1:])

    # ---- functional ops ------------------------------------------------------------------------
    def _escapes(self, func: Any) -> bool:
        """Whether ``func`` moves data out of torch (``tolist`` of a 0-d tensor returns a plain number)."""
        hit = self._escape.get(func)
        if hit is None:
            from slimcnn.graph._ops import ESCAPE, normalize_name

            hit = self._escape[func] = normalize_name(func) in ESCAPE
        return hit

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if self.suspended:
            return out
        if isinstance(out, _PLAIN) and not self._escapes(func):
            if self.st.check_reason is None:
                note_query(self, func, args, kwargs)
            return out  # shape/dtype queries and the like: nothing to label, nothing escapes
        tensors = _tensors(args, kwargs)
        labeled = [t for t in tensors if self.ids(t) is not None]
        if self.st.check_reason is None:
            unseen = [t for t in tensors if not self.seen(t)]
            if unseen:
                self.needs_check(self._unseen_reason(unseen[0]))
            elif self._escapes(func) and any(id(t) not in self.inputs for t in tensors):
                self.needs_check("the forward moves a computed tensor out of torch (pruning changes its values)")
        if labeled:
            from slimcnn.graph._rules import handle_op

            self.suspended += 1
            try:
                handle_op(self, func, args, kwargs, out, labeled)
            finally:
                self.suspended -= 1
        for t in _out_tensors(out):  # made by an op the trace saw, labeled or not
            if not self.seen(t):
                setattr(t, _ATTR, (self.token, None))
        return out


def run_trace(
    model: nn.Module,
    example_input: Any,
    *,
    zero_mask: Callable[[str, int], bool] | None = None,
) -> tuple[TraceState, Any]:
    """Run ``model`` once on ``example_input`` under the tracer; returns the state and the output.

    ``example_input``: a Tensor (called as ``model(x)``), a tuple (``model(*x)``) or anything else
    (``model(x)``, e.g. a list of images for torchvision detectors). With ``zero_mask(fqn, channel)``
    every tensor element that carries a masked producer channel is set to zero (the reference of the
    equivalence tests).
    """
    named = list(model.named_modules())  # one walk of the module tree serves names, hooks and the mode check
    modules = [m for _, m in named]
    tracer = _Tracer(model, {m: n for n, m in named}, zero_mask)
    tracer.inputs = {id(t) for t in tree_flatten(example_input)[0] if isinstance(t, Tensor)}
    if getattr(nn.modules.module, "_global_forward_hooks", None) or getattr(
            nn.modules.module, "_global_forward_pre_hooks", None):
        tracer.needs_check("global module forward hooks are registered (the trace does not see inside a layer)")
    handles = []
    leaves = [(name, m) for name, m in named if is_leaf(m)]
    for name, m in leaves:
        if m._forward_hooks or m._forward_pre_hooks:
            tracer.needs_check(f"'{name}' has forward hooks (the trace does not see inside a layer)")
        handles.append(m.register_forward_pre_hook(tracer.pre_hook))
        handles.append(m.register_forward_hook(tracer.post_hook))
    try:
        with eval_mode(model, modules), torch.no_grad(), watched_widths(leaves, tracer.width_used), tracer:
            out = model(*example_input) if isinstance(example_input, tuple) else model(example_input)
        for t in tree_flatten(out)[0]:  # after the tracer's mode: the bookkeeping is no model op
            if isinstance(t, Tensor) and not tracer.seen(t):
                tracer.needs_check("the model returns a tensor the trace did not see made")
            tracer.block(tracer.ids(t), "reaches a model output")
    finally:
        for h in handles:
            h.remove()
    return tracer.st, out
