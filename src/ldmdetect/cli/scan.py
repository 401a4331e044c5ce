"""``ldmdetect scan``: score files with a detector, locally or on Ray; rows to a file or
standard output, the summary and every failure on standard error."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from ldmdetect.cli.common import (
    ConfigDefaults,
    command,
    echo_not_images,
    engine_name,
    num_workers,
    ray_engine,
)
from ldmdetect.cli.options import (
    BatchSize,
    DetectorSource,
    Device,
    Engine,
    PipelineOverride,
    RayActors,
    RayAddress,
    Workers,
)

commands = typer.Typer()


@command(
    commands,
    ConfigDefaults("ldmdetect.engine.scan:scan", "tries", "fpr", "uncertain_fpr", "batch_size")
    | ConfigDefaults("ldmdetect.detector:Detector.from_pretrained", "device"),
)
def scan(
    paths: Annotated[list[Path], typer.Argument(help="Image files or folders (recursive).")],
    detector: DetectorSource,
    tries: Annotated[int | None, typer.Option(help="1 = center crop; N = mean of N crops.")] = None,
    output: Annotated[
        Path | None, typer.Option(help="out.csv or out.json; default: CSV on stdout.")
    ] = None,
    fpr: Annotated[
        float | None,
        typer.Option(help="Label with the threshold calibrated at this false-positive rate."),
    ] = None,
    uncertain_fpr: Annotated[
        str | None,
        typer.Option(
            help="The verdict column's 'uncertain' band reaches down to the threshold "
            "calibrated at this looser FPR ('auto': the next calibrated one; 'none': no band)."
        ),
    ] = None,
    batch_size: BatchSize = None,
    device: Device = None,
    workers: Workers = None,
    pipeline: PipelineOverride = None,
    engine: Engine = "local",
    ray_address: RayAddress = None,
    ray_actors: RayActors = None,
) -> None:
    """Score images; one row per file. Exit status 1 if any file failed, 0 otherwise.

    Ends with the share flagged, and warns for each folder flagged far more often than the
    threshold's calibrated false-positive rate allows for real images.

    With --output, rows are journaled batch by batch in OUTPUT.partial: rerunning an
    interrupted scan with the same detector and settings scores only the files left.
    With --engine ray, --output is a new directory, for Parquet files.
    """
    from ldmdetect.engine.scan import (
        calibration_warnings,
        journal_path,
        missing_rows,
        scan_summary,
        write_csv,
        write_rows,
    )
    from ldmdetect.engine.scan import scan as run_scan
    from ldmdetect.io.datasets import search_images

    band = uncertain_fpr_option(uncertain_fpr)
    if engine_name(engine) == "ray":
        options = {"tries": tries, "fpr": fpr, "uncertain_fpr": band, "batch_size": batch_size}
        options |= {"device": device, "pipeline": pipeline}
        _scan_on_ray(detector, paths, output, actors=ray_actors, address=ray_address, **options)
        return
    from ldmdetect.detector import Detector

    model = Detector.from_pretrained(detector, device=device, pipeline=pipeline)
    found = search_images(paths)
    # With --output, finished batches go to a journal beside it, so rerunning an interrupted
    # scan scores only what is left; the output itself appears whole, at the end.
    journal = journal_path(output)
    if journal is not None and journal.is_file():
        typer.echo(f"resuming the interrupted scan recorded in {journal}", err=True)
    rows = run_scan(
        model,
        found.files,
        tries=tries,
        fpr=fpr,
        uncertain_fpr=band,
        batch_size=batch_size,
        num_workers=num_workers(workers),
        progress=output is not None,
        journal=journal,
    )
    # A path that does not exist is a failed row like an undecodable file, not the end.
    rows += missing_rows(found.missing)
    if output is None:
        write_csv(rows, sys.stdout)
    else:
        write_rows(rows, output)
        journal.unlink()
    # The summary goes to stderr when the rows go to stdout, so a pipe gets CSV only.
    typer.echo(scan_summary(rows, fpr, output), err=output is None)
    for warning in calibration_warnings(rows, model.config, fpr):
        typer.secho(f"warning: {warning}", fg=typer.colors.YELLOW, err=True)
    echo_not_images(found.skipped)
    if found.skipped:
        typer.secho(f"{len(found.skipped)} non-image file(s) skipped", err=True)
    failed = [r for r in rows if r.error]
    for row in failed:
        typer.secho(f"failed {row.path}: {row.error}", fg=typer.colors.YELLOW, err=True)
    if failed:
        raise typer.Exit(1)


def uncertain_fpr_option(value: str | None) -> float | str | None:
    """--uncertain-fpr: 'auto', 'none' or a number."""
    if value is None or value == "auto":
        return "auto"
    if value.lower() == "none":
        return None
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"--uncertain-fpr {value!r}: expected auto, none or a number") from None


def _scan_on_ray(detector: str, paths: list[Path], output: Path | None, **options) -> None:
    """--engine ray: Parquet rows under ``output``, the count line, every failure named;
    ``options`` are :func:`~ldmdetect.engine.ray_engine.ray_scan`'s."""
    from ldmdetect.io.datasets import search_images

    if output is None:
        raise ValueError("--engine ray writes Parquet files: give --output DIRECTORY")
    found = search_images(paths)
    # Missing paths go in too: each becomes an error row, as undecodable files do.
    summary = ray_engine().ray_scan(
        detector,
        [*found.files, *found.missing],
        output,
        **options,
    )
    typer.echo(
        f"{summary.files} files, {summary.flagged} flagged as generated, "
        f"{len(summary.errors)} failed -> {output}"
    )
    echo_not_images(found.skipped)
    for path, reason in summary.errors.items():
        typer.secho(f"failed {path}: {reason}", fg=typer.colors.YELLOW, err=True)
    if summary.errors:
        raise typer.Exit(1)
