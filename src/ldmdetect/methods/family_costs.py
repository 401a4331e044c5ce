"""The modern generator families, SDXL, SD3.5-medium and FLUX.1-dev, as cost-spec parts: their
denoisers, text encoders and autoencoders at the published sizes, and how
``SDComponents.predict`` drives each denoiser.

Every generator-backed method (lare2, fakeinversion, dire, aeroblade) lays its per-image path
out on each family too: its ``cost.py`` builds a ``METHOD:FAMILY`` spec per entry of
:data:`FAMILY_COSTS` from the pieces here, at :data:`FAMILY_SIZES`. The architectures are
written out from each pipeline's config.json with random weights, so nothing is downloaded;
on the meta device their FLOPs are free, while a CPU does not hold FLUX.1-dev's float32
weights, so these specs are FLOPs only there (``CostSpec.time_cpu``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ldmdetect.methods import cost

# The families (``generative.families``), from each pipeline's published
# config.json files (non-default values; each dict names its hub id and subfolder).
# stabilityai/stable-diffusion-xl-base-1.0 unet/config.json: 2.57 B parameters.
SDXL_UNET: dict[str, Any] = {
    "sample_size": 128,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    "block_out_channels": (320, 640, 1280),
    "layers_per_block": 2,
    "attention_head_dim": (5, 10, 20),
    "transformer_layers_per_block": (1, 2, 10),
    "cross_attention_dim": 2048,
    "use_linear_projection": True,
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": 256,
    "projection_class_embeddings_input_dim": 2816,
    "norm_num_groups": 32,
}
# stabilityai/stable-diffusion-xl-base-1.0 vae/config.json has SD_VAE's architecture (only
# its scaling factor, 0.13025, differs), so SDXL's autoencoder costs what SD's does.
# stabilityai/stable-diffusion-xl-base-1.0 text_encoder_2/config.json (OpenCLIP ViT-bigG/14's
# text tower); SD3.5's text_encoder_2 is the same model. Its text_encoder is SD15_TEXT_ENCODER.
CLIP_BIGG_TEXT_ENCODER: dict[str, Any] = {
    "vocab_size": 49408,
    "hidden_size": 1280,
    "intermediate_size": 5120,
    "num_hidden_layers": 32,
    "num_attention_heads": 20,
    "max_position_embeddings": 77,
    "hidden_act": "gelu",
    "projection_dim": 1280,
}
# stabilityai/stable-diffusion-3.5-medium transformer/config.json (MMDiT-X): 2.24 B parameters.
SD35_MEDIUM_TRANSFORMER: dict[str, Any] = {
    "sample_size": 128,
    "patch_size": 2,
    "in_channels": 16,
    "out_channels": 16,
    "num_layers": 24,
    "attention_head_dim": 64,
    "num_attention_heads": 24,
    "joint_attention_dim": 4096,
    "caption_projection_dim": 1536,
    "pooled_projection_dim": 2048,
    "pos_embed_max_size": 384,
    "dual_attention_layers": tuple(range(13)),
    "qk_norm": "rms_norm",
}
# black-forest-labs/FLUX.1-dev transformer/config.json: 11.9 B parameters.
FLUX1_DEV_TRANSFORMER: dict[str, Any] = {
    "patch_size": 1,
    "in_channels": 64,
    "num_layers": 19,
    "num_single_layers": 38,
    "attention_head_dim": 128,
    "num_attention_heads": 24,
    "joint_attention_dim": 4096,
    "pooled_projection_dim": 768,
    "guidance_embeds": True,
    "axes_dims_rope": (16, 56, 56),
}
# stabilityai/stable-diffusion-3.5-medium vae/config.json and black-forest-labs/FLUX.1-dev
# vae/config.json: one architecture, 16 latent channels and no quant convs (their scaling and
# shift factors, 1.5305 / 0.0609 and 0.3611 / 0.1159, cost nothing).
FLOW_VAE: dict[str, Any] = {
    **{key: value for key, value in cost.SD_VAE.items() if key != "scaling_factor"},
    "latent_channels": 16,
    "sample_size": 1024,
    "use_quant_conv": False,
    "use_post_quant_conv": False,
}
# google/t5-v1_1-xxl's encoder: stable-diffusion-3.5-medium text_encoder_3/config.json and
# FLUX.1-dev text_encoder_2/config.json. 4.76 B parameters.
T5_XXL_ENCODER: dict[str, Any] = {
    "vocab_size": 32128,
    "d_model": 4096,
    "d_kv": 64,
    "d_ff": 10240,
    "num_layers": 24,
    "num_heads": 64,
    "feed_forward_proj": "gated-gelu",
    "relative_attention_num_buckets": 32,
    "relative_attention_max_distance": 128,
}
#: the T5 prompt lengths the pipelines pad to (``Family.text_length``)
SD3_T5_TOKENS, FLUX_T5_TOKENS = 256, 512
#: FLUX.1-dev's guidance embedding value (``generative.components.FLUX_GUIDANCE``)
FLUX_GUIDANCE = 3.5
FAMILY_SIZES = (512, 1024)  # SDXL, SD3.5 and FLUX.1 generate at 1024 px natively


def _clip_text(config: dict[str, Any], projection: bool) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

        cls = CLIPTextModelWithProjection if projection else CLIPTextModel
        return cls(CLIPTextConfig(**config))

    return build


def _t5_encoder() -> nn.Module:
    from transformers import T5Config, T5EncoderModel

    return T5EncoderModel(T5Config(**T5_XXL_ENCODER))


def _sdxl_inputs(side: int) -> cost.Inputs:
    """A UNet call as ``SDComponents.predict`` makes it for SDXL: both CLIP encoders' tokens
    side by side (768 + 1280), the pooled ``text_embeds`` and the six ``time_ids``."""

    def make(rows: int, device: torch.device, dtype: torch.dtype) -> tuple[Any, ...]:
        x = torch.randn(rows, 4, side, side, device=device, dtype=dtype)
        t = torch.full((rows,), 200, device=device, dtype=torch.long)
        context = torch.randn(rows, cost.CLIP_TOKENS, 2048, device=device, dtype=dtype)
        pooled = torch.randn(rows, 1280, device=device, dtype=dtype)
        return x, t, context, pooled, torch.randn(rows, 6, device=device, dtype=dtype)

    return make


def _sdxl_unet(
    unet: nn.Module, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor, *added: torch.Tensor
) -> torch.Tensor:
    kwargs = {"text_embeds": added[0], "time_ids": added[1]}
    return unet(x, t, encoder_hidden_states=context, added_cond_kwargs=kwargs).sample


def _sd3_inputs(side: int) -> cost.Inputs:
    """SD3's call: 16-channel latents, the 77 CLIP tokens then the 256 T5 tokens (4096
    wide), both CLIP pooled embeddings (768 + 1280), the timestep 1000 s."""

    def make(rows: int, device: torch.device, dtype: torch.dtype) -> tuple[Any, ...]:
        x = torch.randn(rows, 16, side, side, device=device, dtype=dtype)
        t = torch.full((rows,), 200.0, device=device, dtype=dtype)
        tokens = cost.CLIP_TOKENS + SD3_T5_TOKENS
        context = torch.randn(rows, tokens, 4096, device=device, dtype=dtype)
        return x, t, context, torch.randn(rows, 2048, device=device, dtype=dtype)

    return make


def _sd3_transformer(
    model: nn.Module, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor, pooled: torch.Tensor
) -> torch.Tensor:
    return model(
        hidden_states=x, timestep=t, encoder_hidden_states=context, pooled_projections=pooled
    ).sample


def _flux_inputs(side: int) -> cost.Inputs:
    """FLUX's call: the 16-channel latents packed into 2x2 patches (64 values per token),
    the 512 T5 tokens, CLIP's pooled 768, the level s, the guidance embedding's value and
    the text and image position ids."""

    def make(rows: int, device: torch.device, dtype: torch.dtype) -> tuple[Any, ...]:
        n = (side // 2) ** 2
        x = torch.randn(rows, n, 64, device=device, dtype=dtype)
        t = torch.full((rows,), 0.2, device=device, dtype=dtype)
        guidance = torch.full((rows,), FLUX_GUIDANCE, device=device, dtype=torch.float32)
        pooled = torch.randn(rows, 768, device=device, dtype=dtype)
        context = torch.randn(rows, FLUX_T5_TOKENS, 4096, device=device, dtype=dtype)
        txt_ids = torch.zeros(FLUX_T5_TOKENS, 3, device=device, dtype=dtype)
        img_ids = torch.zeros(n, 3, device=device, dtype=dtype)
        return x, t, guidance, pooled, context, txt_ids, img_ids

    return make


def _flux_transformer(model: nn.Module, x: torch.Tensor, *rest: torch.Tensor) -> torch.Tensor:
    t, guidance, pooled, context, txt_ids, img_ids = rest
    return model(
        hidden_states=x,
        timestep=t,
        guidance=guidance,
        pooled_projections=pooled,
        encoder_hidden_states=context,
        txt_ids=txt_ids,
        img_ids=img_ids,
    ).sample


@dataclass(frozen=True)
class FamilyCost:
    """One generator family at a published model's size: the models its methods run and
    how its denoiser is called (as ``SDComponents.predict`` calls it)."""

    name: str  # the cost specs' suffix: lare2:<name> ...
    hub_id: str
    denoiser: cost.Model
    #: latent side -> the denoiser's call arguments
    denoiser_inputs: Callable[[int], cost.Inputs]
    run: Callable[..., Any]
    vae: cost.Model
    latent_channels: int
    #: every text encoder the family's conditioning runs, with its prompt length in tokens
    text_encoders: tuple[tuple[cost.Model, int], ...]

    def models(self, *extra: cost.Model) -> tuple[cost.Model, ...]:
        """The family's models (autoencoder, denoiser, text encoders), then a method's own."""
        text = tuple(model for model, _ in self.text_encoders)
        return (self.vae, self.denoiser, *text, *extra)

    def text_stages(self, *, per_image: bool) -> tuple[cost.Stage, ...]:
        """One stage per text encoder on a prompt; ``per_image`` False where the method
        encodes each distinct prompt once and caches it."""
        return tuple(
            cost.Stage(
                f"text_{model.name}",
                model.name,
                cost.tokens(length),
                cost.call,
                per_image=per_image,
            )
            for model, length in self.text_encoders
        )

    def denoiser_stage(self, name: str, side: int, **kwargs: Any) -> cost.Stage:
        """One denoiser call on latents at ``side``; ``kwargs`` are :class:`cost.Stage`'s."""
        return cost.Stage(name, self.denoiser.name, self.denoiser_inputs(side), self.run, **kwargs)

    def round_trip(self, side: int, steps: int, back: str) -> tuple[cost.Stage, cost.Stage]:
        """The denoiser's DDIM inversion and walk back (:func:`cost.inversion_round_trip`)."""
        inputs = self.denoiser_inputs(side)
        return cost.inversion_round_trip(
            "denoiser", back, self.denoiser.name, inputs, self.run, steps
        )


