"""How the tracer treats each tensor op, by normalised name.

Ops are grouped by what they do to channels. Shape ops are *replayed* on channel-index tensors, so
their channel maps (concat offsets, shuffles, pixel-shuffle blocks, flatten blocks) come from the op
itself. Anything not listed here is unknown: it stops pruning of every channel it touches, with a
message naming the op.
"""

from __future__ import annotations

ELEMENTWISE: frozenset[str] = frozenset(
    """add sub mul div true_divide truediv floor_divide floordiv rsub radd rmul rtruediv rdiv iadd isub imul
    itruediv idiv neg negative abs relu relu6 leaky_relu elu selu celu gelu silu mish hardswish hardsigmoid
    hardtanh sigmoid tanh softplus softsign tanhshrink threshold exp exp2 expm1 log log2 log10 log1p sqrt rsqrt
    pow rpow ipow square clamp clip clamp_min clamp_max maximum minimum fmax fmin where dropout dropout1d
    dropout2d dropout3d alpha_dropout feature_alpha_dropout erf erfc sign sgn reciprocal round floor ceil trunc
    frac lt le gt ge eq ne logical_and logical_or logical_not logical_xor bitwise_and bitwise_or nan_to_num
    masked_fill sin cos fmod remainder lerp addcmul addcdiv hardshrink softshrink logsigmoid rrelu fill
    zero copy mul_scalar square_ sigmoid_ silu_ relu_ xlogy""".split()
)
"""Per-element ops (with broadcasting): channels of all tensor operands at the same position couple."""

IDENTITY: frozenset[str] = frozenset(
    """contiguous clone detach to type float double half bfloat16 cpu cuda requires_grad type_as get
    alias view_as_real_copy resolve_conj resolve_neg""".split()
)
"""Ops that return the same values (dtype/device/copy changes): channel labels pass through."""

CONSTANT: frozenset[str] = frozenset(
    """zeros_like ones_like empty_like full_like rand_like randn_like randint_like new_zeros new_ones new_full
    new_empty new_tensor""".split()
)
"""Ops whose result holds no data of their input: the result carries no channels."""

SHAPE: frozenset[str] = frozenset(
    """view reshape flatten unflatten permute transpose t swapaxes swapdims movedim moveaxis squeeze unsqueeze
    expand expand_as view_as reshape_as cat concat concatenate stack hstack vstack split chunk tensor_split
    unbind narrow select getitem index_select repeat tile repeat_interleave flip roll pixel_shuffle
    pixel_unshuffle channel_shuffle native_channel_shuffle pad split_with_sizes""".split()
)
"""Ops replayed on channel-index tensors to learn their channel map."""

RESHAPE: frozenset[str] = frozenset("view reshape flatten unflatten view_as reshape_as".split())
"""Shape ops that may split a channel axis into several axes (see the tie rule in the tracer)."""

FIXED_INDEX: frozenset[str] = frozenset("split tensor_split unbind split_with_sizes roll index_select".split())
"""Shape ops whose arguments fix channel positions/counts: they stop pruning along a channel axis."""

SPATIAL: frozenset[str] = frozenset(
    """max_pool1d max_pool2d max_pool3d avg_pool1d avg_pool2d avg_pool3d adaptive_avg_pool1d adaptive_avg_pool2d
    adaptive_avg_pool3d adaptive_max_pool1d adaptive_max_pool2d adaptive_max_pool3d lp_pool1d lp_pool2d
    interpolate upsample upsample_nearest upsample_bilinear max_pool2d_with_indices max_pool1d_with_indices
    max_pool3d_with_indices fractional_max_pool2d fractional_max_pool3d upsample_nearest2d
    upsample_bilinear2d""".split()
)
"""Ops acting on each channel's spatial map independently (dim 1 kept, dims >= 2 resampled)."""

REDUCE: frozenset[str] = frozenset(
    """sum mean amax amin max min prod std var norm logsumexp nansum nanmean std_mean var_mean median
    nanmedian all any""".split()
)
"""Reductions: fine over axes that carry one channel, blocking over a channel axis."""

ALONG_DIM: dict[str, tuple[int, str, int | None]] = {
    # name: (positional index of `dim`, keyword, default dim)
    "softmax": (1, "dim", None),
    "log_softmax": (1, "dim", None),
    "softmin": (1, "dim", None),
    "normalize": (2, "dim", 1),
    "cumsum": (1, "dim", None),
    "cumprod": (1, "dim", None),
    "logcumsumexp": (1, "dim", None),
    "local_response_norm": (99, "", 1),
}
"""Ops that mix values along one axis: fine along a non-channel axis, blocking along a channel axis."""

ESCAPE: frozenset[str] = frozenset("iter tolist numpy array".split())
"""Ops that move channel data out of torch; the channels become unprunable."""

SHAPE_EXACT: frozenset[str] = (
    ELEMENTWISE | IDENTITY | SPATIAL | REDUCE | frozenset(ALONG_DIM) | frozenset(
        """zeros_like ones_like empty_like full_like rand_like randn_like randint_like flatten permute transpose t
        swapaxes swapdims movedim moveaxis unsqueeze pixel_shuffle pixel_unshuffle flip""".split())
)
"""Ops whose result shape follows from the shapes of their tensor inputs alone (no size argument that Python
code could have written as a literal). A forward whose channel data passes only these ops (and ``cat`` along
the axis its channels vary on) keeps its shapes under any pruning the trace allows, so the pruned model needs
no check run (see :attr:`slimcnn.graph.ChannelGraph.check_reason`)."""

CONCAT: frozenset[str] = frozenset("cat concat concatenate".split())
"""Joins; shape-exact when the joined tensors' channels vary along the joined axis only."""

METADATA: frozenset[str] = frozenset(
    """dim ndim ndimension dtype device is_floating_point is_complex is_cuda is_cpu is_sparse is_quantized is_meta
    requires_grad is_leaf layout get_device element_size is_signed""".split()
)
"""Tensor queries whose answer no pruning changes."""

SIZE_QUERIES: frozenset[str] = frozenset("size shape numel nelement len stride storage_offset".split())
"""Queries of a size: pruning changes them for channel data (and layer weights), not for other tensors. Every
other query (``bool(x)``, ``x.item()``) reads a value, which pruning may change for anything computed from
channel data, and with it the branch it steers."""


def normalize_name(func: object) -> str:
    """The op's canonical name: ``Tensor.__radd__`` -> ``radd``, ``relu_`` -> ``relu``, ``_max_pool2d`` ->
    ``max_pool2d``."""
    name = getattr(func, "__name__", None) or str(func)
    name = name.split(".")[-1]
    if name.startswith("__") and name.endswith("__"):
        name = name[2:-2]
    name = name.strip("_")
    if name.endswith("_") and name[:-1]:
        name = name[:-1]
    return name
