"""Plots and Markdown tables from run data (never touches models)."""

from slimcnn.report.plots import plot_pareto, plot_sensitivity
from slimcnn.report.tables import markdown_table

__all__ = ["markdown_table", "plot_pareto", "plot_sensitivity"]
