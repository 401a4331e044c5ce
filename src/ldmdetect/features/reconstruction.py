"""Autoencoder round trips: images in [0, 1] -> scaled latents -> images in [0, 1].

The aligned-dataset method trains on (image, reconstruction) pairs, LaRE and the inversion
methods start from the scaled latents, and AEROBLADE measures the reconstruction distance;
they all go through these three functions so that scaling conventions live in one place.

Every function returns float32 on the device of its input: the VAE's placement and dtype stay
an implementation detail of the caller that loaded it.
"""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL

from ldmdetect.generative.autoencoder import autoencoder_scale_factor

# Images a hair outside [0, 1] come from resampling; anything further is a convention mix-up
# (e.g. images already in [-1, 1]) that would silently corrupt every feature.
_RANGE_TOLERANCE = 1e-3


def _check_images(vae: AutoencoderKL, images: torch.Tensor) -> None:
    channels = vae.config.in_channels
    if images.ndim != 4 or images.shape[1] != channels:
        raise ValueError(
            f"expected images of shape (B, {channels}, H, W), got {tuple(images.shape)}"
        )
    if not images.is_floating_point():
        raise TypeError(
            f"expected float images in [0, 1], got {images.dtype}; "
            "convert with images.float() / 255"
        )
    factor = autoencoder_scale_factor(vae)
    height, width = images.shape[-2:]
    if height % factor or width % factor:
        raise ValueError(
            f"image size {height}x{width} is not a multiple of the autoencoder's "
            f"downsampling factor {factor}; crop or resize to a multiple of "
            f"{factor} first"
        )
    lo, hi = images.aminmax()
    if lo < -_RANGE_TOLERANCE or hi > 1 + _RANGE_TOLERANCE:
        raise ValueError(
            f"expected images in [0, 1], got values in [{lo.item():.3g}, {hi.item():.3g}]"
        )


def _encode(
    vae: AutoencoderKL, images: torch.Tensor, sample: bool, generator: torch.Generator | None
) -> torch.Tensor:
    """Scaled latents on the VAE's device and dtype."""
    _check_images(vae, images)
    # Map to [-1, 1] in float32 before casting so that low precision only touches the model.
    x = (images.to(device=vae.device, dtype=torch.float32) * 2 - 1).to(vae.dtype)
    posterior = vae.encode(x).latent_dist
    latents = posterior.sample(generator=generator) if sample else posterior.mode()
    shift = vae.config.get("shift_factor")
    if shift is not None:
        latents = latents - shift
    return latents * vae.config.scaling_factor


def _decode(vae: AutoencoderKL, latents: torch.Tensor) -> torch.Tensor:
    """Images in [0, 1], float32, on the VAE's device."""
    latents = latents.to(device=vae.device, dtype=vae.dtype) / vae.config.scaling_factor
    shift = vae.config.get("shift_factor")
    if shift is not None:
        latents = latents + shift
    decoded = vae.decode(latents).sample.float()
    if not torch.isfinite(decoded).all():
        # SD decoders overflow in float16; NaNs would otherwise flow silently into features.
        raise FloatingPointError(
            f"the autoencoder decoded non-finite values in {vae.dtype}; "
            "load it in float32 or bfloat16"
        )
    return ((decoded + 1) / 2).clamp_(0, 1)


@torch.no_grad()
def encode_latents(
    vae: AutoencoderKL,
    images: torch.Tensor,
    *,
    sample: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """(B, 3, H, W) images in [0, 1] -> (B, C, H/f, W/f) latents scaled as the UNet expects.

    ``sample`` draws from the posterior (as SD training and LaRE do); ``sample=False`` takes
    its mean, the deterministic choice for inversion. ``generator`` makes sampling repeatable.
    """
    return _encode(vae, images, sample, generator).to(device=images.device, dtype=torch.float32)


@torch.no_grad()
def decode_latents(vae: AutoencoderKL, latents: torch.Tensor) -> torch.Tensor:
    """Scaled latents (as from :func:`encode_latents`) -> float32 images in [0, 1]."""
    return _decode(vae, latents).to(latents.device)


@torch.no_grad()
def reconstruct(
    vae: AutoencoderKL,
    images: torch.Tensor,
    *,
    sample: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The autoencoder round trip: float32 images in [0, 1], same shape and device as input."""
    return _decode(vae, _encode(vae, images, sample, generator)).to(images.device)
