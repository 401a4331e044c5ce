"""AEROBLADE's reconstructions: one image through several LDM autoencoders.

AEROBLADE (Ricker et al., CVPR 2024) calls an image generated when some latent diffusion
autoencoder reconstructs it unusually well. Its official code passes each image through the
autoencoders of Stable Diffusion 1, Stable Diffusion 2 and Kandinsky 2.1 (a KL VAE sample
from the posterior; the MoVQ decoder without re-quantising), stores the reconstructions as
8-bit images, and measures an LPIPS distance to each (see :mod:`ldmdetect.models.lpips`).

Autoencoders are named by hub id or local directory. A pipeline (``model_index.json``, or a
Kandinsky repo) means its ``vae`` or ``movq`` subfolder; which diffusers class loads a folder
(``AutoencoderKL`` or ``VQModel``) is read from its config.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, VQModel

from ldmdetect.features.reconstruction import from_vae_output, reconstruct, to_vae_input
from ldmdetect.generative.autoencoder import autoencoder_scale_factor
from ldmdetect.generative.loading import (
    ComponentSource,
    load_component,
)

# The official defaults (scripts/run_aeroblade.py): SD1, SD2 and Kandinsky 2.1. The SD1 VAE is
# the same in v1-1 .. v1-5 and the SD2 VAE the same in 2-base .. 2-1.
DEFAULT_AUTOENCODERS: tuple[str, ...] = (
    "CompVis/stable-diffusion-v1-1",
    "stabilityai/stable-diffusion-2-base",
    "kandinsky-community/kandinsky-2-1",
)

Autoencoder = AutoencoderKL | VQModel


def autoencoder_source(entry: str | os.PathLike | Mapping[str, Any]) -> ComponentSource:
    """One entry of the autoencoder list -> the exact component source to load.

    A dict is taken as given (``{"id", "subfolder", "revision"}``). A local pipeline directory
    means its ``vae`` (else ``movq``) subfolder; a folder with its own ``config.json`` is the
    autoencoder itself. A hub id means ``movq`` for Kandinsky repos, else ``vae`` (hub repos
    cannot be inspected offline; pass a dict to say otherwise).
    """
    if isinstance(entry, Mapping):
        return ComponentSource.from_dict(dict(entry))
    source = ComponentSource(os.fspath(entry))
    if source.is_local:
        root = Path(source.id).expanduser()
        if (root / "config.json").is_file() and not (root / "model_index.json").is_file():
            return source
        for sub in ("vae", "movq"):
            if (root / sub / "config.json").is_file():
                return ComponentSource(source.id, subfolder=sub)
        reason = (
            "neither an autoencoder folder (config.json) nor a pipeline with a vae/ or movq/ "
            "subfolder"
            if root.is_dir()
            else "no such directory"
        )
        raise source.error("an autoencoder", reason)
    subfolder = "movq" if "kandinsky" in source.id.lower() else "vae"
    return ComponentSource(source.id, subfolder=subfolder)


def autoencoder_name(source: Mapping[str, Any]) -> str:
    """A short label for attribution: the folder or repo name, plus the subfolder."""
    name = Path(str(source["id"]).rstrip("/")).name or str(source["id"])
    return f"{name}/{source['subfolder']}" if source.get("subfolder") else name


def _autoencoder_class(source: ComponentSource) -> type:
    try:
        config = AutoencoderKL.load_config(source.location, **source.hub_kwargs())
    except (OSError, ValueError) as err:
        raise source.error("the autoencoder config", err) from err
    return VQModel if config.get("_class_name") == "VQModel" else AutoencoderKL


def load_autoencoders(
    sources: Sequence[Mapping[str, Any]],
    *,
    device: torch.device,
    dtype: torch.dtype | None = None,
) -> list[Autoencoder]:
    """Load every autoencoder (frozen, eval mode) from its recorded source."""
    loaded = []
    for recorded in sources:
        source = ComponentSource.from_dict(dict(recorded))
        cls = _autoencoder_class(source)
        loaded.append(load_component(cls, source, device=device, dtype=dtype))
    return loaded


def scale_factor(ae: Autoencoder) -> int:
    """Pixels per latent cell: one downsampling per encoder block but the last."""
    return autoencoder_scale_factor(ae)  # the same config field for KL and VQ models


def image_generators(ids: Sequence[str], seed: int, device: torch.device) -> list[torch.Generator]:
    """One generator per image, seeded by its content id: a reconstruction does not depend on
    the batch the image came in, so reruns and cached features agree."""
    out = []
    for key in ids:
        digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
        out.append(torch.Generator(device=device).manual_seed(int.from_bytes(digest[:8], "big")))
    return out


@torch.no_grad()
def reconstruct_any(
    ae: Autoencoder, images: torch.Tensor, generators: Sequence[torch.Generator] | None = None
) -> torch.Tensor:
    """Float images (B, 3, H, W) in [0, 1] -> their reconstructions, float32 in [0, 1].

    KL VAEs decode a posterior sample (as AEROBLADE does), drawn from one generator per image;
    VQ models (Kandinsky's MoVQ) decode the encoder's output without quantising it, as
    AEROBLADE's code does (``force_not_quantize=True``).
    """
    if isinstance(ae, VQModel):
        latents = ae.encode(to_vae_input(ae, images)).latents
        decoded = ae.decode(latents, force_not_quantize=True).sample
        return from_vae_output(decoded).to(images.device)
    generator = list(generators) if generators is not None else None
    return reconstruct(ae, images, sample=True, generator=generator)  # type: ignore[arg-type]


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[0, 1] floats -> uint8, rounded: reconstructions are stored as 8-bit images, as
    AEROBLADE stores them (PNG), so a cached and a fresh one are the same."""
    return (images * 255).round_().clamp_(0, 255).to(torch.uint8)


def reconstructions(
    autoencoders: Sequence[Autoencoder],
    images: torch.Tensor,
    ids: Sequence[str],
    *,
    seed: int = 1,
) -> torch.Tensor:
    """uint8 images (B, 3, H, W) -> uint8 reconstructions (B, K, 3, H, W), one per autoencoder."""
    x = images.float() / 255
    out = []
    for ae in autoencoders:
        gens = image_generators(ids, seed, ae.device)
        out.append(to_uint8(reconstruct_any(ae, x, gens)).cpu())
    return torch.stack(out, dim=1)
