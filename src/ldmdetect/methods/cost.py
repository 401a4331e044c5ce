"""What a method costs per image, stage by stage: the types a method package's cost spec is
written in, and the full-size architectures several methods share.

A method's ``cost.py`` lays out the stages its feature step and classifier run per image
(VAE encode, UNet passes, decodes, captioning, the classifier), each on a full-size
architecture written out from the published configs with random weights: cost depends on the
architecture only, so nothing is downloaded. ``benchmarks/feature_cost.py`` counts their FLOPs
and times them; :meth:`ldmdetect.methods.Method.cost_specs` is how it finds them.

The public names here are the building blocks those modules share (``from ldmdetect.methods
import cost``, then ``cost.Stage(...)``, ``cost.images(size)``): model builders, stage inputs
(``Inputs``: rows, device, dtype -> a call's arguments) and the calls that run a model on them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

# runwayml/stable-diffusion-v1-5 unet/config.json (non-default values).
SD15_UNET: dict[str, Any] = {
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    "up_block_types": ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    "block_out_channels": (320, 640, 1280, 1280),
    "layers_per_block": 2,
    "attention_head_dim": 8,
    "cross_attention_dim": 768,
    "norm_num_groups": 32,
}


# runwayml/stable-diffusion-v1-5 vae/config.json. The SD 2.x VAE (stable-diffusion-2-base,
# 2-1) has the same architecture, so AEROBLADE's SD1 and SD2 autoencoders cost the same.
SD_VAE: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "block_out_channels": (128, 256, 512, 512),
    "layers_per_block": 2,
    "latent_channels": 4,
    "norm_num_groups": 32,
    "sample_size": 512,
    "scaling_factor": 0.18215,
}


# openai/clip-vit-large-patch14 text tower, SD v1's text encoder.
SD15_TEXT_ENCODER: dict[str, Any] = {
    "vocab_size": 49408,
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "max_position_embeddings": 77,
    "hidden_act": "quick_gelu",
    "projection_dim": 768,
}


# facebook/opt-2.7b config.json: BLIP-2 OPT-2.7b's language model.
OPT_2_7B: dict[str, Any] = {
    "vocab_size": 50272,
    "hidden_size": 2560,
    "num_hidden_layers": 32,
    "ffn_dim": 10240,
    "num_attention_heads": 32,
    "word_embed_proj_dim": 2560,
    "max_position_embeddings": 2048,
}


BLIP2_QUERY_TOKENS = 32  # the Q-Former's learned queries, prepended to the language model's input


CAPTION_TOKENS = 20  # greedy caption length


CLIP_TOKENS = 77  # the CLIP text encoders' prompt length


def diffusers_builder(cls_name: str, config: dict[str, Any]) -> Callable[[], nn.Module]:
    """Builds the diffusers model ``cls_name`` from ``config`` when called (random weights)."""

    def build() -> nn.Module:
        import diffusers

        return getattr(diffusers, cls_name)(**config)

    return build


def _text_encoder() -> nn.Module:
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(CLIPTextConfig(**SD15_TEXT_ENCODER))


def _blip2_config():
    from transformers import Blip2Config, OPTConfig

    # Blip2Config's vision and Q-Former defaults are BLIP-2's (ViT-g/14 at 224, 12-layer
    # Q-Former); its OPT defaults are not OPT-2.7b's, so those are given.
    return Blip2Config(
        text_config=OPTConfig(**OPT_2_7B).to_dict(), num_query_tokens=BLIP2_QUERY_TOKENS
    )


class Blip2Prefix(nn.Module):
    """BLIP-2 up to the language model: ViT-g, the Q-Former over its tokens, the projection
    to OPT's width. Image (B, 3, 224, 224) -> the language model's prefix (B, 32, 2560)."""

    def __init__(self, attention: str = "sdpa") -> None:
        super().__init__()
        from transformers import Blip2QFormerModel, Blip2VisionModel

        config = _blip2_config()
        for sub in (config.vision_config, config.qformer_config):
            sub._attn_implementation = attention
        self.vision = Blip2VisionModel(config.vision_config)
        self.qformer = Blip2QFormerModel(config.qformer_config)
        hidden = config.qformer_config.hidden_size
        self.query_tokens = nn.Parameter(torch.zeros(1, BLIP2_QUERY_TOKENS, hidden))
        self.projection = nn.Linear(hidden, OPT_2_7B["hidden_size"])

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        tokens = self.vision(pixels).last_hidden_state
        queries = self.query_tokens.expand(pixels.shape[0], -1, -1)
        out = self.qformer(query_embeds=queries, encoder_hidden_states=tokens)
        return self.projection(out.last_hidden_state)


def opt_builder(attention: str) -> Callable[[], nn.Module]:
    """Builds OPT-2.7b with the ``attention`` implementation (the meta device needs eager)."""

    def build() -> nn.Module:
        from transformers import OPTConfig, OPTForCausalLM

        config = OPTConfig(**OPT_2_7B)
        config._attn_implementation = attention
        return OPTForCausalLM(config)

    return build


def _timm_classifier(name: str, size: int) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        from ldmdetect.models.classifier import BackboneClassifier

        return BackboneClassifier(name, input_size=size)

    return build


@dataclass(frozen=True)
class Model:
    """One network a method runs: how to build it and how the GPU path treats it."""

    name: str
    build: Callable[[], nn.Module]
    #: generator components run in the package's generator dtype (bf16 on CUDA); classifiers
    #: keep fp32 weights and run under autocast, as ``Detector`` runs them
    generator: bool = True
    #: convolutional: channels-last on CUDA
    convolutional: bool = True
    #: submodules ``--compile`` compiles ("" = the module's forward)
    compile: tuple[str, ...] = ("",)


Inputs = Callable[[int, torch.device, torch.dtype], tuple[Any, ...]]


@dataclass(frozen=True)
class Stage:
    """One step of a method's per-image path.

    ``run(model, *inputs(rows))`` is one call; ``rows`` rows per image go into it (the LaRE
    ensemble, the two decoded ends of an inversion, an image and its reconstructions), and
    it runs ``calls`` times per image (the UNet passes of a sampling loop). ``per_image``
    False: it runs once per distinct prompt and is cached, so it is not in an image's total.
    """

    name: str
    model: str
    inputs: Inputs
    run: Callable[..., Any]
    rows: int = 1
    calls: int = 1
    per_image: bool = True
    #: times taken from another stage (same architecture and shapes) instead of measured
    same_as: str | None = None
    #: on a CPU with --quick, estimated from FLOPs at this stage's achieved FLOP rate
    estimate_quick_cpu_from: str | None = None


def inversion_round_trip(
    prefix: str, back: str, model: str, inputs: Inputs, run: Callable[..., Any], steps: int
) -> tuple[Stage, Stage]:
    """A DDIM inversion (``{prefix}_inversion``, ``steps`` denoiser calls) and the walk back
    to an image (``{prefix}_{back}``): the same denoiser at the same shapes, so the walk back
    takes the inversion's times instead of being measured again."""
    inversion = f"{prefix}_inversion"
    return (
        Stage(inversion, model, inputs, run, calls=steps),
        Stage(f"{prefix}_{back}", model, inputs, run, calls=steps, same_as=inversion),
    )


