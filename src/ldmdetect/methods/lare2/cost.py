"""Per-image cost of ``lare2`` (``benchmarks/feature_cost.py`` reads it)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ldmdetect.methods.cost import (
    SD_UNET_MODEL,
    SD_VAE_MODEL,
    TEXT_MODEL,
    CostSpec,
    Inputs,
    Model,
    Pipeline,
    Stage,
    _call,
    _encode,
    _images,
    _latents,
    _tokens,
    _unet,
)


def _egre() -> nn.Module:
    from ldmdetect.models.egre import EGRE

    return EGRE("openclip:RN50", input_size=224)  # timm resnet50_clip.openai architecture


def _egre_inputs(lare_side: int) -> Inputs:
    def make(rows: int, device: torch.device, dtype: torch.dtype) -> tuple[Any, ...]:
        images = torch.randn(rows, 3, 224, 224, device=device)
        return images, torch.rand(rows, 4, lare_side, lare_side, device=device)

    return make


def lare2_pipeline(size: int) -> Pipeline:
    ensemble, side = 4, size // 8  # LareConfig defaults: t=200, 4 noise draws
    egre = Model("egre_clip_rn50", _egre, generator=False)
    stages = (
        Stage("vae_encode", SD_VAE_MODEL.name, _images(size), _encode),
        # The ensemble's noisy latents are rows of the one UNet batch (B x 4 rows).
        Stage("unet", SD_UNET_MODEL.name, _latents(side), _unet, rows=ensemble),
        Stage("text_encoder", TEXT_MODEL.name, _tokens, _call, per_image=False),
        Stage("classifier", egre.name, _egre_inputs(min(224, size) // 8), _call),
    )
    return Pipeline(
        (SD_VAE_MODEL, SD_UNET_MODEL, TEXT_MODEL, egre),
        stages,
        "prompt embeddings are cached per distinct prompt (class-name prompts), so the text "
        "encoder is listed per prompt and left out of the image's total",
    )


def cost_specs() -> tuple[CostSpec, ...]:
    """The method's cost specs: the default configuration first."""
    return (
        CostSpec(
            "lare2",
            "lare2",
            "SD v1.5 VAE encode + one UNet pass on 4 noised latents (t=200) + EGRE on CLIP RN50",
            "LaRE's whole-image resize (lare.image_size); EGRE's crop is min(224, size)",
            256,
            lare2_pipeline,
        ),
    )
