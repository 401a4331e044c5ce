"""``ldmdetect scan``: score files with a detector, locally or on Ray; rows to a file or
standard output, the summary and every failure on standard error."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ldmdetect.cli.common import (
    ConfigDefaults,
    command,
    echo_not_images,
    engine_name,
    fail,
    num_workers,
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


#: ``scan``'s options that are :class:`~ldmdetect.engine.scan_run.ScanOptions` settings.
SCAN_SETTINGS = ConfigDefaults(
    "ldmdetect.engine.scan_run:ScanOptions",
    "tries",
    "fpr",
    "batch_size",
    "device",
    "pipeline",
    "engine",
    "ray_actors",
    "ray_address",
    uncertain_fpr=("uncertain_fpr", str),
)


@command(commands, SCAN_SETTINGS)
def scan(
    ctx: typer.Context,
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
    engine: Engine = None,
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
    from ldmdetect.engine.ray_engine import RayUnavailable
    from ldmdetect.engine.scan_run import run_scan

    options = SCAN_SETTINGS.build(
        ctx.params,
        uncertain_fpr=uncertain_fpr_option(uncertain_fpr),
        engine=engine_name(engine),
        num_workers=num_workers(workers),
    )
    try:
        run = run_scan(
            detector,
            paths,
            options,
            output=output,
            on_resume=lambda journal: typer.echo(
                f"resuming the interrupted scan recorded in {journal}", err=True
            ),
        )
    except RayUnavailable as err:
        raise fail(str(err)) from None
    # The summary goes to stderr when the rows go to stdout, so a pipe gets CSV only.
    typer.echo(run.summary, err=run.output is None)
    for warning in run.warnings:
        typer.secho(f"warning: {warning}", fg=typer.colors.YELLOW, err=True)
    echo_not_images(run.skipped)
    if run.skipped:
        typer.secho(f"{len(run.skipped)} non-image file(s) skipped", err=True)
    for path, reason in run.failed:
        typer.secho(f"failed {path}: {reason}", fg=typer.colors.YELLOW, err=True)
    if run.failed:
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
