"""What each functional op / Tensor method does to channel labels (see :mod:`slimcnn.graph._ops`)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from slimcnn.graph import _ops as O
from slimcnn.graph._labels import _out_tensors, _tensors, compact, constant_along
from slimcnn.graph._widths import record_split

if TYPE_CHECKING:
    from slimcnn.graph._trace import _Tracer


def _map_tensors(fn: Any, obj: Any) -> Any:
    """``obj`` with ``fn`` applied to every Tensor inside its lists, tuples and dicts (an op's arguments are
    shallow: this costs a few microseconds where pytree's ``tree_map`` costs tens)."""
    if isinstance(obj, Tensor):
        return fn(obj)
    if isinstance(obj, (list, tuple)):
        mapped = [_map_tensors(fn, o) for o in obj]
        return type(obj)(*mapped) if hasattr(obj, "_fields") else type(obj)(mapped)  # namedtuple or plain
    if isinstance(obj, dict):
        return {k: _map_tensors(fn, v) for k, v in obj.items()}
    return obj


def varying_dims(ids: Tensor) -> list[int]:
    """Axes along which the labels change (the axes that carry channels)."""
    return [d for d in range(ids.dim()) if ids.shape[d] > 1 and not constant_along(ids, d)]


def _block_all(tr: _Tracer, labeled: list[Tensor], out: Any, reason: str) -> None:
    for t in labeled:
        tr.block(tr.ids(t), reason)
    for t in _out_tensors(out):
        tr.set_ids(t, None)


def _arg(args: Any, kwargs: dict[str, Any], pos: int, key: str, default: Any) -> Any:
    if key in kwargs:
        return kwargs[key]
    return args[pos] if len(args) > pos else default


_NAMES: dict[Any, str] = {}
"""``normalize_name`` per op function (a few string operations per call otherwise)."""


def handle_op(tr: _Tracer, func: Any, args: Any, kwargs: dict[str, Any], out: Any, labeled: list[Tensor]) -> None:
    """Label ``out`` of one op and record the couplings/blocks it implies."""
    name = _NAMES.get(func)
    if name is None:
        name = _NAMES[func] = O.normalize_name(func)
    if tr.st.check_reason is None and name not in O.SHAPE_EXACT and not (name in O.CONCAT and _joins_channels(
            tr, args, kwargs)):
        tr.needs_check(f"'{name}' on channel data: its result shape may follow Python values (sizes, positions)")
    outs = _out_tensors(out)
    if name == "setitem":
        return _setitem(tr, args, name)
    if not outs:
        if name in O.ESCAPE:
            _block_all(tr, labeled, out, f"op '{name}' moves channel data out of torch")
        return None
    if name in O.CONSTANT:
        return None
    if any(t.numel() == 0 for t in outs):
        # labels of an empty result cannot be followed further (e.g. no detection above threshold)
        return _block_all(tr, labeled, out, f"'{name}' produced an empty tensor (data-dependent); its channels are kept")
    if name in O.IDENTITY and len(outs) == 1 and outs[0].shape == labeled[0].shape:
        ids = tr.ids(labeled[0])
        assert ids is not None
        tr.pass_ids(outs[0], ids)
        return None
    if name in O.ELEMENTWISE and len(outs) == 1:
        return _elementwise(tr, name, args, kwargs, outs[0], labeled)
    if name in O.SHAPE:
        return _shape(tr, name, func, args, kwargs, out, labeled)
    if name in O.SPATIAL and len(labeled) == 1:
        return _spatial(tr, name, labeled[0], outs)
    if name in O.REDUCE and len(labeled) == 1 and args and args[0] is labeled[0]:
        return _reduce(tr, name, args, kwargs, outs, labeled[0])
    if name in O.ALONG_DIM and len(labeled) == 1:
        pos, key, default = O.ALONG_DIM[name]
        return _along(tr, name, _arg(args, kwargs, pos, key, default), labeled[0], outs)
    if name == "layer_norm" and args and args[0] is labeled[0]:
        k = len(tuple(_arg(args, kwargs, 1, "normalized_shape", ())))
        return _along(tr, name, list(range(-k, 0)), labeled[0], outs, "normalises across channels")
    return _block_all(tr, labeled, out, f"op '{name}' is not supported by the channel tracer "
                                            "(inside a custom layer? register its type with "
                                            "slimcnn.graph.register_channel_rule)")


def _joins_channels(tr: _Tracer, args: Any, kwargs: dict[str, Any]) -> bool:
    """Whether a concat joins tensors whose channels vary along the joined axis only: every other axis then keeps
    its size under pruning (it is not tied across the inputs)."""
    dim = _arg(args, kwargs, 1, "dim", 0)
    if not isinstance(dim, int):
        return False
    for t in _arg(args, kwargs, 0, "tensors", ()):
        ids = tr.ids(t)
        if ids is not None and any(d != dim % t.dim() for d in varying_dims(ids)):
            return False
    return True


def _elementwise(tr: _Tracer, name: str, args: Any, kwargs: Any, out: Tensor, labeled: list[Tensor]) -> None:
    operands = _tensors(args, kwargs)
    id_list = [tr.ids(t) for t in labeled]
    if not all(_bcast_ok(t.shape, out.shape) for t in operands):
        return _block_all(tr, labeled, out, f"op '{name}' does not broadcast like an element-wise op")
    res: Tensor | None = None
    for ids in id_list:
        assert ids is not None
        if res is None:
            res = ids
            continue
        tr.union_pairs(res, ids)
        a, b = torch.broadcast_tensors(res, ids)
        a_fixed, b_fixed = a < 0, b < 0
        if not bool((a_fixed | b_fixed).any()):  # both fully labeled (the usual add/mul): nothing to block
            res = a
            continue
        tr.block(a[b_fixed & ~a_fixed], f"'{name}' combines these channels with fixed data")
        tr.block(b[a_fixed & ~b_fixed], f"'{name}' combines these channels with fixed data")
        res = torch.where(a_fixed, b, a)
    assert res is not None
    nd = out.dim()
    for t in operands:
        if any(t is lab for lab in labeled) or t.numel() <= 1:
            continue
        # an unlabeled operand that is not broadcast along a channel axis holds per-channel fixed data
        shp = (1,) * (nd - t.dim()) + tuple(t.shape)
        rs = (1,) * (nd - res.dim()) + tuple(res.shape)
        if any(s > 1 and r > 1 for s, r in zip(shp, rs, strict=False)):
            owner = tr.tensor_name(t)
            if owner is None:
                tr.block(res, f"'{name}' combines these channels with a fixed tensor of shape {tuple(t.shape)}")
            else:
                tr.block(res, f"'{name}' combines these channels with '{owner}' (shape {tuple(t.shape)}), a "
                              f"per-channel tensor slimcnn cannot slice: if it belongs to a custom layer, register "
                              f"the layer's type with slimcnn.graph.register_channel_rule")
    while res.dim() > nd and res.shape[0] == 1:
        res = res[0]
    if res.dim() < nd:
        res = res.view((1,) * (nd - res.dim()) + tuple(res.shape))
    if len(id_list) == 1 and res is id_list[0]:
        tr.pass_ids(out, res)  # one labeled operand (an activation, a scale by a constant): its labels as they are
    else:
        tr.set_ids(out, res)
    return None


def _bcast_ok(a: Any, b: Any) -> bool:
    if len(a) > len(b):
        return False
    return all(x == 1 or x == y for x, y in zip(reversed(a), reversed(b), strict=False))


def _replace(tr: _Tracer, t: Any) -> Any:
    if not isinstance(t, Tensor) or not (t.is_floating_point() or t.is_complex()):
        return t  # index / mask tensors stay as they are
    ids = tr.ids(t)
    if ids is not None:
        return ids.expand(t.shape)
    return torch.tensor(-1).expand(t.shape)  # a view: nothing materialised until an op needs it


def _shape(tr: _Tracer, name: str, func: Any, args: Any, kwargs: Any, out: Any, labeled: list[Tensor]) -> None:
    if name == "pixel_shuffle" and _pixel_shuffle(tr, args, kwargs, out, labeled[0]):
        return None
    rargs = _map_tensors(lambda t: _replace(tr, t), args)
    rkwargs = _map_tensors(lambda t: _replace(tr, t), kwargs)
    if name == "pad":
        mode = _arg(args, kwargs, 2, "mode", "constant")
        if mode != "constant":
            return _spatial_pad(tr, args, kwargs, out, labeled[0])
        rargs = tuple(rargs[:2])
        rkwargs = {"mode": "constant", "value": -1}
    try:
        rout = func(*rargs, **rkwargs)
    except (RuntimeError, IndexError, TypeError):
        rargs = _map_tensors(Tensor.contiguous, rargs)
        try:
            rout = func(*rargs, **rkwargs)
        except (RuntimeError, IndexError, TypeError) as e:
            return _block_all(tr, labeled, out, f"op '{name}' could not be replayed on channel labels ({e})")
    outs, routs = _out_tensors(out), _out_tensors(rout)
    if len(outs) != len(routs) or any(a.shape != b.shape for a, b in zip(outs, routs, strict=False)):
        return _block_all(tr, labeled, out, f"op '{name}' changed shape differently on channel labels")
    src = tr.ids(labeled[0])
    assert src is not None
    src_t = labeled[0]
    vary = varying_dims(src)
    if name in O.FIXED_INDEX or name in ("getitem", "narrow", "select"):
        dims = _indexed_dims(name, args, kwargs, src_t.shape)
        split = name in ("split", "split_with_sizes") and dims is not None
        if (dims is None or set(dims) & set(vary)) and not (split and record_split(tr, args, kwargs, src_t, dims[0])):
            return _block_all(tr, labeled, out, f"'{name}' picks fixed positions along a channel axis")
    if name == "chunk":
        dim = _arg(args, kwargs, 2, "dim", 0) % src_t.dim()
        if dim in vary:
            sizes = {r.shape[dim] for r in routs}
            if len(sizes) != 1:
                return _block_all(tr, labeled, out, "'chunk' into unequal parts along a channel axis")
            for r in routs[1:]:
                tr.union_pairs(routs[0], r)
    if name in O.RESHAPE and len(routs) == 1:
        _tie_reshape(tr, src.expand(src_t.shape), routs[0], vary)
    if name == "pixel_shuffle":
        r = compact(routs[0])
        r = r.expand(*r.shape[:-3], routs[0].shape[-3], *r.shape[-2:])
        tr_ = r.movedim(-3, 0).reshape(r.shape[-3], -1)
        for row in tr_:
            tr.union_all(row)
    if name in ("channel_shuffle", "native_channel_shuffle"):
        g = int(_arg(args, kwargs, 1, "groups", 1))
        x = src.expand(*src_t.shape[:2], *src.shape[2:])
        c = x.shape[1]
        if c % g == 0:
            v = x.reshape(x.shape[0], g, c // g, -1)
            for i in range(1, g):
                tr.union_pairs(v[:, 0], v[:, i])
    for o, r in zip(outs, routs, strict=False):
        tr.set_ids(o, r)
    return None


def _pixel_shuffle(tr: _Tracer, args: Any, kwargs: Any, out: Any, src_t: Tensor) -> bool:
    """``pixel_shuffle`` of one label per channel (the usual case), without replaying it on a label map:
    output channel ``c`` is made of input channels ``c*r^2 ... c*r^2 + r^2 - 1``, which are tied. Returns
    False (replay it) when the labels vary along other axes or include fixed data."""
    ids = tr.ids(src_t)
    r = int(_arg(args, kwargs, 1, "upscale_factor", 1))
    if (ids is None or not isinstance(out, Tensor) or src_t.dim() < 3 or r < 1 or ids.numel() != src_t.shape[-3]
            or src_t.shape[-3] % (r * r) or not bool((ids >= 0).all())):
        return False
    labels = ids.reshape(-1, r * r)
    rows = labels.tolist()
    tr.st.uf.union_many([row[0] for row in rows for _ in row[1:]], [v for row in rows for v in row[1:]])
    tr.set_ids(out, labels[:, 0].reshape(*[1] * (out.dim() - 3), -1, 1, 1))
    return True


def _indexed_dims(name: str, args: Any, kwargs: Any, shape: torch.Size) -> list[int] | None:
    """Axes an indexing op restricts to fixed positions (None = could not tell: treat as all).

    A slice from the start to at least the axis's length (``x[:, :n]`` with ``n`` >= the width, GhostNet's
    ``out[:, :self.out_chs]``) restricts nothing: it takes every channel at any narrower width too."""
    ndim = len(shape)
    if name in ("narrow", "select", "index_select", "split", "tensor_split", "unbind", "split_with_sizes"):
        default = 0
        pos = {"narrow": 1, "select": 1, "index_select": 1, "split": 2, "tensor_split": 2, "unbind": 1}.get(name, 2)
        return [int(_arg(args, kwargs, pos, "dim", default)) % ndim]
    if name == "roll":
        dims = _arg(args, kwargs, 2, "dims", None)
        if dims is None:
            return None
        return [int(d) % ndim for d in (dims if isinstance(dims, (list, tuple)) else [dims])]
    idx = args[1] if len(args) > 1 else None
    items = list(idx) if isinstance(idx, tuple) else [idx]
    dims: list[int] = []
    d = 0
    n_real = sum(1 for i in items if i is not None and i is not Ellipsis and not isinstance(i, bool))
    for it in items:
        if it is Ellipsis:
            d += ndim - n_real
        elif it is None:
            continue
        elif isinstance(it, slice):
            if not _whole(it, shape[d] if d < ndim else 0):
                dims.append(d)
            d += 1
        else:
            dims.append(d)
            d += 1
    return dims


def _whole(it: slice, length: int) -> bool:
    """Whether slice ``it`` takes every position of an axis of ``length`` and of any shorter one."""
    start_ok = it.start is None or (type(it.start) is int and it.start == 0)
    step_ok = it.step is None or (type(it.step) is int and it.step == 1)
    return start_ok and step_ok and (it.stop is None or (type(it.stop) is int and it.stop >= length))


def _tie_reshape(tr: _Tracer, src: Tensor, res: Tensor, vary: list[int]) -> None:
    """A channel axis split into (outer, ..., inner) axes: channels at one inner position across all outer
    positions are tied, so pruning keeps the outer sizes (groups/heads) and shrinks the inner one.

    Exception: a trailing feature axis split into (C, spatial...) with C landing on axis 1 (a Linear's
    outputs reshaped into conv channels, ``fc(z).view(n, -1, H, W)``): the H*W features of one channel
    are tied instead, so C shrinks and the spatial sizes stay."""
    a, b = list(src.shape), list(res.shape)
    res = compact(res)  # same label sets per slice, a fraction of the elements
    i = j = 0
    while i < len(a) and j < len(b):
        gi, gj, pa, pb = [i], [j], a[i], b[j]
        i, j = i + 1, j + 1
        while pa != pb and i <= len(a) and j <= len(b):
            if pa < pb and i < len(a):
                gi.append(i)
                pa *= a[i]
                i += 1
            elif j < len(b):
                gj.append(j)
                pb *= b[j]
                j += 1
            else:
                break
        real_j = [x for x in gj if b[x] > 1]
        if len(gi) == 1 and gi[0] in vary and len(real_j) >= 2 and gi[0] == len(a) - 1 and real_j[0] == 1:
            # features -> (C, H, W) with C on axis 1 (``fc(z).view(n, -1, 4, 4)`` before a conv): one
            # channel of the result is a block of H*W consecutive features; blocks prune as units
            for row in res.expand(*res.shape[:1], b[1], *res.shape[2:]).movedim(1, 0).reshape(b[1], -1):
                tr.union_all(row)
        elif len(gi) == 1 and gi[0] in vary and len(real_j) >= 2:
            outer = real_j[:-1]
            n_out = math.prod(b[x] for x in outer)
            full = res.expand([b[x] if x in outer else res.shape[x] for x in range(res.dim())])
            v = full.permute(*[x for x in range(res.dim()) if x not in outer], *outer)
            v = v.reshape(-1, n_out)
            for k in range(1, n_out):
                tr.union_pairs(v[:, 0], v[:, k])
        elif len(gi) >= 2 and len(real_j) >= 2 and set(gi) & set(vary):
            tr.block(src, "reshape regroups a channel axis with other axes")


def _spatial(tr: _Tracer, name: str, x: Tensor, outs: list[Tensor]) -> None:
    ids = tr.ids(x)
    assert ids is not None
    ok = x.dim() >= 2 and all(o.dim() == x.dim() and o.shape[:2] == x.shape[:2] for o in outs)
    if not ok or any(d != 1 for d in varying_dims(ids)):
        return _block_all(tr, [x], outs, f"'{name}' mixes channels spatially (or changes the channel axis)")
    comp = ids.narrow(0, 0, 1)
    for d in range(2, ids.dim()):
        comp = comp.narrow(d, 0, 1)
    tr.set_ids(outs[0], comp)  # further outputs (pool indices) carry no channels
    return None


def _spatial_pad(tr: _Tracer, args: Any, kwargs: Any, out: Any, x: Tensor) -> None:
    pad = list(_arg(args, kwargs, 1, "pad", ()))
    ids = tr.ids(x)
    assert ids is not None
    touched = {x.dim() - 1 - k // 2 for k, p in enumerate(pad) if p}
    if touched & set(varying_dims(ids)):
        return _block_all(tr, [x], out, "non-constant 'pad' along a channel axis")
    tr.set_ids(out, ids)
    return None


def _reduce(tr: _Tracer, name: str, args: Any, kwargs: Any, outs: list[Tensor], x: Tensor) -> None:
    ids = tr.ids(x)
    assert ids is not None
    dim = _arg(args, kwargs, 1, "dim", None)
    if isinstance(dim, Tensor):  # max(a, b) is element-wise
        return _elementwise(tr, name, args, kwargs, outs[0], [t for t in (x, dim) if tr.ids(t) is not None])
    if isinstance(dim, str):
        dim = None
    dims = list(range(x.dim())) if dim is None else [int(d) % x.dim() for d in (dim if isinstance(dim, (list, tuple)) else [dim])]
    if set(dims) & set(varying_dims(ids)) and not _tie_fibers(tr, name, ids, x.shape, dims):
        return _block_all(tr, [x], outs, f"'{name}' reduces across channels")
    keep = bool(_arg(args, kwargs, 2, "keepdim", False))
    comp = ids
    for d in dims:
        comp = comp.narrow(d, 0, 1)
    if not keep:
        for d in sorted(dims, reverse=True):
            comp = comp.squeeze(d) if comp.dim() > d else comp
    o = outs[0]
    if comp.dim() != o.dim():
        return None
    tr.set_ids(o, comp)
    return None


def _along(tr: _Tracer, name: str, dim: Any, x: Tensor, outs: list[Tensor], why: str = "mixes channels") -> None:
    ids = tr.ids(x)
    assert ids is not None
    dims = [int(d) % x.dim() for d in (dim if isinstance(dim, (list, tuple)) else [dim])] if dim is not None else []
    if dim is None or (set(dims) & set(varying_dims(ids)) and not _tie_fibers(tr, name, ids, x.shape, dims)):
        return _block_all(tr, [x], outs, f"'{name}' {why}")
    for o in outs:
        if o.shape == x.shape and o.is_floating_point():
            tr.set_ids(o, ids)
    return None


def _tie_fibers(tr: _Tracer, name: str, ids: Tensor, shape: torch.Size, dims: list[int]) -> bool:
    """An op that mixes values along ``dims`` where the labels vary, while they also vary along another axis: a
    stacked branch axis (selective kernel's ``stack(paths, 1).sum(1)``, split attention's softmax over the radix).
    Each fiber along ``dims`` is tied into one class, so pruning removes or keeps it whole and the op computes
    the others as before. False (tie nothing) when the channels vary along ``dims`` only: that reduces or
    normalises across the channel axis itself."""
    if not set(varying_dims(ids)) - set(dims):
        return False
    full = ids.expand([shape[d] if d in dims else s for d, s in enumerate(ids.shape)])
    fibers = full.movedim(dims, list(range(full.dim() - len(dims), full.dim()))).reshape(-1, math.prod(shape[d] for d in dims))
    for k in range(1, fibers.shape[1]):
        tr.union_pairs(fibers[:, 0], fibers[:, k])
    mixed = (fibers < 0).any(1) & (fibers >= 0).any(1)
    tr.block(fibers[mixed], f"'{name}' combines these channels with fixed data")
    return True


def _setitem(tr: _Tracer, args: Any, name: str) -> None:
    target, idx, value = args[0], args[1], args[2]
    t_ids, v_ids = tr.ids(target), tr.ids(value)
    base = t_ids.expand(target.shape).clone() if t_ids is not None else torch.full(target.shape, -1, dtype=torch.long)
    dims = _indexed_dims("getitem", (target, idx), {}, target.shape)
    chan = set(varying_dims(base)) | ({1} if v_ids is not None else set())
    if dims is None or set(dims) & chan:
        tr.block(t_ids, "'setitem' writes fixed positions along a channel axis")
        tr.block(v_ids, "'setitem' writes fixed positions along a channel axis")
    try:
        base[idx] = v_ids if v_ids is not None else -1
    except (RuntimeError, IndexError):
        tr.block(v_ids, "'setitem' could not be replayed on channel labels")
        return None
    tr.set_ids(target, base)
    return None
