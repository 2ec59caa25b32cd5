"""Channel pruning: importance criteria, channel selection and structural edits.

``prune_model_(model, x, criterion="l1", prune_ratio=0.5)`` scores, selects and physically removes
channels; ``prune_(model, x, removal)`` removes given channels; ``PrunePlan``/``apply_plan`` store and
replay the result; ``compensate="mean"`` folds the removed channels' mean activations into the next layers'
biases (:func:`compensation_deltas`, :func:`apply_bias_deltas_`), ``compensate="lsq"`` refits those layers
by least squares (:func:`least_squares_fits`). Coupled channels come from :mod:`slimcnn.graph`.
"""

from slimcnn.prune._api import NothingPrunableWarning, PruneOutcome, prune_model_
from slimcnn.prune._compensate import (
    COMPENSATIONS,
    apply_bias_deltas_,
    bias_delta,
    compensation_deltas,
)
from slimcnn.prune._criteria import CRITERIA, ScoreContext, group_scores, score_groups
from slimcnn.prune._knapsack import LatencySelection, knapsack_widths, select_for_latency
from slimcnn.prune._latency_build import build_latency_table
from slimcnn.prune._latency_prune import LatencyPruneResult, prune_for_latency_
from slimcnn.prune._latency_table import GroupLatency, LatencyTable
from slimcnn.prune._lsq import least_squares_fits
from slimcnn.prune._plan import PrunePlan, apply_plan, fingerprint
from slimcnn.prune._presets import chip_cifar_resnet_keep, parse_sparsity
from slimcnn.prune._select import prunable_groups, removal_for_keep, removal_for_macs, select_removal
from slimcnn.prune._surgery import kept_channels, prune_

__all__ = [
    "COMPENSATIONS",
    "CRITERIA",
    "GroupLatency",
    "LatencyPruneResult",
    "LatencySelection",
    "LatencyTable",
    "NothingPrunableWarning",
    "PruneOutcome",
    "PrunePlan",
    "ScoreContext",
    "apply_bias_deltas_",
    "apply_plan",
    "bias_delta",
    "build_latency_table",
    "chip_cifar_resnet_keep",
    "compensation_deltas",
    "parse_sparsity",
    "fingerprint",
    "group_scores",
    "kept_channels",
    "knapsack_widths",
    "least_squares_fits",
    "prune_",
    "prunable_groups",
    "prune_for_latency_",
    "prune_model_",
    "removal_for_keep",
    "removal_for_macs",
    "score_groups",
    "select_for_latency",
    "select_removal",
]
