"""The demo's SynRIS row: a detector's AUC on SynRIS-matched reals next to an unmatched set.

Search and evaluation glue for the demo table; the search itself is :func:`.run.run_synris`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ldmdetect.engine.synris.run import SynRISConfig, SynRISResult, run_synris
from ldmdetect.features.embeddings import ImageEmbedder

__all__ = ["SynRISRow", "synris_row"]


@dataclass
class SynRISRow:
    """A detector's AUC on SynRIS-matched reals next to an unmatched real set.

    ``matched`` / ``unmatched``: ``compute_metrics`` dicts (same fakes, different reals);
    ``intervals``: bootstrap intervals of each; ``seconds``: search and scoring time.
    """

    synris: SynRISResult
    matched: dict[str, float]
    unmatched: dict[str, float]
    intervals: dict[str, Any]
    seconds: dict[str, float]
    report: dict[str, Any]

    def table_rows(self, label: str, columns: Sequence[str] = ("auc", "ap", "tpr@fpr=0.01")):
        """Rows for a summary table: ``{label / SynRIS-matched reals: {...}, ...}``."""
        return {
            f"{label} / SynRIS-matched reals": {c: self.matched[c] for c in columns},
            f"{label} / unmatched reals": {c: self.unmatched[c] for c in columns},
        }


def synris_row(
    detector,
    fakes: Sequence[str | os.PathLike],
    pool: Sequence[str | os.PathLike],
    real: Sequence[str | os.PathLike],
    output: str | os.PathLike,
    *,
    embedder: str | ImageEmbedder = "timm:tf_efficientnet_lite0",
    allow_reuse: bool = True,
    tries: int = 1,
    batch_size: int = 64,
    num_workers: int = 0,
    n_boot: int = 1000,
) -> SynRISRow:
    """Match ``fakes`` against ``pool`` and evaluate ``detector`` on matched vs. ``real`` reals.

    For a demo: the pool is small (e.g. a dozen photos for 48 fakes), so reuse is allowed by
    default; the offline embedder is the default so results do not depend on network access.
    Writes the SynRIS outputs to ``output/synris`` and the evaluation report (with its synris
    section) to ``output/report``.
    """
    from ldmdetect.engine.evaluate import evaluate

    out = Path(output)
    start = time.perf_counter()
    loaded = embedder if isinstance(embedder, ImageEmbedder) else None
    config = SynRISConfig(
        embedder=embedder if isinstance(embedder, str) else embedder.name,
        allow_reuse=allow_reuse,
        batch_size=batch_size,
        num_workers=num_workers,
    )
    found = run_synris(out / "synris", fake=fakes, real_pool=pool, config=config, embedder=loaded)
    search_seconds = time.perf_counter() - start
    tick = time.perf_counter()
    evaluation = evaluate(
        detector,
        real,
        {},
        pairs=found.files["pairs"],
        tries=(tries,),
        batch_size=batch_size,
        num_workers=num_workers,
        output=out / "report",
        n_boot=n_boot,
    )
    comparison = evaluation.synris
    assert comparison is not None  # evaluate() always compares when given pairs
    seconds = {
        "synris": search_seconds,
        "evaluate": time.perf_counter() - tick,
        "total": time.perf_counter() - start,
    }
    return SynRISRow(
        found,
        comparison.matched,
        comparison.unmatched,
        comparison.intervals,
        seconds,
        evaluation.result["synris"],  # the section as metrics.json holds it, for the JSON
    )
