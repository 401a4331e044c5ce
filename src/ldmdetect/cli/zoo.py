"""Generators: ``ldmdetect generate`` (fake images from a pipeline) and ``ldmdetect zoo``
(tiny random pipelines for tests, the shipped mini LDM and mini flow model)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from ldmdetect.cli.common import ConfigDefaults, command, user_errors
from ldmdetect.cli.options import BatchSize, Device, PipelineOutput

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


#: The pipelines shipped in the package, by ``zoo`` command: (name, what it is, the
#: ``ldmdetect.generative.mini`` function that locates it, its training recipe).
SHIPPED = {
    "mini": ("mini LDM", "a small trained SD-format pipeline", "mini_ldm_dir", "mini_ldm"),
    "mini-flow": (
        "mini flow",
        "a small trained SD3-format pipeline",
        "mini_flow_dir",
        "mini_flow",
    ),
}


def _copy_shipped_command(name: str, what: str, locate: str, recipe: str) -> Callable:
    """A ``zoo`` command that copies one shipped pipeline to ``--output`` (merged into what is
    there)."""

    def copy(output: PipelineOutput) -> None:
        import shutil

        from ldmdetect.generative import mini

        path = Path(shutil.copytree(getattr(mini, locate)(), output, dirs_exist_ok=True))
        typer.echo(f"wrote {name} pipeline to {path}")

    copy.__doc__ = (
        f"Copy the shipped {name} ({what}) to a directory.\n\nTo retrain it, run "
        f"``python recipes/{recipe}/train.py --output DIR`` from a source checkout."
    )
    return user_errors(copy)


for _command, _shipped in SHIPPED.items():
    zoo_app.command(_command)(_copy_shipped_command(*_shipped))


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
    batch_size: BatchSize = None,
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
