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
from typing import TextIO

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

__all__ = ["ENGINES", "ScanRun", "run_scan"]

ENGINES = ("local", "ray")


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
    *,
    output: str | os.PathLike | None = None,
    engine: str = "local",
    tries: int | None = None,
    fpr: float | None = 0.01,
    uncertain_fpr: float | str | None = "auto",
    batch_size: int = 64,
    device: str = "auto",
    pipeline: str | os.PathLike | None = None,
    num_workers: int = 0,
    ray_actors: int | None = None,
    ray_address: str | None = None,
    stream: TextIO | None = None,
    on_resume: Callable[[Path], None] | None = None,
) -> ScanRun:
    """Score the image files ``inputs`` name (files, or folders searched recursively) with
    the detector at ``detector`` (directory or hub id), and write one row per file.

    ``output`` ``.json`` or ``.csv``: the rows, written whole at the end, with a progress bar
    meanwhile; None: CSV to ``stream`` (standard output when None), nothing else on it.
    ``on_resume`` is called with the journal of an interrupted scan before its rows are taken
    up, so the caller can say so before the scan starts. ``engine="ray"`` needs ``output``, a
    new directory, and scores on the actors of :func:`~ldmdetect.engine.ray_engine.ray_scan`
    (``ray_actors``, ``ray_address``); ``num_workers`` and ``stream`` are the local engine's.
    The scoring settings are :func:`~ldmdetect.engine.scan.scan`'s; ``pipeline`` reads the
    generator components from another copy of the pipeline
    (:meth:`~ldmdetect.detector.Detector.from_pretrained`).
    """
    if engine not in ENGINES:
        raise ValueError(f"engine {engine!r}: expected one of {', '.join(ENGINES)}")
    if engine == "ray":
        return _run_on_ray(
            detector,
            inputs,
            output,
            tries=tries,
            fpr=fpr,
            uncertain_fpr=uncertain_fpr,
            batch_size=batch_size,
            device=device,
            pipeline=pipeline,
            actors=ray_actors,
            address=ray_address,
        )
    model = Detector.from_pretrained(detector, device=device, pipeline=pipeline)
    found = search_images(inputs)
    journal = journal_path(output)
    if journal is not None and journal.is_file() and on_resume is not None:
        on_resume(journal)
    rows = scan(
        model,
        found.files,
        tries=tries,
        fpr=fpr,
        uncertain_fpr=uncertain_fpr,
        batch_size=batch_size,
        num_workers=num_workers,
        progress=output is not None,
        journal=journal,
    )
    rows += missing_rows(found.missing)
    if output is None:
        write_csv(rows, sys.stdout if stream is None else stream)
    else:
        write_rows(rows, output)
        journal.unlink()  # the rows are safely written: a rerun starts afresh
    return ScanRun(
        engine,
        output,
        scan_summary(rows, fpr, output),
        failed=[(row.path, row.error) for row in rows if row.error],
        skipped=found.skipped,
        warnings=calibration_warnings(rows, model.config, fpr),
        rows=rows,
    )


def _run_on_ray(
    detector: str | os.PathLike,
    inputs: Sequence[str | os.PathLike],
    output: str | os.PathLike | None,
    **options,
) -> ScanRun:
    """The Ray engine's scan: Parquet rows under ``output`` and the count line; ``options``
    are :func:`~ldmdetect.engine.ray_engine.ray_scan`'s."""
    from ldmdetect.engine import ray_engine

    if output is None:
        raise ValueError("--engine ray writes Parquet files: give --output DIRECTORY")
    found = search_images(inputs)
    ray_engine.import_ray()  # before any work: without the extra, say which to install
    # Missing paths go in too: each becomes an error row, as undecodable files do.
    summary = ray_engine.ray_scan(detector, [*found.files, *found.missing], output, **options)
    return ScanRun(
        "ray",
        output,
        f"{summary.files} files, {summary.flagged} flagged as generated, "
        f"{len(summary.errors)} failed -> {output}",
        failed=list(summary.errors.items()),
        skipped=found.skipped,
    )
