"""Sensitivity analysis and budget-constrained search (greedy, Liu et al.'s CPO, Pavlitska et al.'s loop)."""

from slimcnn.search.budget import Amount, Budget, ConstraintCheck, parse_amount, parse_drop
from slimcnn.search.cpo import CPOResult, CPOStep, cpo_search
from slimcnn.search.families import FAMILIES, KMeansFamily, LowRankFamily, PruneFamily
from slimcnn.search.greedy import GreedyResult, TriedPoint, allocation_path, greedy_search
from slimcnn.search.iterative import Selection, select_layers
from slimcnn.search.run import STRATEGIES, SearchResult, SearchSpec, search
from slimcnn.search.sensitivity import Knob, SensitivityPoint, SensitivityTable, sensitivity_sweep

__all__ = [
    "FAMILIES", "STRATEGIES", "Amount", "Budget", "CPOResult", "CPOStep", "ConstraintCheck", "GreedyResult",
    "Knob", "KMeansFamily", "LowRankFamily", "PruneFamily", "SearchResult", "SearchSpec", "Selection",
    "SensitivityPoint", "SensitivityTable", "TriedPoint", "allocation_path", "cpo_search", "greedy_search",
    "parse_amount", "parse_drop", "search", "select_layers", "sensitivity_sweep",
]
