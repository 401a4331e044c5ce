"""Markdown tables: aligned number formats, escaped pipes, no silent blanks."""

from __future__ import annotations

import pytest

from ldmdetect.engine.markdown import DEFAULT_COLUMNS, markdown_table


def test_markdown_table_formats_numbers() -> None:
    rows = {
        "a": {"n_fake": 12, "auc": 0.98765, "ap": 1.0},
        "b|c": {"n_fake": 3, "auc": 0.5, "ap": 0},
    }
    text = markdown_table(rows, ["n_fake", "auc", "ap"], label="generator")
    lines = text.strip().splitlines()
    assert lines[0] == "| generator | n_fake | auc | ap |"
    assert lines[1] == "|---|---:|---:|---:|"
    assert lines[2] == "| a | 12 | 0.9877 | 1.0000 |"
    assert lines[3] == "| b\\|c | 3 | 0.5000 | 0 |"  # pipes escaped so the row keeps its cells


def test_markdown_table_default_columns_and_missing_key() -> None:
    row = {c: 0.25 for c in DEFAULT_COLUMNS}
    header = markdown_table({"x": row}).splitlines()[0]
    assert header == "| name | " + " | ".join(DEFAULT_COLUMNS) + " |"
    del row["auc"]
    with pytest.raises(KeyError, match="auc"):
        markdown_table({"x": row})


def test_markdown_table_interval_cell() -> None:
    rows = {"a": {"auc": 0.92, "n_fake": 3}}
    text = markdown_table(rows, ["n_fake", "auc"], intervals={"a": {"auc": [0.88, 0.96]}})
    assert text.splitlines()[2] == "| a | 3 | 0.9200 [0.8800, 0.9600] |"
