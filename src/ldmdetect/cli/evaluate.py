"""``ldmdetect evaluate``: metrics per generator, robustness rows, the report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ldmdetect.cli.common import (
    ConfigDefaults,
    DetectorSource,
    Device,
    PipelineOverride,
    Workers,
    command,
    load_detector,
    num_workers,
)

commands = typer.Typer()


@command(
    commands,
    ConfigDefaults(
        "ldmdetect.engine.evaluate:evaluate",
        "format_control",
        "tries",
        "batch_size",
    )
    | ConfigDefaults("ldmdetect.detector:Detector.from_pretrained", "device"),
)
def evaluate(
    detector: DetectorSource,
    real: Annotated[list[Path], typer.Option(help="Real images (folder; repeatable).")],
    output: Annotated[Path, typer.Option(help="Report directory.")],
    fake: Annotated[
        list[Path] | None, typer.Option(help="One folder per generator (repeatable).")
    ] = None,
    perturb: Annotated[
        list[str] | None,
        typer.Option(
            help="Robustness condition, e.g. jpeg:75, resize:0.5, blur:1, webp:80, crop:224; "
            "chain with '+'. Repeatable."
        ),
    ] = None,
    format_control: Annotated[
        int | None,
        typer.Option(help="JPEG quality applied to reals and fakes alike (format control)."),
    ] = None,
    tries: Annotated[
        list[int] | None,
        typer.Option(help="Crops per image; repeat to compare, e.g. --tries 1 --tries 10."),
    ] = None,
    batch_size: int | None = None,
    device: Device = None,
    workers: Workers = None,
    pipeline: PipelineOverride = None,
    pairs: Annotated[
        Path | None,
        typer.Option(help="SynRIS pairs.csv: AUC on the matched reals next to --real's."),
    ] = None,
) -> None:
    """Metrics per generator and averaged; robustness rows; writes metrics.json + report."""
    from ldmdetect.engine.evaluate import evaluate as run_evaluate
    from ldmdetect.engine.report import markdown_table

    model = load_detector(detector, device, pipeline)
    evaluation = run_evaluate(
        model,
        real,
        fake or [],
        perturbations=perturb or [],  # a repeatable option: absent means none
        format_control=format_control,
        tries=tries,
        batch_size=batch_size,
        num_workers=num_workers(workers),
        output=output,
        settings={"detector": detector},
        progress=True,
        pairs=pairs,
    )
    rows = dict(evaluation.result["generators"]) | {"mean": evaluation.result["mean"]}
    typer.echo(markdown_table(rows))
    if evaluation.result["synris"]:
        section = evaluation.result["synris"]
        typer.echo(
            f"SynRIS: AUC {section['matched']['auc']:.4f} on matched reals vs. "
            f"{section['unmatched']['auc']:.4f} on --real (gap {section['auc_gap']:+.4f})"
        )
    for path, reason in evaluation.result["errors"].items():
        typer.secho(f"skipped {path}: {reason}", fg=typer.colors.YELLOW, err=True)
    typer.echo(f"report: {evaluation.files.get('report')}")
