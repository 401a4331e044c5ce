"""Per-image cost of ``dire`` (``benchmarks/feature_cost.py`` reads it)."""

from __future__ import annotations

from typing import Any

from ldmdetect.methods import cost
from ldmdetect.methods.family_costs import FamilyCost, method_cost_specs

# ADM's 256x256 unconditional model (guided-diffusion's 256x256_diffusion_uncond.pt, the
# generator DIRE inverts; its README flags): num_channels 256, channel_mult (1, 1, 2, 2, 4, 4)
# for 256 px, num_res_blocks 2, attention_resolutions 32,16,8 (downsampling rates 8, 16, 32:
# the three lowest levels, and the middle block), num_head_channels 64, resblock_updown
# (resnet down/upsampling), use_scale_shift_norm, learn_sigma (6 output channels). As a
# diffusers UNet2DModel this has 552.8 M parameters, as ADM's checkpoint.
ADM256_UNCOND: dict[str, Any] = {
    "sample_size": 256,
    "in_channels": 3,
    "out_channels": 6,
    "block_out_channels": (256, 256, 512, 512, 1024, 1024),
    "layers_per_block": 2,
    "down_block_types": ("ResnetDownsampleBlock2D",) * 3 + ("AttnDownBlock2D",) * 3,
    "up_block_types": ("AttnUpBlock2D",) * 3 + ("ResnetUpsampleBlock2D",) * 3,
    "downsample_type": "resnet",
    "upsample_type": "resnet",
    "resnet_time_scale_shift": "scale_shift",
    "attention_head_dim": 64,
    "norm_num_groups": 32,
    "add_attention": True,
}


DIRE_STEPS = 20  # DIRE: DDIM with 20 respaced steps, for the inversion and again to reconstruct


def dire_pipeline(size: int) -> cost.Pipeline:
    adm = cost.Model("adm256_uncond", cost.diffusers_builder("UNet2DModel", ADM256_UNCOND))
    classifier = cost.classifier("resnet50", 224)
    stages = (
        *cost.inversion_round_trip(
            "unet_ddim",
            "reconstruction",
            adm.name,
            cost.pixel_unet_inputs(size),
            cost.pixel_unet,
            DIRE_STEPS,
        ),
        cost.Stage("classifier", classifier.name, cost.images(224), cost.call),
    )
    return cost.Pipeline(
        (adm, classifier),
        stages,
        f"ADM works on pixels: {DIRE_STEPS} DDIM inversion + {DIRE_STEPS} reconstruction "
        "passes; the DIRE image |x - x'| goes to a ResNet-50 at 224",
    )


def family_dire_pipeline(family: FamilyCost, size: int) -> cost.Pipeline:
    side, channels = size // 8, family.latent_channels
    classifier = cost.classifier("resnet50", 224)
    stages = (
        cost.Stage("vae_encode", family.vae.name, cost.images(size), cost.encode),
        *family.text_stages(per_image=False),
        *family.round_trip(side, DIRE_STEPS, "reconstruction"),
        cost.Stage("vae_decode", family.vae.name, cost.latents(side, channels), cost.decode),
        cost.Stage("classifier", classifier.name, cost.images(224), cost.call),
    )
    return cost.Pipeline(
        family.models(classifier),
        stages,
        f"{family.hub_id}: VAE encode, {DIRE_STEPS} inversion + {DIRE_STEPS} "
        "reconstruction passes conditioned on the empty prompt (encoded once, cached), "
        "one decode, the DIRE image to a ResNet-50 at 224",
    )


def cost_specs() -> tuple[cost.CostSpec, ...]:
    """ADM's DIRE first, then the latent DIRE of each generator family (``dire:FAMILY``)."""
    what = f"ADM-256 unconditional: {DIRE_STEPS} + {DIRE_STEPS} DDIM passes, ResNet-50 at 224"
    default = cost.CostSpec("dire", "dire", what, "the pixel UNet's input side", 256, dire_pipeline)
    family_what = (
        f"{{hub_id}}-sized latent DIRE: {DIRE_STEPS} + {DIRE_STEPS} passes, decode, ResNet-50"
    )
    square = "the reconstructed square (dire.image_size)"
    return method_cost_specs(default, family_dire_pipeline, family_what, square)
