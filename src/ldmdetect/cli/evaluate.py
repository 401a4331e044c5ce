"""``ldmdetect evaluate``: metrics per generator, robustness rows, the report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ldmdetect.cli.common import ConfigDefaults, command, num_workers
from ldmdetect.cli.options import BatchSize, DetectorSource, Device, PipelineOverride, Workers

commands = typer.Typer()


@command(
    commands,
    ConfigDefaults(
        "ldmdetect.engine.evaluate:evaluate",
        "format_control",
        "tries",
        "batch_size",
        "cross_check",
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
    batch_size: BatchSize = None,
    device: Device = None,
    workers: Workers = None,
    pipeline: PipelineOverride = None,
    pairs: Annotated[
        Path | None,
        typer.Option(help="SynRIS pairs.csv: AUC on the matched reals next to --real's."),
    ] = None,
    family: Annotated[
        list[str] | None,
        typer.Option(
            help="Family head: SET=FAMILY, the true family of the --fake folder named SET "
            "(folders named like one of the detector's families need none; a family it does "
            "not know is right when called unknown). Repeatable."
        ),
    ] = None,
    cross_check: Annotated[
        bool | None,
        typer.Option(
            "--cross-check/--no-cross-check",
            help="Family head: a training-free judge's (AEROBLADE's) nearest autoencoder per "
            "attributed image, over the autoencoders of the detector's training data, and its "
            "agreement with the head.",
        ),
    ] = None,
) -> None:
    """Metrics per generator and averaged; robustness rows; writes metrics.json + report.

    A detector with a family head also reports attribution: a confusion matrix of true family
    against the family it named (with `unknown` and `real` columns), accuracy per family, in
    report.md and attribution_confusion.png.
    """
    from ldmdetect.detector import Detector
    from ldmdetect.engine.evaluate import evaluate as run_evaluate
    from ldmdetect.engine.report import markdown_table

    model = Detector.from_pretrained(detector, device=device, pipeline=pipeline)
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
        families=_family_map(family or []),
        cross_check=cross_check,
    )
    typer.echo(markdown_table(evaluation.headline().rows()))
    synris = evaluation.synris
    if synris:
        typer.echo(
            f"SynRIS: AUC {synris.matched['auc']:.4f} on matched reals vs. "
            f"{synris.unmatched['auc']:.4f} on --real (gap {synris.auc_gap:+.4f})"
        )
    if evaluation.attribution:
        for line in attribution_lines(evaluation.attribution):
            typer.echo(line)
    for path, reason in evaluation.errors.items():
        typer.secho(f"skipped {path}: {reason}", fg=typer.colors.YELLOW, err=True)
    typer.echo(f"report: {evaluation.files.get('report')}")


def _family_map(specs: list[str]) -> dict[str, str]:
    """``--family SET=FAMILY`` options -> {set: family}; a malformed or repeated one is a
    usage error naming it."""
    found: dict[str, str] = {}
    for spec in specs:
        name, sep, family = spec.rpartition("=")
        if not sep or not name or not family:
            raise typer.BadParameter(f"{spec!r}: expected SET=FAMILY", param_hint="--family")
        if name in found and found[name] != family:
            raise typer.BadParameter(
                f"{name!r} is given two families ({found[name]}, {family})", param_hint="--family"
            )
        found[name] = family
    return found


def attribution_lines(section: dict) -> list[str]:
    """What the terminal shows of the attribution section: the accuracy line (overall, over
    generated images, per row), sets left out, and the cross-check."""
    if section.get("accuracy") is None:
        return [f"attribution: {section.get('note') or 'no image could be attributed'}"]
    per_row = ", ".join(f"{r} {a:.1%}" for r, a in section["accuracy_per_family"].items())
    lines = [
        f"attribution accuracy {section['accuracy']:.1%} over {section['n']} images"
        + (
            f" ({section['accuracy_generated']:.1%} of {section['n_generated']} generated)"
            if section.get("accuracy_generated") is not None
            else ""
        )
        + f"; per family: {per_row}"
    ]
    if section.get("left_out"):
        lines.append(
            "attribution leaves out (no family known; --family SET=FAMILY): "
            + ", ".join(section["left_out"])
        )
    cross = section.get("cross_check")
    if cross and cross.get("error"):
        lines.append(f"cross-check not run: {cross['error']}")
    elif cross:
        rate = cross["agreement"]["rate"]
        accuracy = cross["judge_accuracy"]
        lines.append(
            f"{cross['judge']} cross-check: agrees with the family head on "
            + (f"{rate:.1%}" if rate is not None else "none")
            + f" of {cross['agreement']['n']} images where both name a family; "
            + "its own accuracy "
            + (f"{accuracy:.1%}" if accuracy is not None else "n/a")
        )
    return lines