@dataclass(frozen=True)
class Pipeline:
    """A method's stages at one working size, and the models they use."""

    models: tuple[Model, ...]
    stages: tuple[Stage, ...]
    note: str = ""


@dataclass(frozen=True)
class CostSpec:
    """How much one registered method costs per image: ``pipeline(size)`` lays out its
    stages at a working size (see ``size_means``)."""

    name: str
    method: str
    what: str
    size_means: str
    default_size: int
    pipeline: Callable[[int], Pipeline]
    #: quick CPU runs time this spec (False: FLOPs only, e.g. a variant of a timed method)
    time_quick_cpu: bool = True
    #: the working sizes of this spec, unless ``--sizes`` names others (None: the
    #: benchmark's ``SIZES``)
    sizes: tuple[int, ...] | None = None
    #: CPU runs time this spec (False: FLOPs only there, for models too big for a CPU's
    #: memory in float32, e.g. FLUX.1-dev's 48 GB transformer)
    time_cpu: bool = True


def images(size: int, channels: int = 3) -> Inputs:
    """Square images (or a classifier's ``channels``-channel stack) at ``size``."""
    return lambda rows, device, dtype: (
        torch.randn(rows, channels, size, size, device=device, dtype=dtype),
    )


def unet_inputs(side: int, context: bool = True) -> Inputs:
    """An SD UNet call: 4-channel latents at ``side``, a timestep and the CLIP context."""

    def make(rows: int, device: torch.device, dtype: torch.dtype) -> tuple[Any, ...]:
        x = torch.randn(rows, 4, side, side, device=device, dtype=dtype)
        t = torch.full((rows,), 500, device=device, dtype=torch.long)
        if not context:
            return x, t
        return x, t, torch.randn(rows, CLIP_TOKENS, 768, device=device, dtype=dtype)

    return make


