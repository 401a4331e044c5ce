"""How often a detector's stored thresholds flag a set of images, with exact intervals.

This is the number an operator meets first: run over real photos from a source the detector
never saw, the share flagged at the stored "1% FPR" threshold should be about 1%. It is a
binomial proportion, so it is reported with its Clopper-Pearson interval, and per source,
since crops of one photo or one source are not independent draws.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from ldmdetect.config import DetectorConfig, fpr_key

__all__ = ["Flagged", "flagged_at", "proportion_interval", "score_and_flag"]


def proportion_interval(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Two-sided Clopper-Pearson interval of a proportion, k of n."""
    from scipy.stats import beta

    if n <= 0:
        return (0.0, 1.0)
    alpha = 1.0 - level
    low = float(beta.ppf(alpha / 2, k, n - k + 1)) if k > 0 else 0.0
    high = float(beta.ppf(1 - alpha / 2, k + 1, n - k)) if k < n else 1.0
    return low, high


@dataclass(frozen=True)
class Flagged:
    """Images scored above one stored threshold: the count, share, its 95% interval and the
    one-sided 95% upper bound (the figure to hold against a target FPR), per source too."""

    threshold: str
    n: int
    flagged: int
    share: float
    interval: tuple[float, float]
    upper_95: float
    per_source: dict[str, list[int]] = field(default_factory=dict)  # source: [flagged, n]

    def to_dict(self) -> dict:
        return asdict(self)


def flagged_at(
    scores: np.ndarray,
    config: DetectorConfig,
    fpr: float,
    sources: Sequence[str] | None = None,
) -> Flagged:
    """The share of ``scores`` above the threshold ``config`` stores for ``fpr`` (which must be
    resolved: see :meth:`DetectorConfig.threshold`)."""
    from ldmdetect.engine.metrics import fpr_upper_bound

    name, threshold = config.threshold(fpr)
    scores = np.asarray(scores, dtype=np.float64)
    called = scores > threshold
    n, k = int(scores.size), int(called.sum())
    per_source: dict[str, list[int]] = {}
    for source, flag in zip(sources or [], called, strict=False):
        tally = per_source.setdefault(source, [0, 0])
        tally[0] += int(flag)
        tally[1] += 1
    return Flagged(
        name,
        n,
        k,
        k / n if n else 0.0,
        proportion_interval(k, n),
        fpr_upper_bound(k, n) if n else 1.0,
        dict(sorted(per_source.items())),
    )


def score_and_flag(
    detector,
    files: Sequence[str | os.PathLike],
    fprs: Sequence[float],
    *,
    sources: Sequence[str] | None = None,
    perturbation=None,
    batch_size: int = 64,
    num_workers: int = 0,
    progress: bool = False,
) -> tuple[dict[str, Flagged], np.ndarray, dict[str, str]]:
    """Score ``files`` (optionally perturbed) and count them at each resolved stored threshold.

    Returns ({fpr key: Flagged}, the scores with NaN for failures, {path: reason}). An FPR the
    detector did not resolve is left out rather than applied.
    """
    from ldmdetect.engine.scan import score_files

    scores, errors = score_files(
        detector,
        files,
        perturbation=perturbation,
        batch_size=batch_size,
        num_workers=num_workers,
        progress=progress,
        desc="flagged",
    )
    ok = ~np.isnan(scores)
    kept = [s for s, good in zip(sources, ok, strict=True) if good] if sources else None
    resolved = set(detector.config.resolved_fprs())
    return (
        {
            fpr_key(f): flagged_at(scores[ok], detector.config, f, kept)
            for f in fprs
            if fpr_key(f) in resolved
        },
        scores,
        errors,
    )