SD_FAMILY_VAE = cost.Model(
    "sdxl_vae", cost.diffusers_builder("AutoencoderKL", cost.SD_VAE), compile=("encoder", "decoder")
)
FLOW_VAE_MODEL = cost.Model(
    "flow_vae_16ch",
    cost.diffusers_builder("AutoencoderKL", FLOW_VAE),
    compile=("encoder", "decoder"),
)
CLIP_BIGG = cost.Model(
    "clip_bigg_text_encoder", _clip_text(CLIP_BIGG_TEXT_ENCODER, True), convolutional=False
)
T5_XXL = cost.Model("t5_xxl_encoder", _t5_encoder, convolutional=False)
FAMILY_COSTS: tuple[FamilyCost, ...] = (
    FamilyCost(
        "sdxl",
        "stabilityai/stable-diffusion-xl-base-1.0",
        cost.Model("sdxl_unet", cost.diffusers_builder("UNet2DConditionModel", SDXL_UNET)),
        _sdxl_inputs,
        _sdxl_unet,
        SD_FAMILY_VAE,
        4,
        ((cost.TEXT_MODEL, cost.CLIP_TOKENS), (CLIP_BIGG, cost.CLIP_TOKENS)),
    ),
    FamilyCost(
        "sd3.5-medium",
        "stabilityai/stable-diffusion-3.5-medium",
        cost.Model(
            "sd35_medium_transformer",
            cost.diffusers_builder("SD3Transformer2DModel", SD35_MEDIUM_TRANSFORMER),
            convolutional=False,
        ),
        _sd3_inputs,
        _sd3_transformer,
        FLOW_VAE_MODEL,
        16,
        (
            (
                cost.Model(
                    "clip_l_text_encoder_projection",
                    _clip_text(cost.SD15_TEXT_ENCODER, True),
                    convolutional=False,
                ),
                cost.CLIP_TOKENS,
            ),
            (CLIP_BIGG, cost.CLIP_TOKENS),
            (T5_XXL, SD3_T5_TOKENS),
        ),
    ),
    FamilyCost(
        "flux.1-dev",
        "black-forest-labs/FLUX.1-dev",
        cost.Model(
            "flux1_dev_transformer",
            cost.diffusers_builder("FluxTransformer2DModel", FLUX1_DEV_TRANSFORMER),
            convolutional=False,
        ),
        _flux_inputs,
        _flux_transformer,
        FLOW_VAE_MODEL,
        16,
        ((cost.TEXT_MODEL, cost.CLIP_TOKENS), (T5_XXL, FLUX_T5_TOKENS)),
    ),
)


def method_cost_specs(
    default: cost.CostSpec,
    family_pipeline: Callable[[FamilyCost, int], cost.Pipeline],
    family_what: str,
    family_size_means: str | None = None,
) -> tuple[cost.CostSpec, ...]:
    """A generator-backed method's cost specs: its ``default`` configuration first, then
    ``METHOD:FAMILY`` per entry of :data:`FAMILY_COSTS`, so every such method lays its path out
    on the same families the same way. ``family_pipeline(family, size)`` lays the method's
    stages out on one family at a working size. ``family_what`` is formatted with the family's
    ``hub_id``; the family specs keep the default's working size and (unless
    ``family_size_means`` is given) its meaning, run at the families' sizes and are FLOPs
    only on a CPU (FLUX.1-dev alone needs 48 GB in float32)."""
    families = tuple(
        cost.CostSpec(
            f"{default.method}:{family.name}",
            default.method,
            family_what.format(hub_id=family.hub_id),
            default.size_means if family_size_means is None else family_size_means,
            default.default_size,
            functools.partial(family_pipeline, family),
            sizes=FAMILY_SIZES,
            time_cpu=False,
        )
        for family in FAMILY_COSTS
    )
    return (default, *families)