def tokens(length: int = CLIP_TOKENS) -> Inputs:
    """Prompt token ids, ``length`` per row (by default a CLIP encoder's 77)."""
    return lambda rows, device, dtype: (torch.zeros(rows, length, dtype=torch.long, device=device),)


def encode(vae: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Images -> latents, as the feature steps encode them."""
    dist = vae.encode(x).latent_dist
    return dist.mean + dist.std * torch.randn_like(dist.std)  # a posterior sample


def decode(vae: nn.Module, z: torch.Tensor) -> torch.Tensor:
    return vae.decode(z).sample


def vae_roundtrip(vae: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return decode(vae, encode(vae, x))


def unet(model: nn.Module, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor) -> Any:
    """One conditioned UNet pass on :func:`unet_inputs`."""
    return model(x, t, encoder_hidden_states=context).sample


def pixel_unet(model: nn.Module, x: torch.Tensor, t: torch.Tensor) -> Any:
    """One unconditional pixel-space UNet pass on :func:`pixel_unet_inputs`."""
    return model(x, t).sample


def call(model: nn.Module, *args: Any) -> Any:
    """A plain forward: classifiers, text encoders, LPIPS."""
    return model(*args)


def greedy_caption(lm: nn.Module, prefix: torch.Tensor) -> torch.Tensor:
    """A cached greedy decode of ``CAPTION_TOKENS`` tokens after BLIP-2's 32-query prefix
    (+ BOS): what ``generate`` runs, without its bookkeeping."""
    out = lm(inputs_embeds=prefix, use_cache=True)
    token = out.logits[:, -1:].argmax(-1)
    for _ in range(CAPTION_TOKENS - 1):
        out = lm(input_ids=token, past_key_values=out.past_key_values, use_cache=True)
        token = out.logits[:, -1:].argmax(-1)
    return token


def caption_prefix(rows: int, device: torch.device, dtype: torch.dtype) -> tuple[Any, ...]:
    """BLIP-2's language-model prefix (:class:`Blip2Prefix`'s output and BOS), the input of
    :func:`greedy_caption`."""
    width = OPT_2_7B["hidden_size"]
    return (torch.randn(rows, BLIP2_QUERY_TOKENS + 1, width, device=device, dtype=dtype),)


def lm_full_sequence(lm: nn.Module, embeds: torch.Tensor) -> Any:
    return lm(inputs_embeds=embeds, use_cache=False)


def classifier(name: str, size: int) -> Model:
    """The timm backbone ``name`` as ``BackboneClassifier`` builds it, at ``size``."""
    return Model(f"classifier_{name}_{size}", _timm_classifier(name, size), generator=False)


def pixel_unet_inputs(size: int) -> Inputs:
    """A pixel-space UNet call (ADM): images at ``size`` and a timestep."""

    def make(rows: int, device: torch.device, dtype: torch.dtype) -> tuple[Any, ...]:
        x = torch.randn(rows, 3, size, size, device=device, dtype=dtype)
        return x, torch.full((rows,), 500, device=device, dtype=torch.long)

    return make


def latents(side: int, channels: int = 4) -> Inputs:
    """Latents at ``side`` with ``channels`` channels: what a VAE decodes."""
    return lambda rows, device, dtype: (
        torch.randn(rows, channels, side, side, device=device, dtype=dtype),
    )


SD_UNET_MODEL = Model("sd15_unet", diffusers_builder("UNet2DConditionModel", SD15_UNET))


SD_VAE_MODEL = Model(
    "sd_vae", diffusers_builder("AutoencoderKL", SD_VAE), compile=("encoder", "decoder")
)


TEXT_MODEL = Model("sd15_text_encoder", _text_encoder, convolutional=False)
