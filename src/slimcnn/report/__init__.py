"""Reports from a run folder alone: report.md, a self-contained report.html, and their plots (never touches models)."""

from slimcnn.report._data import REPORT_FILES
from slimcnn.report._render import FIGURES, render_report
from slimcnn.report.plots import plot_layer_latency, plot_layers, plot_pareto, plot_sensitivity
from slimcnn.report.tables import markdown_table

__all__ = [
    "FIGURES",
    "REPORT_FILES",
    "markdown_table",
    "plot_layer_latency",
    "plot_layers",
    "plot_pareto",
    "plot_sensitivity",
    "render_report",
]
