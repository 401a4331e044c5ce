"""LaRE: the latent reconstruction error of an LDM's UNet (LaRE^2, Luo et al., CVPR 2024).

An image is resized whole to a fixed square, encoded by the generator's VAE, noised to a fixed
timestep with ``e`` independent noise draws, and denoised by ONE UNet forward pass conditioned
on a prompt. The feature is the squared error between the predicted and the true noise (or
velocity, for v-prediction models), averaged over the ``e`` draws: a (C, H/f, W/f) map per
image. Images the LDM generated sit closer to its learned manifold, so their error is lower.
One forward pass instead of DIRE's dozens of sampling steps is the point of the method.

Every generator family (see :mod:`ldmdetect.generative.families`) has its LaRE:

- SD 1/2 and SDXL (DDPM): ``scheduler.add_noise`` at ``timestep``, error against the noise
  (or the velocity of a v-prediction UNet); SDXL's UNet also gets its pooled text embedding
  and size ``time_ids``.
- SD3 and FLUX.1 (rectified flow): the noise level is s = timestep / 1000,
  x_s = (1 - s) x_0 + s e, and the error is against the velocity e - x_0 the transformer is
  trained to predict; FLUX's latents are packed 2x2 for the pass and its prediction unpacked,
  so every map has the latent grid and the family's latent channels (16).

Everything here is a pure function of (image, prompt, seed, components, config): each image's
random draws come from its own generator seeded with its own seed, so a map never depends on
the batch the image ran in, and reruns are bit-identical.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
from PIL import Image

from ldmdetect.features.knobs import Knobs
from ldmdetect.features.reconstruction import scale_latents, to_vae_input
from ldmdetect.generative.autoencoder import autoencoder_scale_factor
from ldmdetect.generative.components import SDComponents
from ldmdetect.generative.flow import flow_noise, flow_velocity
from ldmdetect.io.images import as_unit_float, pil_to_uint8


@dataclass(frozen=True)
class LareConfig(Knobs):
    """LaRE's knobs; every default is the official extraction script's (``extract_lare.sh``).

    - ``image_size``: the whole image is resized (bicubic, no crop) to this square; official
      256 for SD v1.5 (a 32x32 latent).
    - ``timestep``: the single noise level, out of the scheduler's 1000 training steps;
      official 200 (the paper sweeps it; low-noise steps keep the image's content). For the
      flow families it is 1000 s: 200 means x_s = 0.8 x_0 + 0.2 e.
    - ``ensemble``: noise draws per image, averaged; official 4.
    - ``sample_posterior``: encode with a sample of the VAE posterior (official, as in SD
      training) rather than its mean. The sample is drawn once per image and shared by the
      ensemble members, as officially.
    - ``seed``: mixed into every image's seed (see :func:`image_seed`); the official code uses
      the unseeded global generator, so 0 is ours.
    """

    image_size: int = 256
    timestep: int = 200
    ensemble: int = 4
    sample_posterior: bool = True
    seed: int = 0

    minimums: ClassVar[Mapping[str, float]] = {"image_size": 1, "ensemble": 1, "timestep": 0}


def image_seed(image_id: str, seed: int = 0) -> int:
    """A 63-bit seed for one image, the same in every process and on every machine.

    Python's ``hash()`` of a string changes per process (PYTHONHASHSEED), which would make
    features of the same image differ between a cache-building run and a scan.
    """
    digest = hashlib.sha256(f"{int(seed)}\0{image_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def resize_for_lare(image: Image.Image, size: int) -> torch.Tensor:
    """The whole image as a uint8 (3, size, size) tensor: bicubic resize, no crop.

    This is the official preprocessing (PIL ``resize`` to 256x256, bicubic by default): the
    aspect ratio is not kept, so the UNet sees all of the image at the size it works best at.
    """
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    resized = image.convert("RGB").resize((size, size), Image.Resampling.BICUBIC)
    return pil_to_uint8(resized)


def _as_unit_float(images: torch.Tensor, size: int) -> torch.Tensor:
    pixels = as_unit_float(images)
    if tuple(pixels.shape[-2:]) != (size, size):
        raise ValueError(
            f"expected {size}x{size} images (LareConfig.image_size), got "
            f"{pixels.shape[-2]}x{pixels.shape[-1]}; resize with resize_for_lare first"
        )
    return pixels


@torch.inference_mode()
def lare_maps(
    images: torch.Tensor,
    prompts: Sequence[str],
    seeds: Sequence[int],
    components: SDComponents,
    config: LareConfig,
) -> torch.Tensor:
    """LaRE maps, float32 (B, C_latent, S/f, S/f) on the CPU, of (B, 3, S, S) images.

    ``images`` are uint8, or float in [0, 1], already ``config.image_size`` square (see
    :func:`resize_for_lare`). ``prompts[i]`` conditions image i ("a photo of a {class}", a
    caption, or ""); ``seeds[i]`` (e.g. :func:`image_seed`) seeds image i's generator, which
    draws on the CPU, in this order, the posterior noise (C, h, w) and then the ensemble noise
    (e, C, h, w). The draws do not depend on ``sample_posterior``, so toggling it changes the
    latent only.

    The VAE runs once on the batch and the denoiser once on all B x e noisy latents, in the
    components' dtype; noising and the error are computed in float32. The target is the noise,
    or for ``prediction_type == "v_prediction"`` the velocity ``scheduler.get_velocity``; for
    the flow families the velocity e - x_0 at level s = timestep / 1000.
    """
    vae, denoiser, scheduler = components.vae, components.denoiser, components.scheduler
    if vae is None or denoiser is None or scheduler is None:
        name = components.spec.denoiser
        raise ValueError(f"lare_maps needs the vae, {name} and scheduler components")
    pixels = _as_unit_float(images, config.image_size)
    batch = pixels.shape[0]
    if len(prompts) != batch or len(seeds) != batch:
        raise ValueError(f"got {batch} images, {len(prompts)} prompts and {len(seeds)} seeds")
    num_steps = scheduler.config.num_train_timesteps
    if config.timestep >= num_steps:
        raise ValueError(f"timestep {config.timestep} is outside the scheduler's {num_steps}")
    flow = components.spec.flow_matching
    prediction_type = None if flow else scheduler.config.prediction_type
    if not flow and prediction_type not in ("epsilon", "v_prediction"):
        raise ValueError(
            f"LaRE needs an epsilon or v_prediction UNet, the scheduler says {prediction_type!r}"
        )
    factor = autoencoder_scale_factor(vae)
    if config.image_size % factor:
        raise ValueError(
            f"image_size {config.image_size} is not a multiple of the autoencoder's "
            f"downsampling factor {factor}"
        )
    channels, side = vae.config.latent_channels, config.image_size // factor
    if components.family == "flux" and side % 2:
        raise ValueError(
            f"FLUX packs 2x2 latent cells: image_size {config.image_size} must be a multiple "
            f"of {2 * factor}"
        )
    ensemble = config.ensemble
    if batch == 0:
        return torch.empty(0, channels, side, side)

    posterior_noise, ensemble_noise = [], []
    for seed in seeds:
        generator = torch.Generator("cpu").manual_seed(int(seed))
        posterior_noise.append(torch.randn(channels, side, side, generator=generator))
        ensemble_noise.append(torch.randn(ensemble, channels, side, side, generator=generator))
    device, dtype = components.device, components.dtype

    # Scaled latents, as SD training computes them, in float32.
    posterior = vae.encode(to_vae_input(vae, pixels)).latent_dist
    latents = posterior.mean.float()
    if config.sample_posterior:
        latents = latents + posterior.std.float() * torch.stack(posterior_noise).to(device)
    latents = scale_latents(vae, latents)

    # Image-major: rows i*e .. i*e + e - 1 are image i's ensemble members.
    latents = latents.repeat_interleave(ensemble, dim=0)
    noise = torch.cat(ensemble_noise).to(device)
    if flow:
        level = config.timestep / num_steps
        noisy = flow_noise(latents, noise, level)
        target = flow_velocity(latents, noise)
        timesteps = torch.full((batch * ensemble,), level * num_steps, device=device)
    else:
        timesteps = torch.full(
            (batch * ensemble,), config.timestep, dtype=torch.long, device=device
        )
        noisy = scheduler.add_noise(latents, noise, timesteps)
        if prediction_type == "v_prediction":
            target = scheduler.get_velocity(latents, noise, timesteps)
        else:
            target = noise

    conditioning = components.condition(prompts).repeat_interleave(ensemble)
    prediction = components.predict(noisy, timesteps, conditioning)
    error = (prediction - target).square()
    if not torch.isfinite(error).all():
        raise FloatingPointError(
            f"LaRE produced non-finite values in {dtype}; load the components in float32 or bf16"
        )
    maps = error.view(batch, ensemble, channels, side, side).mean(dim=1)
    return maps.cpu()
