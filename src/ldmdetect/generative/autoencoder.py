"""The latent diffusion autoencoder (KL VAE): every method here starts from its latents or its
reconstructions."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from diffusers import AutoencoderKL

from ldmdetect.generative.loading import (
    ComponentSource,
    default_dtype,
    load_component,
    resolve_device,
)


def resolve_autoencoder_source(
    source: str | os.PathLike | ComponentSource,
    *,
    subfolder: str | None = None,
    revision: str | None = None,
) -> ComponentSource:
    """The exact source :func:`load_autoencoder` reads, for recording in detector configs.

    A local pipeline directory (``model_index.json`` or a ``vae/`` folder) means its ``vae``
    subfolder, so users can point at the pipeline they already have. Hub ids are taken as
    given: whether a hub repo is a pipeline is unknowable offline, so pass ``subfolder="vae"``.
    """
    if isinstance(source, ComponentSource):
        if subfolder is not None or revision is not None:
            raise ValueError(
                "give subfolder/revision inside the ComponentSource or as arguments, not both"
            )
    else:
        source = ComponentSource(os.fspath(source), subfolder=subfolder, revision=revision)
    if source.subfolder is None and source.is_local:
        root = Path(source.id).expanduser()
        if (root / "model_index.json").is_file() or (root / "vae").is_dir():
            source = ComponentSource(source.id, subfolder="vae", revision=source.revision)
    return source


def load_autoencoder(
    source: str | os.PathLike | ComponentSource,
    *,
    subfolder: str | None = None,
    revision: str | None = None,
    device: str | torch.device | None = "auto",
    dtype: torch.dtype | None = None,
) -> AutoencoderKL:
    """Load a frozen ``AutoencoderKL`` (eval mode, no gradients) from a hub id or a directory.

    ``dtype`` defaults to :func:`~ldmdetect.generative.loading.default_dtype` of the device
    (float32 on CPU, bf16/fp16 on GPU). Raises ``ComponentLoadError`` with the fix when the
    source cannot be read.
    """
    device = resolve_device(device)
    return load_component(
        AutoencoderKL,
        resolve_autoencoder_source(source, subfolder=subfolder, revision=revision),
        device=device,
        dtype=dtype or default_dtype(device),
    )


def autoencoder_scale_factor(vae: AutoencoderKL) -> int:
    """Pixels per latent cell along each side (8 for SD): one downsampling per block but the
    last."""
    return 2 ** (len(vae.config.block_out_channels) - 1)
