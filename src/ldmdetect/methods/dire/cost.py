"""Per-image cost of ``dire`` (``benchmarks/feature_cost.py`` reads it)."""

from __future__ import annotations

from typing import Any

from ldmdetect.methods.cost import (
    CostSpec,
    Model,
    Pipeline,
    Stage,
    _call,
    _classifier,
    _diffusers,
    _images,
    _pixel_unet,
    _pixels_t,
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
        Stage("unet_ddim_inversion", adm.name, _pixels_t(size), _pixel_unet, calls=DIRE_STEPS),
        Stage(
            "unet_ddim_reconstruction",
            adm.name,
            _pixels_t(size),
            _pixel_unet,
            calls=DIRE_STEPS,
            same_as="unet_ddim_inversion",
        ),
        Stage("classifier", classifier.name, _images(224), _call),
    )
    return Pipeline(
        (adm, classifier),
        stages,
        f"ADM works on pixels: {DIRE_STEPS} DDIM inversion + {DIRE_STEPS} reconstruction "
        "passes; the DIRE image |x - x'| goes to a ResNet-50 at 224",
    )


def cost_specs() -> tuple[CostSpec, ...]:
    """The method's cost specs: the default configuration first."""
    return (
        CostSpec(
            "dire",
            "dire",
            f"ADM-256 unconditional: {DIRE_STEPS} + {DIRE_STEPS} DDIM passes, ResNet-50 at 224",
            "the pixel UNet's input side",
            256,
            dire_pipeline,
        ),
    )
