"""Per-image cost of ``aeroblade`` (``benchmarks/feature_cost.py`` reads it)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ldmdetect.methods import cost
from ldmdetect.methods.family_costs import FamilyCost, method_cost_specs

# kandinsky-community/kandinsky-2-1 movq/config.json (MoVQ: spatially normalised decoder).
KANDINSKY21_MOVQ: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 4,
    "down_block_types": ("DownEncoderBlock2D",) * 3 + ("AttnDownEncoderBlock2D",),
    "up_block_types": ("AttnUpDecoderBlock2D",) + ("UpDecoderBlock2D",) * 3,
    "num_vq_embeddings": 16384,
    "block_out_channels": (128, 256, 256, 512),
    "vq_embed_dim": 4,
    "layers_per_block": 2,
    "norm_type": "spatial",
}


AEROBLADE_AUTOENCODERS = ("sd1_vae", "sd2_vae", "kandinsky21_movq")


def _movq_roundtrip(movq: nn.Module, x: torch.Tensor) -> torch.Tensor:
    latents = movq.encode(x).latents  # AEROBLADE decodes MoVQ latents without re-quantising
    return movq.decode(latents, force_not_quantize=True).sample


def _lpips() -> nn.Module:
    from ldmdetect.models.lpips import LPIPSMap

    return LPIPSMap(2, pretrained=False)  # AEROBLADE's default layer (VGG16 relu2_2)


def _lpips_inputs(size: int, candidates: int) -> cost.Inputs:
    def make(rows: int, device: torch.device, dtype: torch.dtype) -> tuple[Any, ...]:
        # rows = (1 + candidates) per image: the view and its reconstructions share one pass
        n = rows // (1 + candidates)
        a = torch.rand(n, 3, size, size, device=device)
        return a, torch.rand(n, candidates, 3, size, size, device=device)

    return make


def aeroblade_pipeline(size: int) -> cost.Pipeline:
    movq = cost.Model(
        "kandinsky21_movq",
        cost.diffusers_builder("VQModel", KANDINSKY21_MOVQ),
        compile=("encoder", "decoder"),
    )
    lpips = cost.Model("lpips_vgg16_layer2", _lpips, generator=False)
    k = len(AEROBLADE_AUTOENCODERS)
    stages = (
        cost.Stage(
            "sd1_vae_roundtrip", cost.SD_VAE_MODEL.name, cost.images(size), cost.vae_roundtrip
        ),
        cost.Stage(
            "sd2_vae_roundtrip",
            cost.SD_VAE_MODEL.name,
            cost.images(size),
            cost.vae_roundtrip,
            same_as="sd1_vae_roundtrip",
        ),
        cost.Stage("kandinsky21_movq_roundtrip", movq.name, cost.images(size), _movq_roundtrip),
        cost.Stage("lpips", lpips.name, _lpips_inputs(size, k), cost.call, rows=1 + k),
    )
    return cost.Pipeline(
        (cost.SD_VAE_MODEL, movq, lpips),
        stages,
        "three autoencoder round trips (SD1 and SD2 VAEs share one architecture, so SD2's "
        "time is SD1's) and one LPIPS pass over the view and its three reconstructions",
    )


def family_aeroblade_pipeline(family: FamilyCost, size: int) -> cost.Pipeline:
    lpips = cost.Model("lpips_vgg16_layer2", _lpips, generator=False)
    stages = (
        cost.Stage("vae_roundtrip", family.vae.name, cost.images(size), cost.vae_roundtrip),
        cost.Stage("lpips", lpips.name, _lpips_inputs(size, 1), cost.call, rows=2),
    )
    return cost.Pipeline(
        (family.vae, lpips),
        stages,
        f"{family.hub_id}'s autoencoder alone: one round trip (also what `ldmdetect "
        "reconstruct` spends per `ae` training image) and LPIPS over the view and its "
        "reconstruction",
    )


def cost_specs() -> tuple[cost.CostSpec, ...]:
    """AEROBLADE's three autoencoders first, then each generator family's own (one each)."""
    lpips = "LPIPS VGG16 (layer 2)"
    return method_cost_specs(
        cost.CostSpec(
            "aeroblade",
            "aeroblade",
            f"SD1, SD2 and Kandinsky 2.1 autoencoder round trips + {lpips}",
            "the view (input_size)",
            512,
            aeroblade_pipeline,
        ),
        family_aeroblade_pipeline,
        "{hub_id}-sized autoencoder round trip + " + lpips,
    )
