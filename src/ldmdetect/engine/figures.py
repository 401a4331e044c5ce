"""Matplotlib figures for report PNGs, drawn without pyplot and saved atomically."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ldmdetect.io.files import atomic_path

__all__ = ["new_figure", "save_png"]


def new_figure(figsize: tuple[float, float]) -> Any:
    """A Figure on an Agg canvas directly, not pyplot: no global figure registry to leak, and
    no interactive backend picked up in a headless run."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_png(
    fig: Any, path: str | os.PathLike[str], metadata: Mapping[str, str] | None = None
) -> Path:
    """Written through a temporary file, so a reader never sees half a PNG. ``metadata`` goes
    into the PNG's text chunks (e.g. what the axes show), readable without decoding pixels."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, metadata=dict(metadata or {}))
    return Path(path)
