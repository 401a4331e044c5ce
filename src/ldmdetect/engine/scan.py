"""Score many files with a detector: batched, parallel decoding, one row per file."""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ldmdetect.detector import Detector
from ldmdetect.engine.loader import load_each
from ldmdetect.io.files import atomic_write_text
from ldmdetect.io.images import DEFAULT_MAX_PIXELS, load_image
from ldmdetect.io.perturb import Perturbation
from ldmdetect.io.prompts import genimage_class
from ldmdetect.methods.registry import PrepareImage, Sample


@dataclass(frozen=True)
class PrepareFile:
    """Picklable per-file work for loader workers: decode, perturb, make the method's sample."""

    prepare: PrepareImage
    perturbation: Perturbation | None = None
    max_pixels: int | None = DEFAULT_MAX_PIXELS

    def __call__(self, path: str) -> Sample:
        image = load_image(path, max_pixels=self.max_pixels)
        if self.perturbation is not None:
            image = self.perturbation(image)
        return self.prepare(image, path=path, class_name=genimage_class(path))


def score_files(
    detector: Detector,
    paths: Sequence[str | Path],
    *,
    tries: int | None = None,
    perturbation: Perturbation | None = None,
    batch_size: int = 64,
    num_workers: int = 0,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    progress: bool = False,
    desc: str = "scoring",
) -> tuple[np.ndarray, dict[str, str]]:
    """Scores for ``paths`` (NaN where a file failed) and {path: reason} for the failures."""
    tries = tries or detector.config.default_tries
    prepare = PrepareFile(detector.preparer(tries), perturbation, max_pixels)
    scores = np.full(len(paths), math.nan)
    errors: dict[str, str] = {}
    pending: list[tuple[int, Sample]] = []
    # Batches are counted in crops so that 10-try scans keep the same device batch size.
    images_per_batch = max(1, batch_size // tries)

    def flush() -> None:
        if pending:
            indices, prepared = zip(*pending, strict=True)
            scores[list(indices)] = detector.score_prepared(list(prepared), batch_size)
            pending.clear()

    results = load_each(paths, prepare, num_workers=num_workers, prefetch=2 * images_per_batch)
    for result in tqdm(results, total=len(paths), desc=desc, disable=not progress, unit="img"):
        if result.error is not None:
            errors[result.path] = result.error
            continue
        pending.append((result.index, result.value))
        if len(pending) >= images_per_batch:
            flush()
    flush()
    return scores, errors


@dataclass
class ScanRow:
    path: str
    score: float | None
    label: str
    threshold: str
    error: str


def scan(
    detector: Detector,
    paths: Sequence[str | Path],
    *,
    tries: int | None = None,
    fpr: float | None = 0.01,
    batch_size: int = 64,
    num_workers: int = 0,
    progress: bool = False,
) -> list[ScanRow]:
    """One row per file: probability, decision at the FPR-calibrated threshold, or the error."""
    threshold_name, threshold = detector.config.threshold(fpr)
    scores, errors = score_files(
        detector,
        paths,
        tries=tries,
        batch_size=batch_size,
        num_workers=num_workers,
        progress=progress,
        desc="scan",
    )
    rows = []
    for path, score in zip(paths, scores, strict=True):
        path = str(path)
        if path in errors:
            rows.append(ScanRow(path, None, "", threshold_name, errors[path]))
        else:
            label = "generated" if score > threshold else "real"
            rows.append(ScanRow(path, float(score), label, threshold_name, ""))
    return rows


def write_rows(rows: Sequence[ScanRow], output: str | os.PathLike) -> Path:
    """Write scan rows as JSON (``.json``) or CSV (anything else), atomically."""
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    if output.suffix.lower() == ".json":
        return atomic_write_text(output, json.dumps([asdict(r) for r in rows], indent=2) + "\n")
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=list(ScanRow.__dataclass_fields__))
    writer.writeheader()
    writer.writerows(asdict(r) for r in rows)
    return atomic_write_text(output, text.getvalue())
