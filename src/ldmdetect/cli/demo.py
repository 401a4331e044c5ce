"""``ldmdetect demo``: the main job, end to end, with no download."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ldmdetect.cli.common import (
    ConfigDefaults,
    command,
)

commands = typer.Typer()


@command(
    commands,
    ConfigDefaults(
        "ldmdetect.engine.demo:DemoConfig",
        "generator",
        "other_generator",
        "seed",
        "device",
        methods=("methods", ",".join),
    ),
)
def demo(
    output: Annotated[Path, typer.Option(help="Where the run writes everything.")] = Path(
        "runs/demo"
    ),
    generator: Annotated[
        str | None,
        typer.Option(
            help="mini (the shipped trained LDM), mini-flow (the shipped SD3-format flow "
            "model), tiny (random; smoke test), or a pipeline directory or hub id."
        ),
    ] = None,
    other_generator: Annotated[
        str | None,
        typer.Option(
            help="A generator of another family that no detector trains on; its images get "
            "their own rows. auto: mini-flow for mini and mini for mini-flow, none otherwise; "
            "none: no such rows."
        ),
    ] = None,
    seed: int | None = None,
    methods: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated methods, or 'all' (adds the baselines; slower than the "
            "default seed methods)."
        ),
    ] = None,
    device: Annotated[
        str | None, typer.Option(help="cpu (the published figures), cuda, cuda:N or auto.")
    ] = None,
) -> None:
    """The main job: train each method on the bundled photos, catch generated images."""
    from ldmdetect.engine.demo import (
        PHOTO_COLUMNS,
        SUMMARY_COLUMNS,
        DemoConfig,
        demo_recipes,
        run_demo,
    )
    from ldmdetect.engine.report import markdown_table

    chosen = (
        tuple(demo_recipes()) if methods == "all" else tuple(m.strip() for m in methods.split(","))
    )
    other = None if other_generator == "none" else other_generator
    config = DemoConfig(
        generator=generator, other_generator=other, seed=seed, methods=chosen, device=device
    )
    result = run_demo(output, config, progress=True)
    typer.echo("\nheld-out real photos vs. each test set:")
    typer.echo(markdown_table(result.table, SUMMARY_COLUMNS, label="method / test set / inference"))
    if result.photo_table:
        typer.echo(
            "share flagged at each detector's stored thresholds (calibrated on other sources' "
            "photos), with the one-sided 95% upper bound at 1%:"
        )
        typer.echo(markdown_table(result.photo_table, PHOTO_COLUMNS, label="method / images"))
    for name, evaluation in result.evaluations.items():
        typer.echo(f"report ({name}): {evaluation.files['report']}")
    typer.echo(f"scan: {result.scan_path}")
    typer.echo(f"seconds per stage: {json.dumps(result.seconds)}")
    typer.echo(f"CPU seconds per stage: {json.dumps(result.cpu_seconds)}")
