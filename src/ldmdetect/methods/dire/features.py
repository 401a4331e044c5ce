"""DIRE, the DIffusion Reconstruction Error (Wang et al., ICCV 2023).

An image is walked back to noise by DDIM inversion and forward again by DDIM sampling through a
diffusion model; DIRE is the pixel-wise ``|x - x'|`` between the image and that reconstruction.
The premise: a diffusion model reconstructs images from its own output distribution more
faithfully than real photos, so generated images have darker DIRE maps.

Two kinds of generator, one DDIM implementation (:mod:`ldmdetect.features.inversion`):

- **pixel space** (the paper's: ADM at 256x256, unconditional): a ``UNet2DModel`` and its
  scheduler, e.g. a directory written by ``DDPMPipeline.save_pretrained``. The image in
  [-1, 1] is inverted and reconstructed directly.
- **latent space** (an LDM of any family: SD 1/2, SDXL, SD3, FLUX.1): the VAE's posterior
  mean is inverted and reconstructed with the empty prompt ``""`` (the unconditional walk),
  decoded, and compared with the image in pixel space, so DIRE also holds the autoencoder's
  reconstruction error. SD/SDXL walk DDIM; SD3/FLUX walk the flow's Euler ODE backwards and
  forwards (:func:`~ldmdetect.features.inversion.invert_latents`).

DDIM with eta 0 draws nothing, so a map depends only on (image, components, config): not on
its batch, and not on a seed. Maps are float32 in [0, 1] here; :func:`quantize_dire` turns
them into the uint8 the detector caches (see :mod:`ldmdetect.methods.dire`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from diffusers import DDPMScheduler, UNet2DConditionModel, UNet2DModel

from ldmdetect.features.inversion import (
    ddim_invert,
    ddim_sample,
    invert_latents,
    regenerate_latents,
)
from ldmdetect.features.knobs import Knobs
from ldmdetect.features.reconstruction import decode_latents, encode_latents
from ldmdetect.generative.autoencoder import autoencoder_scale_factor
from ldmdetect.generative.components import SDComponents, load_sd_components_from
from ldmdetect.generative.loading import (
    ComponentLoadError,
    ComponentSource,
    load_component,
    resolve_device,
)
from ldmdetect.io.images import as_unit_float

#: Components each kind of generator needs (``model_index.json`` names).
PIXEL_COMPONENTS: tuple[str, ...] = ("unet", "scheduler")
LATENT_COMPONENTS: tuple[str, ...] = ("vae", "unet", "text_encoder", "tokenizer", "scheduler")
SPACES = ("auto", "pixel", "latent")


@dataclass(frozen=True)
class DireConfig(Knobs):
    """DIRE's knobs (the paper's settings for ADM).

    - ``image_size``: the square that is reconstructed (256: ADM's resolution; the DIRE map
      has this size too).
    - ``steps``: DDIM steps of the inversion and, again, of the reconstruction (20: the
      paper's ``timestep_respacing ddim20``).
    - ``fit_short_side``: resize each image so its short side is ``image_size`` before the
      center square is cut, as the official code does (ADM's ``center_crop_arr``: box halving,
      then bicubic). False cuts the square at native resolution, the habit of the other
      methods here, which keeps the generator's pixel traces a resize would blur.
    """

    image_size: int = 256
    steps: int = 20
    fit_short_side: bool = True

    minimums: ClassVar[Mapping[str, float]] = {"image_size": 1, "steps": 1}


def generator_space(sources: Mapping[str, Mapping[str, Any]]) -> str:
    """ "latent" for a flow transformer (SD3, FLUX), else the UNet's :func:`unet_space`."""
    if "transformer" in sources:
        return "latent"
    if "unet" not in sources:
        raise ValueError("DIRE needs a denoiser: the unet or transformer component")
    return unet_space(sources["unet"])


def space_sources(
    sources: Mapping[str, Mapping[str, Any]], space: str
) -> dict[str, Mapping[str, Any]]:
    """The recorded sources a ``space`` needs: the unet and scheduler for pixel space; for
    latent space every recorded component (a family's second and third text encoders too)."""
    if space == "pixel":
        return {k: v for k, v in sources.items() if k in PIXEL_COMPONENTS}
    return dict(sources)


def unet_space(source: Mapping[str, Any]) -> str:
    """ "pixel" for a ``UNet2DModel``, "latent" for a ``UNet2DConditionModel``, read from the
    UNet's config at ``source`` (a ComponentSource dict) without loading its weights."""
    component = ComponentSource.from_dict(dict(source))
    try:
        config = UNet2DModel.load_config(
            os.path.expanduser(component.id) if component.is_local else component.id,
            subfolder=component.subfolder,
            revision=component.revision,
        )
    except (OSError, ValueError) as err:
        raise ComponentLoadError(f"cannot read the UNet config from {component}: {err}") from err
    name = config.get("_class_name")
    if name == UNet2DModel.__name__:
        return "pixel"
    if name == UNet2DConditionModel.__name__:
        return "latent"
    raise ComponentLoadError(
        f"DIRE drives a UNet2DModel (pixel space) or a UNet2DConditionModel (an LDM); the UNet "
        f"at {component} is a {name}"
    )


def space_components(space: str) -> tuple[str, ...]:
    """The component names a ``"pixel"`` or ``"latent"`` generator needs."""
    if space == "pixel":
        return PIXEL_COMPONENTS
    if space == "latent":
        return LATENT_COMPONENTS
    raise ValueError(f"space must be 'pixel' or 'latent' here, not {space!r}")


def load_dire_components(
    sources: Mapping[str, Mapping[str, Any]],
    *,
    device: str | torch.device | None = "auto",
    dtype: torch.dtype | None = None,
) -> SDComponents:
    """Load a DIRE generator from its recorded sources ({name: ComponentSource dict}).

    A pixel-space UNet (``UNet2DModel``) comes back with its scheduler alone (``vae`` None);
    an LDM's UNet with the VAE, text encoder and tokenizer (for the empty prompt) through
    :func:`~ldmdetect.generative.components.load_sd_components_from`. The scheduler is the
    pipeline's own config loaded into a ``DDPMScheduler``; only its config (betas, offsets,
    clipping, prediction type) is used, to build the DDIM walks.
    """
    if "scheduler" not in sources:
        raise ValueError("DIRE needs at least the unet and scheduler components")
    space = generator_space(sources)
    if space == "latent":
        missing = [n for n in ("vae", "text_encoder", "tokenizer") if n not in sources]
        if missing:
            raise ValueError(f"DIRE through an LDM needs the {', '.join(missing)} components")
        return load_sd_components_from(sources, device=device, dtype=dtype)
    device = resolve_device(device)
    components = SDComponents()
    for name, cls in (("unet", UNet2DModel), ("scheduler", DDPMScheduler)):
        source = ComponentSource.from_dict(dict(sources[name]))
        setattr(components, name, load_component(cls, source, device=device, dtype=dtype))
        components.sources[name] = source.to_dict()
    return components


def _check_scheduler(components: SDComponents) -> None:
    if components.denoiser is None or components.scheduler is None:
        raise ValueError("DIRE needs the unet and scheduler components")
    if components.spec.flow_matching:
        return
    prediction_type = components.scheduler.config.prediction_type
    if prediction_type not in ("epsilon", "v_prediction"):
        raise ValueError(
            f"DDIM inversion needs an epsilon or v_prediction UNet, not {prediction_type!r}"
        )


def reconstruct(images: torch.Tensor, components: SDComponents, config: DireConfig) -> torch.Tensor:
    """DDIM inversion then DDIM reconstruction of (B, 3, S, S) images, S = ``image_size``.

    ``images`` are uint8 or float in [0, 1]. Pixel space (no ``vae``): the images in [-1, 1]
    are walked through the ``UNet2DModel`` unconditionally. Latent space: the VAE posterior
    mean is walked with the empty prompt (one text-encoder pass, cached) and decoded.
    The UNet runs ``2 x steps`` times on the batch. Returns float32 CPU images in [0, 1].
    """
    _check_scheduler(components)
    pixels = as_unit_float(images)
    side = config.image_size
    if tuple(pixels.shape[-2:]) != (side, side):
        raise ValueError(
            f"expected {side}x{side} images (DireConfig.image_size), "
            f"got {pixels.shape[-2]}x{pixels.shape[-1]}"
        )
    if pixels.shape[0] == 0:
        return pixels.clone()
    unet, scheduler_config = components.denoiser, components.scheduler.config
    with torch.inference_mode():
        if components.vae is None:
            if isinstance(unet, UNet2DModel) and (
                unet.config.num_class_embeds or unet.config.class_embed_type
            ):
                raise ValueError(
                    "DIRE runs unconditional UNets; this UNet2DModel is class-conditional"
                )
            x = pixels.to(unet.device) * 2 - 1
            x0 = ddim_invert(x, None, unet, scheduler_config, steps=config.steps)
            x0 = ddim_sample(x0, None, unet, scheduler_config, steps=config.steps)
            out = ((x0 + 1) / 2).clamp(0, 1)
        else:
            factor = autoencoder_scale_factor(components.vae)
            if side % factor:
                raise ValueError(
                    f"image_size {side} is not a multiple of the autoencoder's downsampling "
                    f"factor {factor}"
                )
            prompts = [""] * pixels.shape[0]
            z0 = encode_latents(components.vae, pixels.to(components.vae.device), sample=False)
            zt = invert_latents(components, z0, prompts, steps=config.steps)
            z0 = regenerate_latents(components, zt, prompts, steps=config.steps)
            out = decode_latents(components.vae, z0, check_finite=False)
    if not torch.isfinite(out).all():
        raise FloatingPointError(
            f"the DIRE reconstruction has non-finite values in {unet.dtype}; load the "
            "components in float32 or bf16"
        )
    return out.cpu()


def dire_maps(images: torch.Tensor, components: SDComponents, config: DireConfig) -> torch.Tensor:
    """DIRE ``|x - reconstruct(x)|`` of (B, 3, S, S) images: float32 CPU, in [0, 1] per
    channel (the paper's map, before its quantisation to 8 bits)."""
    reconstruction = reconstruct(images, components, config)
    return (as_unit_float(images).cpu() - reconstruction).abs()


def quantize_dire(maps: torch.Tensor) -> torch.Tensor:
    """Float DIRE maps in [0, 1] -> uint8, ``round(255 d)``: one fixed scale for every image
    (no per-image normalisation), as the paper's 8-bit maps, but rounded rather than
    truncated so that quantisation does not bias the maps darker."""
    return (maps.float().clamp(0, 1) * 255).round().to(torch.uint8)
