"""Thresholds from real images: set at training time, or redone later on a user's own reals.

A stored threshold is a promise about images not yet seen: "at fpr 0.01, about one real in a
hundred is flagged". It keeps that promise only as far as its calibration reals resemble what
is scanned, so every threshold carries what it was set on (how many reals, from how many
sources) and a one-sided 95% upper bound on its false-positive rate, and a threshold that its
reals are too few to resolve is recorded as unresolved and refused where it would be applied.
``calibrate_detector`` re-derives every threshold of a saved detector from the user's own real
images without retraining, for every method (training-free ones included), so an operator
calibrates on their own traffic.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ldmdetect.attribution import Novelty
from ldmdetect.config import CONFIG_NAME, DetectorConfig, fpr_key, reals_needed
from ldmdetect.engine.metrics import FPR_TARGETS, conformal_threshold, fpr_upper_bound
from ldmdetect.io.datasets import search_images

__all__ = [
    "Calibration",
    "calibrate_detector",
    "calibration_record",
    "describe",
    "source_of",
]


def calibration_record(
    real_scores: np.ndarray,
    fprs: Sequence[float],
    *,
    sources: Sequence[str] | None = None,
    on: str = "",
    probabilistic: bool = True,
) -> tuple[dict[str, float], dict[str, Any]]:
    """(thresholds, calibration) for a detector config from held-out real scores.

    Each target FPR gets the split-conformal threshold (a new real is flagged with probability
    at most the target), stored only when the reals resolve it. The record says, per
    threshold, how many of these reals it flags and the Clopper-Pearson 95% upper bound on its
    false-positive rate, so a reader sees at once how much the number is worth.
    """
    scores = np.asarray(real_scores, dtype=np.float64)
    thresholds: dict[str, float] = {"0.5": 0.5} if probabilistic else {}
    n = int(scores.size)
    record: dict[str, Any] = {
        "on": on or f"{n} real images",
        "n_real": n,
        "n_sources": len(set(sources)) if sources is not None else None,
        "rule": "split-conformal: the (k+1)-th largest real score, k = floor(fpr (n+1)) - 1",
        "thresholds": {},
    }
    for fpr in sorted(fprs):
        key = fpr_key(fpr)
        entry: dict[str, Any] = {"fpr": fpr, "needs_n_real": reals_needed(fpr)}
        found = conformal_threshold(scores, fpr) if n else None
        if found is None:
            entry["resolved"] = False
        else:
            value, _ = found
            flagged = int(np.count_nonzero(scores > value))
            entry |= {
                "resolved": True,
                "threshold": value,
                "flagged": flagged,
                "fpr_upper_95": fpr_upper_bound(flagged, n),
            }
            thresholds[key] = value
        record["thresholds"][key] = entry
    return thresholds, record


def source_of(path: str | os.PathLike, root: str | os.PathLike) -> str:
    """The source a real image counts for: its first folder under the ``--real`` root it was
    found in (``reals/phone-a/x.jpg`` -> ``phone-a``), or the root itself for files directly in
    it. Sources, not files, are what make a calibration hold on new data."""
    path, root = Path(path), Path(root)
    try:
        parts = path.relative_to(root).parts
    except ValueError:
        return str(root)
    return f"{root}/{parts[0]}" if len(parts) > 1 else str(root)


@dataclass
class Calibration:
    """What ``calibrate_detector`` did: the new config, the reals it used, what it skipped."""

    config: DetectorConfig
    output: Path
    n_real: int
    sources: dict[str, int]
    errors: dict[str, str] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    #: The novelty rule re-derived on these reals (saved beside the config); None for a
    #: detector without novelty statistics.
    novelty: Novelty | None = None


def calibrate_detector(
    detector: str | os.PathLike,
    reals: Sequence[str | os.PathLike],
    output: str | os.PathLike,
    *,
    fprs: Sequence[float] = FPR_TARGETS,
    tries: int | None = None,
    batch_size: int = 64,
    num_workers: int = 0,
    device: str = "auto",
    pipeline: str | os.PathLike | None = None,
    progress: bool = False,
) -> Calibration:
    """Copy the detector at ``detector`` to ``output`` with every threshold re-derived from
    the real images in ``reals`` (folders, searched recursively, or files).

    An aligned dataset among ``reals`` (``ldmdetect reconstruct``'s output) gives its real
    crops, each counted for its source image; for a detector with a family head, its
    reconstructions of the head's families also re-derive the open-set ``family_threshold``
    (:func:`ldmdetect.attribution.calibrate_family_threshold`, as training sets it). Without
    such reconstructions the family threshold stays the one training set. A detector with
    novelty statistics gets their threshold re-derived on the same reals and views.

    Undecodable files are named in ``errors`` and left out; files that are not images by their
    extension in ``skipped``; the rest calibrates. Weights and everything else are copied as
    they are, so the new detector scores exactly as the old one and differs only in where its
    thresholds sit. ``pipeline`` reads the generator components from another copy of the
    pipeline (:meth:`Detector.from_pretrained <ldmdetect.detector.Detector.from_pretrained>`).
    """
    from ldmdetect.attribution import NOVELTY_FPR
    from ldmdetect.detector import Detector
    from ldmdetect.engine.scan import score_files_by_class, score_files_embedded

    source = Path(detector)
    model = Detector.from_pretrained(source, device=device, pipeline=pipeline)
    files: list[Path] = []
    sources: list[str] = []
    skipped: list[str] = []
    reconstructions: list[Path] = []
    for root in reals:
        if _is_aligned_dataset(root):
            from ldmdetect.engine.reconstruct import read_aligned_dataset

            pairs = read_aligned_dataset(root)
            files += [p.real for p in pairs]
            sources += [f"{os.fspath(root)}:{p.source}" for p in pairs]
            reconstructions += [
                path
                for p in pairs
                for family, path in p.reconstructions
                if family in model.families
            ]
            continue
        found = search_images([root])
        if found.missing:
            raise FileNotFoundError(f"{os.fspath(root)}: no such file or directory")
        skipped += [str(p) for p in found.skipped]
        base = Path(root) if Path(root).is_dir() else Path(root).parent
        files += found.files
        sources += [source_of(p, base) for p in found.files]
    if not files:
        raise ValueError(f"no real images found in {', '.join(map(os.fspath, reals))}")
    # One pass over everything: the reals' scores (and, for a family head with novelty
    # statistics, their embeddings) and the reconstructions' per-class probabilities.
    options = {
        "tries": tries,
        "batch_size": batch_size,
        "num_workers": num_workers,
        "progress": progress,
        "desc": "calibrate",
    }
    scored_paths = files + reconstructions if model.families else files
    embeddings = None
    if model.novelty is not None:
        scores, probabilities, embeddings, errors = score_files_embedded(
            model, scored_paths, **options
        )
    else:
        classes = len(scored_paths) > len(files)
        scores, probabilities, errors = score_files_by_class(
            model, scored_paths, classes=classes, **options
        )
    scores = scores[: len(files)]
    ok = ~np.isnan(scores)
    if not ok.any():
        raise ValueError("no real image could be decoded; nothing to calibrate on")
    kept_sources = [s for s, good in zip(sources, ok, strict=True) if good]
    config = model.config
    tries = tries or config.default_tries
    thresholds, record = calibration_record(
        scores[ok],
        fprs,
        sources=kept_sources,
        on=f"{int(ok.sum())} real images from {len(set(kept_sources))} source(s), {tries}-try",
        probabilistic=model.method.probabilistic,
    )
    record["tries"] = tries
    record["reals"] = [os.fspath(r) for r in reals]
    family_threshold = config.family_threshold
    if model.families and reconstructions:
        family_threshold, record["families"] = _family_threshold(model, probabilities[len(files) :])
    novelty = None
    if embeddings is not None:
        # The novelty threshold on the very reals (and views) the thresholds were set on.
        novelty = model.novelty.calibrated(
            embeddings[: len(files)][ok],
            NOVELTY_FPR,
            on=f"{int(ok.sum())} calibration real images, {tries}-try",
        )
        record["novelty"] = dict(novelty.record) | {"threshold": novelty.threshold}
    # The record is complete: the new config is made once, from it. The thresholds hold for
    # the views they were set with, so scans default to those.
    new = replace(
        config,
        thresholds=thresholds,
        default_tries=tries,
        calibration=record,
        family_threshold=family_threshold,
    )
    out = Path(output)
    if out.resolve() != source.resolve():
        out.mkdir(parents=True, exist_ok=True)
        for item in source.iterdir():
            if item.is_file() and item.name != CONFIG_NAME:
                shutil.copy2(item, out / item.name)
    new.save(out)
    if novelty is not None:
        novelty.save(out)
    counts: dict[str, int] = {}
    for s in kept_sources:
        counts[s] = counts.get(s, 0) + 1
    return Calibration(new, out, int(ok.sum()), counts, errors, skipped, novelty)


def _is_aligned_dataset(root: str | os.PathLike) -> bool:
    """Whether a --real root is an aligned dataset (its manifest and dataset.json), whose
    reconstructed/ images are not reals."""
    from ldmdetect.engine.reconstruct import DATASET_INFO_NAME, MANIFEST_NAME

    root = Path(root)
    return (root / MANIFEST_NAME).is_file() and (root / DATASET_INFO_NAME).is_file()


def _family_threshold(model: Any, probabilities: np.ndarray) -> tuple[float | None, dict[str, Any]]:
    """The open-set family threshold from the per-class probabilities of reconstructions of
    the head's families (NaN rows: files that failed), and its record: what it was set on,
    the value it replaces, and the thresholds other quantiles would set (the trade-off)."""
    from ldmdetect.attribution import (
        FAMILY_QUANTILE,
        calibrate_family_threshold,
        has_other,
        share_quantiles,
    )

    other = has_other(model.classes)
    scored = probabilities[~np.isnan(probabilities).any(axis=1)]
    threshold = calibrate_family_threshold(scored, other=other)
    return threshold, {
        "threshold_on": f"{len(scored)} reconstructions of the families "
        f"{', '.join(model.families)}",
        "quantile": FAMILY_QUANTILE,
        "family_threshold": threshold,
        "previous": model.config.family_threshold,
        "share_quantiles": share_quantiles(scored, other=other),
    }


def describe(record: dict[str, Any]) -> str:
    """One line per threshold for people: value, reals flagged, upper bound, or what it needs."""
    lines = [f"calibrated on {record.get('on', '?')}"]
    for key, entry in record.get("thresholds", {}).items():
        if entry.get("resolved"):
            lines.append(
                f"  {key}: {entry['threshold']:.6g} (flags {entry['flagged']} of "
                f"{record['n_real']}; FPR <= {entry['fpr_upper_95']:.2%} at 95%)"
            )
        else:
            lines.append(
                f"  {key}: unresolved (needs at least {entry['needs_n_real']} reals, "
                f"has {record['n_real']})"
            )
    families = record.get("families")
    if families:
        value = families["family_threshold"]
        lines.append(
            "  family threshold: "
            + (f"{value:.4g}" if value is not None else "none")
            + f" on {families['threshold_on']} (was {families['previous']})"
        )
    return "\n".join(lines)
