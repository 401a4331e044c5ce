"""Generators: ``ldmdetect generate`` (fake images from a pipeline) and ``ldmdetect zoo``
(tiny random pipelines for tests, the shipped mini LDM and mini flow model)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ldmdetect.cli.common import (
    ConfigDefaults,
    Device,
    PipelineOutput,
    command,
    user_errors,
)

commands = typer.Typer()
zoo_app = typer.Typer(
    help="Write generator components (tiny test models, ...).", no_args_is_help=True
)


@zoo_app.command("tiny")
@user_errors
def zoo_tiny(
    output: PipelineOutput,
    seed: int = 0,
    family: Annotated[str, typer.Option(help="Generator family: sd, sdxl, sd3 or flux.")] = "sd",
) -> None:
    """Write a tiny random pipeline of a generator family (for tests, demos, smoke runs)."""
    from ldmdetect.generative.tiny import write_tiny_family_pipeline

    path = write_tiny_family_pipeline(output, family, seed=seed)
    typer.echo(f"wrote tiny {family} pipeline to {path}")


def _copy_shipped(source: Path, output: Path, name: str) -> None:
    """Copy a pipeline shipped inside the package to ``output`` (merged into what is there)."""
    import shutil

    path = Path(shutil.copytree(source, output, dirs_exist_ok=True))
    typer.echo(f"wrote {name} pipeline to {path}")


@zoo_app.command("mini")
@user_errors
def zoo_mini(
    output: PipelineOutput,
) -> None:
    """Copy the shipped mini LDM (a small trained SD-format pipeline) to a directory.

    To retrain it, run ``python recipes/mini_ldm/train.py --output DIR`` from a source checkout.
    """
    from ldmdetect.generative.mini import mini_ldm_dir

    _copy_shipped(mini_ldm_dir(), output, "mini LDM")


@zoo_app.command("mini-flow")
@user_errors
def zoo_mini_flow(
    output: PipelineOutput,
) -> None:
    """Copy the shipped mini flow model (a small trained SD3-format pipeline) to a directory.

    To retrain it, run ``python recipes/mini_flow/train.py --output DIR`` from a source checkout.
    """
    from ldmdetect.generative.mini import mini_flow_dir

    _copy_shipped(mini_flow_dir(), output, "mini flow")


@command(
    commands,
    ConfigDefaults(
        "ldmdetect.generative.sampling:generate_images",
        "size",
        "steps",
        "batch_size",
        guidance="guidance_scale",
    )
    | ConfigDefaults("ldmdetect.generative.sampling:load_pipeline", "device"),
)
def generate(
    pipeline: Annotated[
        str, typer.Option(help="SD, SDXL, SD3 or FLUX.1 pipeline: hub id or local directory.")
    ],
    output: Annotated[Path, typer.Option(help="Folder for the PNGs and prompts.csv.")],
    prompt: Annotated[list[str], typer.Option(help="Repeatable; prompts are used in turn.")],
    count: Annotated[int, typer.Option(help="Number of images.")] = 16,
    seed: Annotated[int, typer.Option(help="Image i uses seed + i.")] = 0,
    size: int | None = None,
    steps: int | None = None,
    guidance: float | None = None,
    batch_size: int | None = None,
    device: Device = None,
) -> None:
    """Generate a set of fake images (e.g. a test set) with an SD/SDXL/SD3/FLUX pipeline."""
    from ldmdetect.generative.sampling import load_pipeline, write_generated

    pipe = load_pipeline(pipeline, device=device)
    prompts = [prompt[i % len(prompt)] for i in range(count)]
    seeds = [seed + i for i in range(count)]
    paths = write_generated(
        pipe,
        prompts,
        seeds,
        output,
        size=size,
        steps=steps,
        guidance_scale=guidance,
        batch_size=batch_size,
    )
    typer.echo(f"{len(paths)} images in {output}")
