"""A tiny random pixel-space diffusion model in ``DDPMPipeline``'s on-disk layout.

DIRE's generator is pixel-space (ADM, a 256x256 unconditional UNet); its diffusers form is a
``UNet2DModel`` plus a scheduler, as ``DDPMPipeline.save_pretrained`` writes them (``unet/``,
``scheduler/``, ``model_index.json``). No such checkpoint is reachable offline, so the
pixel-space path is exercised on this one, written and loaded back through ``from_pretrained``.
"""

from __future__ import annotations

import os
from pathlib import Path

from diffusers import DDIMScheduler, DDPMPipeline, UNet2DModel

from ldmdetect.generative.tiny import _tiny_unet

TINY_PIXEL_IMAGE_SIZE = 32


def build_tiny_pixel_unet(seed: int = 0, *, learn_sigma: bool = False) -> UNet2DModel:
    """An unconditional ``UNet2DModel`` with ADM's block kinds (attention at low resolution).

    ``learn_sigma`` doubles the output channels (noise, then variance), as ADM's
    ``--learn_sigma True`` checkpoints do.
    """
    return _tiny_unet(
        UNet2DModel,
        seed,
        ("DownBlock2D", "AttnDownBlock2D"),
        sample_size=TINY_PIXEL_IMAGE_SIZE,
        in_channels=3,
        out_channels=6 if learn_sigma else 3,
        attention_head_dim=8,
    )


def build_tiny_pixel_scheduler() -> DDIMScheduler:
    """ADM's schedule: 1000 linear betas 1e-4..0.02, predicted x_0 clipped to [-1, 1]."""
    return DDIMScheduler(
        num_train_timesteps=1000,
        beta_start=0.0001,
        beta_end=0.02,
        beta_schedule="linear",
        clip_sample=True,
        set_alpha_to_one=True,
        steps_offset=0,
        prediction_type="epsilon",
    )


def write_tiny_pixel_pipeline(
    output_dir: str | os.PathLike, *, seed: int = 0, learn_sigma: bool = False
) -> Path:
    """Write a ``DDPMPipeline`` directory (``unet/`` + ``scheduler/``) of tiny random weights."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    pipeline = DDPMPipeline(
        unet=build_tiny_pixel_unet(seed, learn_sigma=learn_sigma),
        scheduler=build_tiny_pixel_scheduler(),
    )
    pipeline.save_pretrained(output_dir, safe_serialization=True)
    return output_dir
