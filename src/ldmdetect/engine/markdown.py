"""Markdown tables for reports and the demo's printout: one cell format, so tables line up.

A metric missing from a row raises instead of printing a blank that could be misread as zero.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["DEFAULT_COLUMNS", "markdown_table"]

DEFAULT_COLUMNS: tuple[str, ...] = (
    "acc",
    "oracle_acc",
    "ap",
    "auc",
    "tpr@fpr=0.001",
    "tpr@fpr=0.01",
    "tpr@fpr=0.05",
)


def _cell(value: Any) -> str:
    """Counts print as integers, metrics with 4 decimals, so tables line up across runs."""
    if isinstance(value, (bool, np.bool_)):
        return str(value)
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.4f}"
    return str(value).replace("|", "\\|")


def _cell_with_interval(value: Any, interval: Sequence[float] | None) -> str:
    if interval is None:
        return _cell(value)
    lo, hi = interval
    return f"{_cell(value)} [{_cell(float(lo))}, {_cell(float(hi))}]"


def markdown_table(
    rows: Mapping[str, Mapping[str, float]],
    columns: Sequence[str] = DEFAULT_COLUMNS,
    *,
    label: str = "name",
    intervals: Mapping[str, Mapping[str, Sequence[float]]] | None = None,
) -> str:
    """A GitHub-flavoured Markdown table, one row per name; ``label`` heads the name column.

    ``intervals`` ({row name: {column: [lo, hi]}}) adds a bracketed interval after the values
    it covers. A metric missing from a row raises rather than printing a blank that could be
    misread.
    """
    intervals = intervals or {}
    lines = [
        "| " + " | ".join([label, *columns]) + " |",
        "|" + "---|" + "---:|" * len(columns),
    ]
    for name, row in rows.items():
        missing = [c for c in columns if c not in row]
        if missing:
            raise KeyError(f"row {name!r} has no value for column(s) {missing}")
        row_intervals = intervals.get(name) or {}
        cells = [
            _cell(str(name)),
            *(_cell_with_interval(row[c], row_intervals.get(c)) for c in columns),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
