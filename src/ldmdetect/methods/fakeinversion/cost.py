"""Per-image cost of ``fakeinversion`` (``benchmarks/feature_cost.py`` reads it)."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from ldmdetect.methods.cost import (
    CAPTION_TOKENS,
    SD_UNET_MODEL,
    SD_VAE_MODEL,
    TEXT_MODEL,
    Blip2Prefix,
    CostSpec,
    Model,
    Pipeline,
    Stage,
    _call,
    _decode,
    _encode,
    _greedy_caption,
    _images,
    _inversion_round_trip,
    _latent_inputs,
    _latents,
    _opt,
    _prefix,
    _tokens,
    _unet,
)
from ldmdetect.methods.family_costs import (
    FamilyCost,
    _family_models,
    _family_round_trip,
    _text_stages,
    method_cost_specs,
)

FAKEINVERSION_STEPS = 50  # DDIM steps each way (inversion, then re-generation)


def _fakeinversion_net() -> nn.Module:
    from ldmdetect.models.fakeinversion import FakeInversionNet

    return FakeInversionNet("resnet50")


def _caption_and_classifier() -> tuple[Model, Model, Model]:
    """The models every FakeInversion path runs besides the generator's: BLIP-2 up to its
    language model, OPT-2.7b, and the 9-channel classifier."""
    prefix = Model("blip2_vision_qformer", Blip2Prefix, convolutional=False)
    lm = Model("blip2_opt_2.7b", _opt("sdpa"), convolutional=False, compile=())
    classifier = Model("fakeinversion_resnet50", _fakeinversion_net, generator=False)
    return prefix, lm, classifier


def _caption_stages(prefix: Model, lm: Model) -> tuple[Stage, Stage]:
    """The BLIP-2 caption: vision + Q-Former, then the greedy decode (estimated from the
    first's FLOP rate on a quick CPU run)."""
    return (
        Stage("caption_vision_qformer", prefix.name, _images(224), _call),
        Stage(
            "caption_language_model",
            lm.name,
            _prefix,
            _greedy_caption,
            estimate_quick_cpu_from="caption_vision_qformer",
        ),
    )


def fakeinversion_pipeline(size: int) -> Pipeline:
    side, steps = size // 8, FAKEINVERSION_STEPS
    prefix, lm, classifier = _caption_and_classifier()
    stages = (
        *_caption_stages(prefix, lm),
        Stage("text_encoder", TEXT_MODEL.name, _tokens, _call),
        Stage("vae_encode", SD_VAE_MODEL.name, _images(size), _encode),
        *_inversion_round_trip(
            "unet_ddim", "regeneration", SD_UNET_MODEL.name, _latents(side), _unet, steps
        ),
        Stage("vae_decode", SD_VAE_MODEL.name, _latent_inputs(side), _decode, rows=2),
        Stage("classifier", classifier.name, _images(224, 9), _call),
    )
    return Pipeline(
        (prefix, lm, TEXT_MODEL, SD_VAE_MODEL, SD_UNET_MODEL, classifier),
        stages,
        f"BLIP-2 OPT-2.7b caption ({CAPTION_TOKENS} greedy tokens) -> DDIM inversion "
        f"({steps} steps, guidance 1) -> re-generation ({steps}) -> both ends decoded in one "
        "batch -> 9-channel ResNet-50 at 224",
    )


def family_fakeinversion_pipeline(family: FamilyCost) -> Callable[[int], Pipeline]:
    def pipeline(size: int) -> Pipeline:
        side, steps, channels = size // 8, FAKEINVERSION_STEPS, family.latent_channels
        prefix, lm, classifier = _caption_and_classifier()
        stages = (
            *_caption_stages(prefix, lm),
            *_text_stages(family, per_image=True),
            Stage("vae_encode", family.vae.name, _images(size), _encode),
            *_family_round_trip(family, side, steps, "regeneration"),
            Stage("vae_decode", family.vae.name, _latent_inputs(side, channels), _decode, rows=2),
            Stage("classifier", classifier.name, _images(224, 9), _call),
        )
        return Pipeline(
            _family_models(family, prefix, lm, classifier),
            stages,
            f"{family.hub_id}: BLIP-2 caption -> every text encoder on it (per image) -> "
            f"inversion ({steps} steps, guidance 1) -> re-generation ({steps}) -> both ends "
            "decoded -> 9-channel ResNet-50 at 224",
        )

    return pipeline


def cost_specs() -> tuple[CostSpec, ...]:
    """The SD v1.5 configuration first, then one per generator family (``METHOD:FAMILY``)."""
    caption = "BLIP-2 caption, "
    what = f"{caption}SD v1.5 DDIM inversion + re-generation (50 + 50), decodes, ResNet-50"
    crop = "the inverted center crop (inversion.image_size)"
    family_what = (
        f"{caption}{{hub_id}}-sized inversion + re-generation (50 + 50), decodes, ResNet-50"
    )
    default = CostSpec("fakeinversion", "fakeinversion", what, crop, 512, fakeinversion_pipeline)
    return method_cost_specs(default, family_fakeinversion_pipeline, family_what)
