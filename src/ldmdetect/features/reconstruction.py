"""Autoencoder round trips: images in [0, 1] -> scaled latents -> images in [0, 1].

The aligned-dataset method trains on (image, reconstruction) pairs, LaRE and the inversion
methods start from the scaled latents, and AEROBLADE measures the reconstruction distance;
they all go through these functions (or the four conventions under them: `to_vae_input`,
`from_vae_output`, `scale_latents`, `unscale_latents`) so that scaling lives in one place.

Every function returns float32 on the device of its input: the VAE's placement and dtype stay
an implementation detail of the caller that loaded it.
"""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL, ModelMixin

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


def to_vae_input(ae: ModelMixin, images: torch.Tensor) -> torch.Tensor:
    """Images in [0, 1] -> the autoencoder's input: [-1, 1] on its device, in its dtype.

    Mapped in float32 before the cast, so that low precision only touches the model.
    """
    return (images.to(device=ae.device, dtype=torch.float32) * 2 - 1).to(ae.dtype)


def from_vae_output(decoded: torch.Tensor) -> torch.Tensor:
    """The autoencoder's decoded [-1, 1] images -> float32 images in [0, 1] (clamped)."""
    return ((decoded.float() + 1) / 2).clamp_(0, 1)


def _shift(vae: AutoencoderKL) -> float:
    shift = vae.config.get("shift_factor")
    return 0.0 if shift is None else float(shift)


def scale_latents(vae: AutoencoderKL, z: torch.Tensor) -> torch.Tensor:
    """Autoencoder latents ``z`` -> the latents a UNet works on: ``(z - shift) * scaling``.

    ``scaling_factor`` and ``shift_factor`` come from the VAE's config; the shift is 0 (no
    ``shift_factor``) for SD 1/2 and SDXL and set for SD3 and FLUX. Computed in ``z``'s dtype,
    so the caller decides whether it runs in the VAE's precision or in float32.
    """
    shift = _shift(vae)
    if shift:
        z = z - shift
    return z * vae.config.scaling_factor


def unscale_latents(vae: AutoencoderKL, latents: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`scale_latents`, ``latents / scaling + shift``: the decoder's
    input, in ``latents``' dtype."""
    z = latents / vae.config.scaling_factor
    shift = _shift(vae)
    return z + shift if shift else z


def _encode(
    vae: AutoencoderKL, images: torch.Tensor, sample: bool, generator: torch.Generator | None
) -> torch.Tensor:
    """Scaled latents, float32, on the VAE's device."""
    _check_images(vae, images)
    posterior = vae.encode(to_vae_input(vae, images)).latent_dist
    latents = posterior.sample(generator=generator) if sample else posterior.mode()
    return scale_latents(vae, latents.float())  # scaled in float32, whatever the VAE's dtype


def _decode(vae: AutoencoderKL, latents: torch.Tensor, check_finite: bool = True) -> torch.Tensor:
    """Images in [0, 1], float32, on the VAE's device."""
    z = unscale_latents(vae, latents.to(device=vae.device, dtype=torch.float32))
    decoded = vae.decode(z.to(vae.dtype)).sample.float()
    if check_finite and not torch.isfinite(decoded).all():
        # SD decoders overflow in float16; NaNs would otherwise flow silently into features.
        raise FloatingPointError(
            f"the autoencoder decoded non-finite values in {vae.dtype}; "
            "load it in float32 or bfloat16"
        )
    return from_vae_output(decoded)


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
def decode_latents(
    vae: AutoencoderKL, latents: torch.Tensor, *, check_finite: bool = True
) -> torch.Tensor:
    """Scaled latents (as from :func:`encode_latents`) -> float32 images in [0, 1].

    A non-finite result raises, naming the autoencoder's dtype; ``check_finite=False`` leaves
    it to a caller that knows better where it came from (latents a UNet walked, in inversion).
    """
    return _decode(vae, latents, check_finite).to(latents.device)


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
