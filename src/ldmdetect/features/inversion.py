"""DDIM inversion and re-generation through a text-conditioned LDM (FakeInversion, DIRE).

FakeInversion (Cazenavette et al., CVPR 2024) asks how the generator itself would have made an
image: the image is encoded by the VAE (posterior mean), run *backwards* through N deterministic
DDIM steps conditioned on its caption to the noise z_T that would have produced it, and then
forwards again from z_T with the same caption to z_0'. Both ends are decoded: D(z_T), the
"noise map" (structured for images the model made, since their z_T really was Gaussian noise),
and D(z_0'), the re-generation (close to the input for images on the model's manifold).

The DDIM updates are diffusers' own: ``DDIMInverseScheduler`` to invert and ``DDIMScheduler``
to sample, both built from the pipeline's scheduler config (betas, ``steps_offset``,
``set_alpha_to_one``, timestep spacing), so the two walk exactly the same noise levels in
opposite directions. Everything is deterministic (DDIM with eta 0), so a result depends only on
(image, prompt, components, config): nothing is drawn, nothing needs a seed.

``ddim_invert`` / ``ddim_sample`` also drive an unconditional pixel-space ``UNet2DModel`` (as in
ADM, DIRE's generator): pass ``embeddings=None``. A UNet that learns its variance (twice the
input's channels out, ADM's ``learn_sigma``) has its noise half used; DDIM ignores the variance.

Every generator family inverts (:func:`invert_latents` / :func:`regenerate_latents`):

- SD 1/2 and SDXL: the DDIM walks above, the UNet conditioned as its pipeline conditions it
  (SDXL: pooled text embedding and size ``time_ids`` too).
- SD3 and FLUX.1: the deterministic sampler of rectified flow is the Euler ODE solver, so the
  inversion runs the same ODE backwards, from s = 0 up to s = 1 over the pipeline's own grid of
  noise levels (:mod:`ldmdetect.generative.flow`), and the re-generation runs it forwards
  again. FLUX.1 is guidance-distilled (its guidance is an input embedding, not two passes), so
  ``guidance`` > 1 is refused for it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from diffusers import DDIMInverseScheduler, DDIMScheduler
from PIL import Image
from torch.nn import functional as F

from ldmdetect.features.knobs import Knobs
from ldmdetect.features.reconstruction import decode_latents, encode_latents
from ldmdetect.generative.autoencoder import autoencoder_scale_factor
from ldmdetect.generative.components import Conditioning, SDComponents
from ldmdetect.generative.families import refuse
from ldmdetect.generative.flow import euler_invert, euler_sample, flow_levels
from ldmdetect.io.crops import (
    AlignedViewSampling,
    center_box,
    crop,
    ensure_min_size,
    fit_short_side,
)
from ldmdetect.io.images import as_unit_float, pil_to_uint8


@dataclass(frozen=True)
class InversionConfig(Knobs):
    """FakeInversion's knobs (the paper's settings for SD v1.5).

    - ``image_size``: the center crop that is inverted (512: SD v1.5's native resolution, a
      64x64 latent).
    - ``steps``: DDIM steps of the inversion and, again, of the re-generation (50).
    - ``guidance``: classifier-free guidance scale of both walks. 1.0 (the default) runs the
      conditional UNet alone, one pass per step; above 1, each step also runs the unconditional
      prompt ``""`` and extrapolates, at twice the cost (and a less exact inversion).
    """

    image_size: int = 512
    steps: int = 50
    guidance: float = 1.0

    # guidance 1 is no guidance; below it, the walk would extrapolate away from the prompt.
    minimums: ClassVar[Mapping[str, float]] = {"image_size": 1, "steps": 1, "guidance": 1.0}


def inverse_scheduler(config: Any, steps: int, device: torch.device) -> DDIMInverseScheduler:
    """diffusers' DDIM inverse scheduler for a pipeline's scheduler ``config``, set to ``steps``."""
    scheduler = DDIMInverseScheduler.from_config(config)
    scheduler.set_timesteps(steps, device=device)
    return scheduler


def forward_scheduler(config: Any, steps: int, device: torch.device) -> DDIMScheduler:
    """diffusers' DDIM (eta 0) scheduler for a pipeline's scheduler ``config``, set to ``steps``."""
    scheduler = DDIMScheduler.from_config(config)
    scheduler.set_timesteps(steps, device=device)
    return scheduler


def _noise_prediction(
    unet: torch.nn.Module,
    latents: torch.Tensor,
    timestep: torch.Tensor,
    embeddings: torch.Tensor | None,
    unconditional: torch.Tensor | None,
    guidance: float,
) -> torch.Tensor:
    dtype = unet.dtype
    if embeddings is None:  # an unconditional UNet (UNet2DModel): no text context
        return _noise_half(unet(latents.to(dtype), timestep).sample.float(), latents)
    if guidance == 1.0 or unconditional is None:
        return unet(latents.to(dtype), timestep, encoder_hidden_states=embeddings).sample.float()
    # Classifier-free guidance: unconditional and conditional rows in one UNet pass.
    both = torch.cat([latents, latents]).to(dtype)
    context = torch.cat([unconditional.expand_as(embeddings), embeddings])
    uncond, cond = unet(both, timestep, encoder_hidden_states=context).sample.float().chunk(2)
    return uncond + guidance * (cond - uncond)


def _noise_half(prediction: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
    """The noise channels of a UNet that also predicts its variance (ADM's ``learn_sigma``:
    ``2 C`` channels out for ``C`` in, noise first); other predictions unchanged."""
    channels = latents.shape[1]
    if prediction.shape[1] == 2 * channels:
        return prediction[:, :channels]
    return prediction


#: noise (or v) prediction for a batch of latents at one scheduler timestep.
Predictor = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _unet_predictor(
    unet: torch.nn.Module,
    embeddings: torch.Tensor | None,
    guidance: float,
    unconditional: torch.Tensor | None,
    rows: int,
    device: torch.device,
) -> Predictor:
    if embeddings is None:
        if guidance != 1.0:
            raise ValueError("guidance > 1 needs prompt embeddings (a text-conditioned UNet)")
    else:
        if guidance != 1.0 and unconditional is None:
            raise ValueError("guidance > 1 needs the unconditional embedding (of the prompt '')")
        if embeddings.shape[0] != rows:
            raise ValueError(f"got {rows} latents and {embeddings.shape[0]} embeddings")
        embeddings = embeddings.to(device=device, dtype=unet.dtype)
    if unconditional is not None:
        unconditional = unconditional.to(device=device, dtype=unet.dtype)

    def predict(latents: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return _noise_prediction(unet, latents, t, embeddings, unconditional, guidance)

    return predict


def _walk(
    scheduler: DDIMScheduler | DDIMInverseScheduler, latents: torch.Tensor, predict: Predictor
) -> torch.Tensor:
    # The DDIM updates run in float32 whatever the UNet's dtype: the inversion's error
    # accumulates over the steps, and bf16 latents would dominate it.
    latents = latents.float()
    for t in scheduler.timesteps:
        latents = scheduler.step(predict(latents, t), t, latents).prev_sample
    return latents


@torch.inference_mode()
def ddim_walk(
    latents: torch.Tensor,
    embeddings: torch.Tensor | None,
    unet: torch.nn.Module,
    scheduler_config: Any,
    *,
    invert: bool,
    steps: int = 50,
    guidance: float = 1.0,
    unconditional: torch.Tensor | None = None,
) -> torch.Tensor:
    """``steps`` deterministic DDIM steps (eta 0) over latents (B, C, h, w): with ``invert``,
    scaled clean latents z_0 -> z_T (:func:`ddim_invert`), else z_T -> z_0 (:func:`ddim_sample`),
    the same noise levels walked the other way.

    ``embeddings`` (B, seq, dim) condition each row (the text encoder's hidden states, e.g.
    :meth:`SDComponents.encode_prompts`), or None for an unconditional ``UNet2DModel`` (then
    ``latents`` may be pixels in [-1, 1]); ``unconditional`` (1, seq, dim) is the embedding of
    ``""``, needed only when ``guidance`` > 1. ``scheduler_config`` is the pipeline's scheduler
    config (any SD scheduler's ``.config``). Returns float32 latents on the input's device.
    """
    make = inverse_scheduler if invert else forward_scheduler
    predict = _unet_predictor(
        unet, embeddings, guidance, unconditional, latents.shape[0], latents.device
    )
    return _walk(make(scheduler_config, steps, latents.device), latents, predict)


#: :func:`ddim_walk` backwards: scaled clean latents z_0 -> z_T.
ddim_invert = functools.partial(ddim_walk, invert=True)
#: :func:`ddim_walk` forwards: z_T -> z_0, the exact counterpart of :func:`ddim_invert`.
ddim_sample = functools.partial(ddim_walk, invert=False)


def _family_predictor(
    components: SDComponents,
    conditioning: Conditioning,
    unconditional: Conditioning | None,
    guidance: float,
) -> Predictor:
    """The family's denoiser on a batch at one timestep, with classifier-free guidance
    (unconditional and conditional rows in one pass) when ``guidance`` > 1."""

    def predict(latents: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        rows = latents.shape[0]
        timesteps = torch.as_tensor(t, device=latents.device).reshape(-1).expand(rows)
        if guidance == 1.0 or unconditional is None:
            return components.predict(latents, timesteps, conditioning)
        both = unconditional.expand(rows).cat(conditioning)
        prediction = components.predict(
            torch.cat([latents, latents]), torch.cat([timesteps, timesteps]), both
        )
        uncond, cond = prediction.chunk(2)
        return uncond + guidance * (cond - uncond)

    return predict


@torch.inference_mode()
def walk_latents(
    components: SDComponents,
    latents: torch.Tensor,
    prompts: Sequence[str],
    *,
    invert: bool,
    steps: int = 50,
    guidance: float = 1.0,
) -> torch.Tensor:
    """Any family's deterministic sampler (DDIM for SD/SDXL, the flow's Euler ODE for
    SD3/FLUX) over latents (B, C, h, w) conditioned on ``prompts``: with ``invert``, scaled
    clean latents -> the noise that would have generated them (:func:`invert_latents`, the
    sampler run backwards, from s = 0 up), else noise -> clean latents through the same levels
    (:func:`regenerate_latents`). Float32, on the input's device."""
    if components.denoiser is None or components.scheduler is None:
        raise ValueError(f"inversion needs the {components.spec.denoiser} and scheduler components")
    if guidance < 1.0:
        raise ValueError(f"guidance must be >= 1 (1 = no guidance), got {guidance}")
    if len(prompts) != latents.shape[0]:
        raise ValueError(f"got {latents.shape[0]} latents and {len(prompts)} prompts")
    if components.family == "flux" and guidance != 1.0:
        raise refuse(
            components.spec,
            "inversion",
            f"guidance {guidance} asks for classifier-free guidance, and FLUX.1 is "
            "guidance-distilled (its guidance is an input embedding); use guidance 1",
        )
    conditioning = components.condition(list(prompts))
    unconditional = components.condition([""]) if guidance != 1.0 else None
    predict = _family_predictor(components, conditioning, unconditional, guidance)
    config = components.scheduler.config
    if components.spec.flow_matching:
        height, width = latents.shape[-2:]
        levels = flow_levels(config, steps, (height // 2) * (width // 2), family=components.family)
        scale = config.num_train_timesteps

        def velocity(x: torch.Tensor, level: float) -> torch.Tensor:
            return predict(x, torch.tensor(level * scale, device=x.device))

        walk = euler_invert if invert else euler_sample
        return walk(latents, velocity, levels)
    prediction_type = config.prediction_type
    if prediction_type not in ("epsilon", "v_prediction"):
        raise ValueError(
            f"DDIM inversion needs an epsilon or v_prediction UNet, not {prediction_type!r}"
        )
    make = inverse_scheduler if invert else forward_scheduler
    return _walk(make(config, steps, latents.device), latents, predict)


#: :func:`walk_latents` backwards: scaled clean latents -> the noise that made them.
invert_latents = functools.partial(walk_latents, invert=True)
#: :func:`walk_latents` forwards: the counterpart of :func:`invert_latents`.
regenerate_latents = functools.partial(walk_latents, invert=False)


def resize_uint8(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 or [0, 1] float images (B, 3, H, W) -> uint8 (B, 3, size, size).

    Bicubic with antialiasing, rounded: the one resampler for the image *and* its decoded
    inversion maps, so the classifier sees the three aligned and treated alike.
    """
    pixels = as_unit_float(images)
    if tuple(pixels.shape[-2:]) != (size, size):
        pixels = F.interpolate(
            pixels, size=(size, size), mode="bicubic", antialias=True, align_corners=False
        )
    return (pixels.clamp(0, 1) * 255).round().to(torch.uint8)


@dataclass(frozen=True)
class InversionTransform(AlignedViewSampling):
    """Image -> the center square to invert ("image") + aligned views ("crops", "offsets",
    "flips") of it resized to ``map_size``: the CPU side of every inversion-based method
    (``fakeinversion``; ``dire`` with ``map_size == image_size``, where the resize is exact).

    The square is cut at native resolution (small images upscaled first), or, with
    ``fit_short_side``, from the image resized so its short side is ``image_size`` (ADM's
    preprocessing, which DIRE's official code uses): the whole width or height, not its middle.
    """

    image_size: int
    map_size: int
    crop: int
    fit_short_side: bool = False

    def __call__(
        self, image: Image.Image, rng: np.random.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        image = image.convert("RGB")
        if self.fit_short_side:
            image = fit_short_side(image, self.image_size)
        else:
            image = ensure_min_size(image, self.image_size)
        pixels = pil_to_uint8(crop(image, center_box(image.width, image.height, self.image_size)))
        whole = resize_uint8(pixels[None], self.map_size)[0]
        return {"image": pixels, **self.views(whole, self.crop, rng)}


def invert_and_regenerate(
    images: torch.Tensor,
    prompts: Sequence[str],
    components: SDComponents,
    config: InversionConfig,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(D(z_T), D(z_0')) of (B, 3, S, S) images: the decoded inverted noise and re-generation.

    ``images`` are uint8, or float in [0, 1], already ``config.image_size`` square (a center
    crop). ``prompts[i]`` is image i's caption; each distinct prompt is encoded once (see
    :meth:`SDComponents.condition`). The VAE encodes the batch once (posterior mean), the
    denoiser runs ``steps`` times (``2 x steps`` with guidance) on the batch to invert and as
    many to re-generate (:func:`invert_latents`, :func:`regenerate_latents`: DDIM, or the
    flow's Euler ODE), and the VAE decodes both ends in one pass. Returns two float32 CPU tensors
    in [0, 1] of the input's shape.
    """
    vae, denoiser, scheduler = components.vae, components.denoiser, components.scheduler
    if vae is None or denoiser is None or scheduler is None:
        name = components.spec.denoiser
        raise ValueError(f"invert_and_regenerate needs the vae, {name} and scheduler components")
    pixels = as_unit_float(images)
    if tuple(pixels.shape[-2:]) != (config.image_size, config.image_size):
        raise ValueError(
            f"expected {config.image_size}x{config.image_size} images (InversionConfig."
            f"image_size), got {pixels.shape[-2]}x{pixels.shape[-1]}"
        )
    batch = pixels.shape[0]
    if len(prompts) != batch:
        raise ValueError(f"got {batch} images and {len(prompts)} prompts")
    factor = autoencoder_scale_factor(vae)
    if config.image_size % factor:
        raise ValueError(
            f"image_size {config.image_size} is not a multiple of the autoencoder's "
            f"downsampling factor {factor}"
        )
    if batch == 0:
        return pixels.clone(), pixels.clone()

    with torch.inference_mode():
        z0 = encode_latents(vae, pixels.to(vae.device), sample=False)
        kwargs = {"steps": config.steps, "guidance": config.guidance}
        zt = invert_latents(components, z0, prompts, **kwargs)
        regenerated = regenerate_latents(components, zt, prompts, **kwargs)
        decoded = decode_latents(vae, torch.cat([zt, regenerated]), check_finite=False)
    if not torch.isfinite(decoded).all():
        raise FloatingPointError(
            f"the inversion produced non-finite values in {components.dtype}; load the "
            "components in float32 or bf16"
        )
    noise_image, reconstruction = decoded.cpu().chunk(2)
    return noise_image, reconstruction
