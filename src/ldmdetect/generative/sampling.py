"""Generate images with a generator pipeline of any family (SD 1/2, SDXL, SD3, FLUX.1): the
fakes of a test set. Each family runs through its own diffusers pipeline class.

Each image has its own seeded generator, so an image depends only on (prompt, seed), never on
which batch it was made in: a test set can be regenerated, extended or resumed exactly.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from diffusers import DiffusionPipeline
from PIL import Image

from ldmdetect.generative.families import pipeline_family
from ldmdetect.generative.loading import ComponentSource, load_component
from ldmdetect.io.files import atomic_write_text
from ldmdetect.io.images import save_png

PROMPTS_NAME = "prompts.csv"


def load_pipeline(
    source: str | os.PathLike | ComponentSource,
    *,
    device: str | torch.device | None = "auto",
    dtype: torch.dtype | None = None,
) -> DiffusionPipeline:
    """The family's pipeline (``StableDiffusionPipeline``, ``StableDiffusionXLPipeline``,
    ``StableDiffusion3Pipeline`` or ``FluxPipeline``, from ``model_index.json``) from a hub id
    or a local directory, ready to sample. Other pipeline classes are refused."""
    if not isinstance(source, ComponentSource):
        source = ComponentSource(str(source))
    family = pipeline_family(source.id, revision=source.revision)
    return load_component(family.pipeline_class(), source, device=device, dtype=dtype)


@torch.inference_mode()
def generate_images(
    pipeline: DiffusionPipeline,
    prompts: Sequence[str],
    seeds: Sequence[int],
    *,
    size: int = 64,
    steps: int = 25,
    guidance_scale: float = 1.0,
    batch_size: int = 8,
) -> list[Image.Image]:
    """One image per (prompt, seed) pair, ``size`` x ``size`` pixels.

    ``guidance_scale`` is the pipeline's own: classifier-free guidance for SD, SDXL and SD3
    (1 = off), the distilled guidance embedding's value for FLUX.1-dev.
    """
    if len(prompts) != len(seeds):
        raise ValueError(f"got {len(prompts)} prompts but {len(seeds)} seeds")
    images: list[Image.Image] = []
    for start in range(0, len(prompts), batch_size):
        batch = slice(start, start + batch_size)
        generators = [
            torch.Generator(pipeline.device).manual_seed(int(seed)) for seed in seeds[batch]
        ]
        out = pipeline(
            prompt=list(prompts[batch]),
            height=size,
            width=size,
            num_inference_steps=steps,
            guidance_scale=guidance_scale,
            generator=generators,
            output_type="pil",
        )
        images.extend(out.images)
    return images


def write_generated(
    pipeline: DiffusionPipeline,
    prompts: Sequence[str],
    seeds: Sequence[int],
    output: str | os.PathLike,
    **kwargs,
) -> list[Path]:
    """Generate into ``output`` as lossless PNG plus ``prompts.csv``; existing files are kept."""
    output = Path(output)
    paths = [output / f"{i:05d}_seed{seed}.png" for i, seed in enumerate(seeds)]
    todo = [i for i, path in enumerate(paths) if not path.is_file()]
    images = generate_images(
        pipeline, [prompts[i] for i in todo], [seeds[i] for i in todo], **kwargs
    )
    for i, image in zip(todo, images, strict=True):
        save_png(image, paths[i])
    table = io.StringIO(newline="")
    writer = csv.writer(table)
    writer.writerow(["path", "prompt", "seed"])
    writer.writerows(
        (p.name, prompt, seed) for p, prompt, seed in zip(paths, prompts, seeds, strict=True)
    )
    atomic_write_text(output / PROMPTS_NAME, table.getvalue())
    return paths
