"""One scan from its inputs to its written rows, as ``ldmdetect scan`` runs it: the files the
inputs name, scored on the local engine or on Ray, and the rows where they were asked for.
Everything is decided and written here; the caller prints what :class:`ScanRun` says.

On the local engine, rows bound for a file are journaled batch by batch beside it
(:func:`~ldmdetect.engine.scan.journal_path`), so rerunning an interrupted scan with the same
detector and settings scores only the files left, and the file itself appears whole, at the
end. Rows bound for no file go to a stream as CSV. On Ray, ``output`` is a new directory of
Parquet files (:func:`~ldmdetect.engine.ray_engine.ray_scan`). On both, a path that does not
exist is a failed row like an undecodable file, not the end of the scan.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from ldmdetect.detector import Detector
from ldmdetect.engine.scan import (
    ScanRow,
    calibration_warnings,
    journal_path,
    missing_rows,
    scan,
    scan_summary,
    write_csv,
    write_rows,
)
from ldmdetect.io.datasets import search_images

__all__ = ["ENGINES", "ScanOptions", "ScanRun", "run_scan"]

ENGINES = ("local", "ray")


@dataclass(frozen=True)
class ScanOptions:
    """How a scan scores and where it runs: :func:`~ldmdetect.engine.scan.scan`'s settings
    (views, thresholds, batch), the detector's loading (device, another copy of its
    pipeline) and the engine's (decoding workers locally; actors and cluster on Ray).

    The defaults are ``scan``'s and ``Detector.from_pretrained``'s; ``ldmdetect scan`` reads
    its option defaults from here.
    """

    tries: int | None = None
    fpr: float | None = 0.01
    uncertain_fpr: float | str | None = "auto"
    batch_size: int = 64
    device: str = "auto"
    pipeline: str | os.PathLike | None = None
    engine: str = "local"
    num_workers: int = 0
    ray_actors: int | None = None
    ray_address: str | None = None

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ValueError(f"engine {self.engine!r}: expected one of {', '.join(ENGINES)}")

    def scoring(self) -> dict[str, Any]:
        """The settings both engines score with: ``scan``'s and ``ray_scan``'s keywords."""
        return {
            "tries": self.tries,
            "fpr": self.fpr,
            "uncertain_fpr": self.uncertain_fpr,
            "batch_size": self.batch_size,
        }


@dataclass(frozen=True)
class ScanRun:
    """What one scan did, for its caller to report.

    ``summary``: one line of counts, ending with where the rows went when they went to a
    file or directory. ``failed``: (path, reason) for each failed row, in row order on the
    local engine. ``skipped``: files a folder search passed over for their extension.
    ``warnings``: folders flagged far more often than the threshold's calibrated
    false-positive rate allows for real images (local engine). ``rows``: the local engine's
    rows; None on Ray, whose rows are only in its Parquet files.
    """

    engine: str
    output: str | os.PathLike | None
    summary: str
    failed: list[tuple[str, str]]
    skipped: list[Path]
    warnings: list[str] = field(default_factory=list)
    rows: list[ScanRow] | None = None


def run_scan(
    detector: str | os.PathLike,
    inputs: Sequence[str | os.PathLike],
    options: ScanOptions | None = None,
    *,
    output: str | os.PathLike | None = None,
    stream: TextIO | None = None,
    on_resume: Callable[[Path], None] | None = None,
) -> ScanRun:
    """Score the image files ``inputs`` name (files, or folders searched recursively) with
    the detector at ``detector`` (directory or hub id), as ``options`` say (default:
    :class:`ScanOptions`'s), and write one row per file.

    ``output`` ``.json`` or ``.csv``: the rows, written whole at the end, with a progress bar
    meanwhile; None: CSV to ``stream`` (standard output when None), nothing else on it.
    ``on_resume`` is called with the journal of an interrupted scan before its rows are taken
    up, so the caller can say so before the scan starts. The Ray engine needs ``output``, a
    new directory, and scores on the actors of :func:`~ldmdetect.engine.ray_engine.ray_scan`;
    ``stream`` is the local engine's.
    """
    o = options or ScanOptions()
    if o.engine == "ray":
        return _run_on_ray(detector, inputs, output, o)
    model = Detector.from_pretrained(detector, device=o.device, pipeline=o.pipeline)
    found = search_images(inputs)
    journal = journal_path(output)
    if journal is not None and journal.is_file() and on_resume is not None:
        on_resume(journal)
    rows = scan(
        model,
        found.files,
        num_workers=o.num_workers,
        progress=output is not None,
        journal=journal,
        **o.scoring(),
    )
    rows += missing_rows(found.missing)
    if output is None:
        write_csv(rows, sys.stdout if stream is None else stream)
    else:
        write_rows(rows, output)
        journal.unlink()  # the rows are safely written: a rerun starts afresh
    return ScanRun(
        "local",
        output,
        scan_summary(rows, o.fpr, output),
        failed=[(row.path, row.error) for row in rows if row.error],
        skipped=found.skipped,
        warnings=calibration_warnings(rows, model.config, o.fpr),
        rows=rows,
    )


def _run_on_ray(
    detector: str | os.PathLike,
    inputs: Sequence[str | os.PathLike],
    output: str | os.PathLike | None,
    o: ScanOptions,
) -> ScanRun:
    """The Ray engine's scan: Parquet rows under ``output`` and the count line."""
    from ldmdetect.engine import ray_engine

    if output is None:
        raise ValueError("--engine ray writes Parquet files: give --output DIRECTORY")
    found = search_images(inputs)
    ray_engine.import_ray()  # before any work: without the extra, say which to install
    summary = ray_engine.ray_scan(
        detector,
        [*found.files, *found.missing],  # a missing path: an error row, as undecodable files
        output,
        device=o.device,
        pipeline=o.pipeline,
        actors=o.ray_actors,
        address=o.ray_address,
        **o.scoring(),
    )
    return ScanRun(
        "ray",
        output,
        f"{summary.files} files, {summary.flagged} flagged as generated, "
        f"{len(summary.errors)} failed -> {output}",
        failed=list(summary.errors.items()),
        skipped=found.skipped,
    )
