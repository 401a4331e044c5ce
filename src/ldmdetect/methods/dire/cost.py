"""Per-image cost of ``dire`` (``benchmarks/feature_cost.py`` reads it)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ldmdetect.methods.cost import (
    CostSpec,
    Model,
    Pipeline,
    Stage,
    _call,
    _classifier,
    _decode,
    _diffusers,
    _encode,
    _images,
    _inversion_round_trip,
    _latent_inputs,
    _pixel_unet,
    _pixels_t,
)
from ldmdetect.methods.family_costs import (
    FamilyCost,
    _family_models,
    _family_round_trip,
    _text_stages,
    method_cost_specs,
)

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


def dire_pipeline(size: int) -> Pipeline:
    adm = Model("adm256_uncond", _diffusers("UNet2DModel", ADM256_UNCOND))
    classifier = _classifier("resnet50", 224)
    stages = (
        *_inversion_round_trip(
            "unet_ddim", "reconstruction", adm.name, _pixels_t(size), _pixel_unet, DIRE_STEPS
        ),
        Stage("classifier", classifier.name, _images(224), _call),
    )
    return Pipeline(
        (adm, classifier),
        stages,
        f"ADM works on pixels: {DIRE_STEPS} DDIM inversion + {DIRE_STEPS} reconstruction "
        "passes; the DIRE image |x - x'| goes to a ResNet-50 at 224",
    )


def family_dire_pipeline(family: FamilyCost) -> Callable[[int], Pipeline]:
    def pipeline(size: int) -> Pipeline:
        side, channels = size // 8, family.latent_channels
        classifier = _classifier("resnet50", 224)
        stages = (
            Stage("vae_encode", family.vae.name, _images(size), _encode),
            *_text_stages(family, per_image=False),
            *_family_round_trip(family, side, DIRE_STEPS, "reconstruction"),
            Stage("vae_decode", family.vae.name, _latent_inputs(side, channels), _decode),
            Stage("classifier", classifier.name, _images(224), _call),
        )
        return Pipeline(
            _family_models(family, classifier),
            stages,
            f"{family.hub_id}: VAE encode, {DIRE_STEPS} inversion + {DIRE_STEPS} "
            "reconstruction passes conditioned on the empty prompt (encoded once, cached), "
            "one decode, the DIRE image to a ResNet-50 at 224",
        )

    return pipeline


def cost_specs() -> tuple[CostSpec, ...]:
    """ADM's DIRE first, then the latent DIRE of each generator family (``dire:FAMILY``)."""
    what = f"ADM-256 unconditional: {DIRE_STEPS} + {DIRE_STEPS} DDIM passes, ResNet-50 at 224"
    default = CostSpec("dire", "dire", what, "the pixel UNet's input side", 256, dire_pipeline)
    family_what = (
        f"{{hub_id}}-sized latent DIRE: {DIRE_STEPS} + {DIRE_STEPS} passes, decode, ResNet-50"
    )
    square = "the reconstructed square (dire.image_size)"
    return method_cost_specs(default, family_dire_pipeline, family_what, square)
