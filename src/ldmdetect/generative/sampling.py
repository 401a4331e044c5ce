"""Generate images with a Stable-Diffusion-format pipeline: the fakes of a test set.

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
from diffusers import StableDiffusionPipeline
from PIL import Image

from ldmdetect.generative.loading import ComponentSource, load_component
from ldmdetect.io.files import atomic_write_text
from ldmdetect.io.images import save_png

PROMPTS_NAME = "prompts.csv"


def load_pipeline(
    source: str | os.PathLike | ComponentSource,
    *,
    device: str | torch.device | None = "auto",
    dtype: torch.dtype | None = None,
) -> StableDiffusionPipeline:
    """A ``StableDiffusionPipeline`` from a hub id or a local directory, ready to sample."""
    if not isinstance(source, ComponentSource):
        source = ComponentSource(str(source))
    return load_component(StableDiffusionPipeline, source, device=device, dtype=dtype)


@torch.inference_mode()
def generate_images(
    pipeline: StableDiffusionPipeline,
    prompts: Sequence[str],
    seeds: Sequence[int],
    *,
    size: int = 64,
    steps: int = 25,
    guidance_scale: float = 1.0,
    batch_size: int = 8,
) -> list[Image.Image]:
    """One image per (prompt, seed) pair, ``size`` x ``size`` pixels."""
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
    pipeline: StableDiffusionPipeline,
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
