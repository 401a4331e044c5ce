"""Per-image cost of ``lare2`` (``benchmarks/feature_cost.py`` reads it)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ldmdetect.methods import cost
from ldmdetect.methods.family_costs import FamilyCost, method_cost_specs


def _egre(lare_channels: int = 4) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        from ldmdetect.methods.lare2.model import EGRE

        # timm resnet50_clip.openai architecture; the LaRE map has the latent's channels
        return EGRE("openclip:RN50", input_size=224, lare_channels=lare_channels)

    return build


def _egre_inputs(lare_side: int, channels: int = 4) -> cost.Inputs:
    def make(rows: int, device: torch.device, dtype: torch.dtype) -> tuple[Any, ...]:
        images = torch.randn(rows, 3, 224, 224, device=device)
        return images, torch.rand(rows, channels, lare_side, lare_side, device=device)

    return make


def lare2_pipeline(size: int) -> cost.Pipeline:
    ensemble, side = 4, size // 8  # LareConfig defaults: t=200, 4 noise draws
    egre = cost.Model("egre_clip_rn50", _egre(), generator=False)
    stages = (
        cost.Stage("vae_encode", cost.SD_VAE_MODEL.name, cost.images(size), cost.encode),
        # The ensemble's noisy latents are rows of the one UNet batch (B x 4 rows).
        cost.Stage(
            "unet", cost.SD_UNET_MODEL.name, cost.unet_inputs(side), cost.unet, rows=ensemble
        ),
        cost.Stage("text_encoder", cost.TEXT_MODEL.name, cost.tokens(), cost.call, per_image=False),
        cost.Stage("classifier", egre.name, _egre_inputs(min(224, size) // 8), cost.call),
    )
    return cost.Pipeline(
        (cost.SD_VAE_MODEL, cost.SD_UNET_MODEL, cost.TEXT_MODEL, egre),
        stages,
        "prompt embeddings are cached per distinct prompt (class-name prompts), so the text "
        "encoder is listed per prompt and left out of the image's total",
    )


def family_lare2_pipeline(family: FamilyCost, size: int) -> cost.Pipeline:
    ensemble, side, channels = 4, size // 8, family.latent_channels
    egre = cost.Model(f"egre_clip_rn50_{channels}ch", _egre(channels), generator=False)
    stages = (
        cost.Stage("vae_encode", family.vae.name, cost.images(size), cost.encode),
        family.denoiser_stage("denoiser", side, rows=ensemble),
        *family.text_stages(per_image=False),
        cost.Stage("classifier", egre.name, _egre_inputs(min(224, size) // 8, channels), cost.call),
    )
    return cost.Pipeline(
        family.models(egre),
        stages,
        f"{family.hub_id}: VAE encode, one denoiser pass on the {ensemble} noised latents "
        f"(the ensemble in one batch), EGRE on the {channels}-channel LaRE map; the prompt "
        "encoders run once per distinct prompt (cached), so they are left out of the total",
    )


LARE2_WHAT = "SD v1.5 VAE encode + one UNet pass on 4 noised latents (t=200) + EGRE on CLIP RN50"
LARE2_SIZE = "LaRE's whole-image resize (lare.image_size); EGRE's crop is min(224, size)"
LARE2_FAMILY_WHAT = "{hub_id}-sized VAE encode + one denoiser pass on 4 noised latents + EGRE"


def cost_specs() -> tuple[cost.CostSpec, ...]:
    """The method's cost specs: SD v1.5 first, then one per generator family."""
    default = cost.CostSpec("lare2", "lare2", LARE2_WHAT, LARE2_SIZE, 256, lare2_pipeline)
    return method_cost_specs(default, family_lare2_pipeline, LARE2_FAMILY_WHAT)
