"""Per-image cost of ``fakeinversion`` (``benchmarks/feature_cost.py`` reads it)."""

from __future__ import annotations

from torch import nn

from ldmdetect.methods import cost
from ldmdetect.methods.family_costs import FamilyCost, method_cost_specs

FAKEINVERSION_STEPS = 50  # DDIM steps each way (inversion, then re-generation)


def _fakeinversion_net() -> nn.Module:
    from ldmdetect.methods.fakeinversion.model import FakeInversionNet

    return FakeInversionNet("resnet50")


def _caption_and_classifier() -> tuple[cost.Model, cost.Model, cost.Model]:
    """The models every FakeInversion path runs besides the generator's: BLIP-2 up to its
    language model, OPT-2.7b, and the 9-channel classifier."""
    prefix = cost.Model("blip2_vision_qformer", cost.Blip2Prefix, convolutional=False)
    lm = cost.Model("blip2_opt_2.7b", cost.opt_builder("sdpa"), convolutional=False, compile=())
    classifier = cost.Model("fakeinversion_resnet50", _fakeinversion_net, generator=False)
    return prefix, lm, classifier


def _caption_stages(prefix: cost.Model, lm: cost.Model) -> tuple[cost.Stage, cost.Stage]:
    """The BLIP-2 caption: vision + Q-Former, then the greedy decode (estimated from the
    first's FLOP rate on a quick CPU run)."""
    return (
        cost.Stage("caption_vision_qformer", prefix.name, cost.images(224), cost.call),
        cost.Stage(
            "caption_language_model",
            lm.name,
            cost.caption_prefix,
            cost.greedy_caption,
            estimate_quick_cpu_from="caption_vision_qformer",
        ),
    )


def fakeinversion_pipeline(size: int) -> cost.Pipeline:
    side, steps = size // 8, FAKEINVERSION_STEPS
    prefix, lm, classifier = _caption_and_classifier()
    stages = (
        *_caption_stages(prefix, lm),
        cost.Stage("text_encoder", cost.TEXT_MODEL.name, cost.tokens(), cost.call),
        cost.Stage("vae_encode", cost.SD_VAE_MODEL.name, cost.images(size), cost.encode),
        *cost.inversion_round_trip(
            "unet_ddim",
            "regeneration",
            cost.SD_UNET_MODEL.name,
            cost.unet_inputs(side),
            cost.unet,
            steps,
        ),
        cost.Stage("vae_decode", cost.SD_VAE_MODEL.name, cost.latents(side), cost.decode, rows=2),
        cost.Stage("classifier", classifier.name, cost.images(224, 9), cost.call),
    )
    return cost.Pipeline(
        (prefix, lm, cost.TEXT_MODEL, cost.SD_VAE_MODEL, cost.SD_UNET_MODEL, classifier),
        stages,
        f"BLIP-2 OPT-2.7b caption ({cost.CAPTION_TOKENS} greedy tokens) -> DDIM inversion "
        f"({steps} steps, guidance 1) -> re-generation ({steps}) -> both ends decoded in one "
        "batch -> 9-channel ResNet-50 at 224",
    )


def family_fakeinversion_pipeline(family: FamilyCost, size: int) -> cost.Pipeline:
    side, steps, channels = size // 8, FAKEINVERSION_STEPS, family.latent_channels
    prefix, lm, classifier = _caption_and_classifier()
    stages = (
        *_caption_stages(prefix, lm),
        *family.text_stages(per_image=True),
        cost.Stage("vae_encode", family.vae.name, cost.images(size), cost.encode),
        *family.round_trip(side, steps, "regeneration"),
        cost.Stage(
            "vae_decode", family.vae.name, cost.latents(side, channels), cost.decode, rows=2
        ),
        cost.Stage("classifier", classifier.name, cost.images(224, 9), cost.call),
    )
    return cost.Pipeline(
        family.models(prefix, lm, classifier),
        stages,
        f"{family.hub_id}: BLIP-2 caption -> every text encoder on it (per image) -> "
        f"inversion ({steps} steps, guidance 1) -> re-generation ({steps}) -> both ends "
        "decoded -> 9-channel ResNet-50 at 224",
    )


def cost_specs() -> tuple[cost.CostSpec, ...]:
    """The SD v1.5 configuration first, then one per generator family (``METHOD:FAMILY``)."""
    caption = "BLIP-2 caption, "
    what = f"{caption}SD v1.5 DDIM inversion + re-generation (50 + 50), decodes, ResNet-50"
    crop = "the inverted center crop (inversion.image_size)"
    family_what = (
        f"{caption}{{hub_id}}-sized inversion + re-generation (50 + 50), decodes, ResNet-50"
    )
    default = cost.CostSpec(
        "fakeinversion", "fakeinversion", what, crop, 512, fakeinversion_pipeline
    )
    return method_cost_specs(default, family_fakeinversion_pipeline, family_what)
