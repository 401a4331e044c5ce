"""Per-image cost of every detection method: FLOPs, images/s, peak memory; prints JSON.

Every registered method (``ldmdetect.methods``) has a cost spec here: the stages its feature
step and classifier run per image (VAE encode, UNet passes, decodes, captioning, the
classifier), each on a full-size architecture written out below from the published configs
(SD v1.5 / 2.x VAE and UNet, Kandinsky 2.1's MoVQ, ADM-256, BLIP-2 OPT-2.7b, CLIP RN50,
ResNet-50, ConvNeXt-L, DINOv2 ViT-L/14, LPIPS VGG16) with random weights: cost depends on
the architecture only, so nothing is downloaded. A method registered without a spec stops the
benchmark with its name, so every new method must add one. The generator-backed methods also
have a ``METHOD:FAMILY`` spec for SDXL, SD3.5-medium and FLUX.1-dev (``FAMILY_COSTS``: their
denoisers, text encoders and autoencoders, driven as ``SDComponents.predict`` drives them),
at 512 and 1024 px; a CPU counts their FLOPs but does not time them.

    python benchmarks/feature_cost.py --quick --threads 2 --markdown   # CPU, under 15 min
    python benchmarks/feature_cost.py --device cuda --output cuda.json  # bf16, both sizes
    python benchmarks/feature_cost.py --flops-only --method fakeinversion
    python benchmarks/feature_cost.py --table cpu.json cuda.json        # README table
    python benchmarks/feature_cost.py --flops-only --method lare2:flux.1-dev  # a family row

Figures, per method and per working size (256 and 512 px; what "size" means for each method
is in its ``size_means``):
- FLOPs per image: ``torch.utils.flop_counter.FlopCounterMode`` over one forward of each stage
  on the meta device (shapes only: free, and the same on every machine), times how often the
  stage runs per image; a multiply-add is 2 FLOPs. Stages that run once per prompt (a cached
  text encoding) are listed but not added to the image's total.
- images/s at batch 1 and at a throughput batch: each stage is timed on its own (one call,
  times the number of calls per image: a sampling loop's UNet passes all cost the same), after
  a warm-up; CUDA is timed with CUDA events. ``--quick`` on a CPU times 256 px only, warms up
  each stage at 64 px, skips throughput batches that would take too long, and estimates
  BLIP-2's 2.65 B-parameter language model from its FLOPs (the JSON says where).
- peak memory: CUDA ``torch.cuda.max_memory_allocated`` above what was allocated before the
  method's models were built (weights + activations); CPU, the peak resident set size
  (``VmHWM``, reset through ``/proc/self/clear_refs``) above the RSS before the models were
  built, ``ru_maxrss`` where that cannot be reset.
- on CUDA, model-FLOP utilisation per stage: achieved FLOP/s over the GPU's dense bf16 peak
  (H100, H200 and A100 by name; another GPU's from ``$LDMDETECT_PEAK_BF16_FLOPS``).

On CUDA the generator components run in bf16 (as ``ldmdetect`` loads them), classifiers in
fp32 under bf16 autocast (as ``Detector`` scores), convolutional models channels-last,
attention through PyTorch's SDPA (diffusers' ``AttnProcessor2_0``, checked), and an image's
noise ensemble in the same batch as the other images; ``--compile`` compiles every model.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import platform
import resource
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

# --------------------------------------------------------------------------------------------
# Architectures (values from the published configs)

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
FAKEINVERSION_STEPS = 50  # DDIM steps each way (inversion, then re-generation)
AEROBLADE_AUTOENCODERS = ("sd1_vae", "sd2_vae", "kandinsky21_movq")

# The modern generator families (``generative.families``), from each pipeline's published
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
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "block_out_channels": (128, 256, 512, 512),
    "layers_per_block": 2,
    "latent_channels": 16,
    "norm_num_groups": 32,
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
CLIP_TOKENS = 77
#: the T5 prompt lengths the pipelines pad to (``Family.text_length``)
SD3_T5_TOKENS, FLUX_T5_TOKENS = 256, 512
#: FLUX.1-dev's guidance embedding value (``generative.components.FLUX_GUIDANCE``)
FLUX_GUIDANCE = 3.5
FAMILY_SIZES = (512, 1024)  # SDXL, SD3.5 and FLUX.1 generate at 1024 px natively

# Dense bf16 tensor-core peak FLOP/s by device name (vendor data sheets, without sparsity).
PEAK_BF16_FLOPS: dict[str, float] = {
    "H100": 989.4e12,  # H100 SXM; the PCIe card is lower (756e12), matched first below
    "H200": 989.4e12,
    "A100": 312e12,
}
PEAK_BF16_FLOPS_EXACT: dict[str, float] = {"H100 PCIe": 756e12, "H100 NVL": 835e12}

SIZES = (256, 512)


# For a GPU the table does not know: its dense bf16 peak in FLOP/s, e.g. 362e12 (L40S).
PEAK_ENV = "LDMDETECT_PEAK_BF16_FLOPS"


def peak_bf16_flops(device_name: str, environ: Mapping[str, str] = os.environ) -> float | None:
    """The GPU's dense bf16 peak from its name, else from ``$LDMDETECT_PEAK_BF16_FLOPS``;
    None when neither knows it (no MFU then)."""
    for key, value in PEAK_BF16_FLOPS_EXACT.items():
        if key in device_name:
            return value
    for key, value in PEAK_BF16_FLOPS.items():
        if key in device_name:
            return value
    stated = environ.get(PEAK_ENV, "").strip()
    if not stated:
        return None
    try:
        peak = float(stated)
    except ValueError:
        peak = math.nan
    if not math.isfinite(peak) or peak <= 0:
        raise SystemExit(f"{PEAK_ENV}={stated!r}: expected a positive FLOP/s figure, e.g. 362e12")
    return peak


# --------------------------------------------------------------------------------------------
# Model builders: each runs under a ``torch.device`` context (meta for counting)


def _diffusers(cls_name: str, config: dict[str, Any]) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import diffusers

        return getattr(diffusers, cls_name)(**config)

    return build


def _text_encoder() -> nn.Module:
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(CLIPTextConfig(**SD15_TEXT_ENCODER))


def _clip_text(config: dict[str, Any], projection: bool) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

        cls = CLIPTextModelWithProjection if projection else CLIPTextModel
        return cls(CLIPTextConfig(**config))

    return build


def _t5_encoder() -> nn.Module:
    from transformers import T5Config, T5EncoderModel

    return T5EncoderModel(T5Config(**T5_XXL_ENCODER))


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


def _opt(attention: str) -> Callable[[], nn.Module]:
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


def _egre(lare_channels: int = 4) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        from ldmdetect.models.egre import EGRE

        # timm resnet50_clip.openai architecture; the LaRE map has the latent's channels
        return EGRE("openclip:RN50", input_size=224, lare_channels=lare_channels)

    return build


def _fakeinversion_net() -> nn.Module:
    from ldmdetect.models.fakeinversion import FakeInversionNet

    return FakeInversionNet("resnet50")


def _lpips() -> nn.Module:
    from ldmdetect.models.lpips import LPIPSMap

    return LPIPSMap(2, pretrained=False)  # AEROBLADE's default layer (VGG16 relu2_2)


class VFMProbe(nn.Module):
    """The frozen foundation model's pooled embedding and the linear probe on it."""

    def __init__(self, name: str = "vit_large_patch14_dinov2", size: int = 224) -> None:
        super().__init__()
        import timm

        from ldmdetect.models.vfm import LinearProbe

        self.body = timm.create_model(name, pretrained=False, num_classes=0, img_size=size)
        self.probe = LinearProbe(self.body.num_features)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.probe(self.body(images))


# --------------------------------------------------------------------------------------------
# Stages and specs


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
    #: the working sizes of this spec, unless ``--sizes`` names others (None: ``SIZES``)
    sizes: tuple[int, ...] | None = None
    #: CPU runs time this spec (False: FLOPs only there, for models too big for a CPU's
    #: memory in float32, e.g. FLUX.1-dev's 48 GB transformer)
    time_cpu: bool = True


COST_SPECS: dict[str, CostSpec] = {}


def register(spec: CostSpec) -> CostSpec:
    if spec.name in COST_SPECS:
        raise ValueError(f"cost spec {spec.name!r} is registered twice")
    COST_SPECS[spec.name] = spec
    return spec


def missing_specs() -> list[str]:
    """Registered methods without a cost spec."""
    from ldmdetect import methods

    covered = {spec.method for spec in COST_SPECS.values()}
    return [name for name in methods.list_methods() if name not in covered]


def check_specs() -> None:
    """Fail loudly when a registered method has no cost spec: a new method must add one."""
    missing = missing_specs()
    if missing:
        raise SystemExit(
            f"benchmarks/feature_cost.py: no cost spec for the registered method(s) "
            f"{', '.join(missing)}; add one (register(CostSpec(...))) describing the stages "
            "its features and classifier run per image"
        )


# Input makers: (rows, device, dtype) -> call arguments.


def _images(size: int, channels: int = 3) -> Inputs:
    return lambda rows, device, dtype: (
        torch.randn(rows, channels, size, size, device=device, dtype=dtype),
    )


def _latents(side: int, context: bool = True) -> Inputs:
    def make(rows: int, device: torch.device, dtype: torch.dtype) -> tuple[Any, ...]:
        x = torch.randn(rows, 4, side, side, device=device, dtype=dtype)
        t = torch.full((rows,), 500, device=device, dtype=torch.long)
        if not context:
            return x, t
        return x, t, torch.randn(rows, 77, 768, device=device, dtype=dtype)

    return make


def _tokens(rows: int, device: torch.device, dtype: torch.dtype) -> tuple[Any, ...]:
    return (torch.zeros(rows, CLIP_TOKENS, dtype=torch.long, device=device),)


def _token_inputs(length: int) -> Inputs:
    return lambda rows, device, dtype: (torch.zeros(rows, length, dtype=torch.long, device=device),)


def _encode(vae: nn.Module, x: torch.Tensor) -> torch.Tensor:
    dist = vae.encode(x).latent_dist
    return dist.mean + dist.std * torch.randn_like(dist.std)  # a posterior sample


def _decode(vae: nn.Module, z: torch.Tensor) -> torch.Tensor:
    return vae.decode(z).sample


def _movq_roundtrip(movq: nn.Module, x: torch.Tensor) -> torch.Tensor:
    latents = movq.encode(x).latents  # AEROBLADE decodes MoVQ latents without re-quantising
    return movq.decode(latents, force_not_quantize=True).sample


def _vae_roundtrip(vae: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return _decode(vae, _encode(vae, x))


def _unet(unet: nn.Module, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor):
    return unet(x, t, encoder_hidden_states=context).sample


def _pixel_unet(unet: nn.Module, x: torch.Tensor, t: torch.Tensor):
    return unet(x, t).sample


def _call(model: nn.Module, *args: Any) -> Any:
    return model(*args)


def _greedy_caption(lm: nn.Module, prefix: torch.Tensor) -> torch.Tensor:
    """A cached greedy decode of ``CAPTION_TOKENS`` tokens after BLIP-2's 32-query prefix
    (+ BOS): what ``generate`` runs, without its bookkeeping."""
    out = lm(inputs_embeds=prefix, use_cache=True)
    token = out.logits[:, -1:].argmax(-1)
    for _ in range(CAPTION_TOKENS - 1):
        out = lm(input_ids=token, past_key_values=out.past_key_values, use_cache=True)
        token = out.logits[:, -1:].argmax(-1)
    return token


def _prefix(rows: int, device: torch.device, dtype: torch.dtype) -> tuple[Any, ...]:
    width = OPT_2_7B["hidden_size"]
    return (torch.randn(rows, BLIP2_QUERY_TOKENS + 1, width, device=device, dtype=dtype),)


def _lm_full_sequence(lm: nn.Module, embeds: torch.Tensor) -> Any:
    return lm(inputs_embeds=embeds, use_cache=False)


def _egre_inputs(lare_side: int, channels: int = 4) -> Inputs:
    def make(rows: int, device: torch.device, dtype: torch.dtype) -> tuple[Any, ...]:
        images = torch.randn(rows, 3, 224, 224, device=device)
        return images, torch.rand(rows, channels, lare_side, lare_side, device=device)

    return make


def _lpips_inputs(size: int, candidates: int) -> Inputs:
    def make(rows: int, device: torch.device, dtype: torch.dtype) -> tuple[Any, ...]:
        # rows = (1 + candidates) per image: the view and its reconstructions share one pass
        n = rows // (1 + candidates)
        a = torch.rand(n, 3, size, size, device=device)
        return a, torch.rand(n, candidates, 3, size, size, device=device)

    return make


def _classifier(name: str, size: int) -> Model:
    return Model(f"classifier_{name}_{size}", _timm_classifier(name, size), generator=False)


SD_UNET_MODEL = Model("sd15_unet", _diffusers("UNet2DConditionModel", SD15_UNET))
SD_VAE_MODEL = Model("sd_vae", _diffusers("AutoencoderKL", SD_VAE), compile=("encoder", "decoder"))
TEXT_MODEL = Model("sd15_text_encoder", _text_encoder, convolutional=False)


def ae_pipeline(backbone: str) -> Callable[[int], Pipeline]:
    def pipeline(size: int) -> Pipeline:
        model = _classifier(backbone, size)
        return Pipeline(
            (model,),
            (Stage("classifier", model.name, _images(size), _call),),
            "1-try: the center crop only; no generator at test time",
        )

    return pipeline


def lare2_pipeline(size: int) -> Pipeline:
    ensemble, side = 4, size // 8  # LareConfig defaults: t=200, 4 noise draws
    egre = Model("egre_clip_rn50", _egre(), generator=False)
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


def _pixels_t(size: int) -> Inputs:
    def make(rows: int, device: torch.device, dtype: torch.dtype) -> tuple[Any, ...]:
        x = torch.randn(rows, 3, size, size, device=device, dtype=dtype)
        return x, torch.full((rows,), 500, device=device, dtype=torch.long)

    return make


def fakeinversion_pipeline(size: int) -> Pipeline:
    side, steps = size // 8, FAKEINVERSION_STEPS
    prefix = Model("blip2_vision_qformer", Blip2Prefix, convolutional=False, compile=("",))
    lm = Model("blip2_opt_2.7b", _opt("sdpa"), convolutional=False, compile=())
    classifier = Model("fakeinversion_resnet50", _fakeinversion_net, generator=False)
    stages = (
        Stage("caption_vision_qformer", prefix.name, _images(224), _call),
        Stage(
            "caption_language_model",
            lm.name,
            _prefix,
            _greedy_caption,
            estimate_quick_cpu_from="caption_vision_qformer",
        ),
        Stage("text_encoder", TEXT_MODEL.name, _tokens, _call),
        Stage("vae_encode", SD_VAE_MODEL.name, _images(size), _encode),
        Stage("unet_ddim_inversion", SD_UNET_MODEL.name, _latents(side), _unet, calls=steps),
        Stage(
            "unet_ddim_regeneration",
            SD_UNET_MODEL.name,
            _latents(side),
            _unet,
            calls=steps,
            same_as="unet_ddim_inversion",
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


def _latent_inputs(side: int, channels: int = 4) -> Inputs:
    return lambda rows, device, dtype: (
        torch.randn(rows, channels, side, side, device=device, dtype=dtype),
    )


def aeroblade_pipeline(size: int) -> Pipeline:
    movq = Model(
        "kandinsky21_movq",
        _diffusers("VQModel", KANDINSKY21_MOVQ),
        compile=("encoder", "decoder"),
    )
    lpips = Model("lpips_vgg16_layer2", _lpips, generator=False)
    k = len(AEROBLADE_AUTOENCODERS)
    stages = (
        Stage("sd1_vae_roundtrip", SD_VAE_MODEL.name, _images(size), _vae_roundtrip),
        Stage(
            "sd2_vae_roundtrip",
            SD_VAE_MODEL.name,
            _images(size),
            _vae_roundtrip,
            same_as="sd1_vae_roundtrip",
        ),
        Stage("kandinsky21_movq_roundtrip", movq.name, _images(size), _movq_roundtrip),
        Stage("lpips", lpips.name, _lpips_inputs(size, k), _call, rows=1 + k),
    )
    return Pipeline(
        (SD_VAE_MODEL, movq, lpips),
        stages,
        "three autoencoder round trips (SD1 and SD2 VAEs share one architecture, so SD2's "
        "time is SD1's) and one LPIPS pass over the view and its three reconstructions",
    )


def vfm_pipeline(size: int) -> Pipeline:
    model = Model("dinov2_vit_l14_probe", VFMProbe, generator=False, convolutional=False)
    return Pipeline(
        (model,),
        (Stage("embedding_and_probe", model.name, _images(224), _call),),
        "every image is resized to 224 (short side) and center-cropped: the cost does not "
        "depend on the working size",
    )


# --------------------------------------------------------------------------------------------
# Generator families: SDXL, SD3.5-medium and FLUX.1-dev under every generator-backed method


def _sdxl_inputs(side: int) -> Inputs:
    """A UNet call as ``SDComponents.predict`` makes it for SDXL: both CLIP encoders' tokens
    side by side (768 + 1280), the pooled ``text_embeds`` and the six ``time_ids``."""

    def make(rows: int, device: torch.device, dtype: torch.dtype) -> tuple[Any, ...]:
        x = torch.randn(rows, 4, side, side, device=device, dtype=dtype)
        t = torch.full((rows,), 200, device=device, dtype=torch.long)
        context = torch.randn(rows, CLIP_TOKENS, 2048, device=device, dtype=dtype)
        pooled = torch.randn(rows, 1280, device=device, dtype=dtype)
        return x, t, context, pooled, torch.randn(rows, 6, device=device, dtype=dtype)

    return make


def _sdxl_unet(
    unet: nn.Module, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor, *added: torch.Tensor
) -> torch.Tensor:
    kwargs = {"text_embeds": added[0], "time_ids": added[1]}
    return unet(x, t, encoder_hidden_states=context, added_cond_kwargs=kwargs).sample


def _sd3_inputs(side: int) -> Inputs:
    """SD3's call: 16-channel latents, the 77 CLIP tokens then the 256 T5 tokens (4096
    wide), both CLIP pooled embeddings (768 + 1280), the timestep 1000 s."""

    def make(rows: int, device: torch.device, dtype: torch.dtype) -> tuple[Any, ...]:
        x = torch.randn(rows, 16, side, side, device=device, dtype=dtype)
        t = torch.full((rows,), 200.0, device=device, dtype=dtype)
        tokens = CLIP_TOKENS + SD3_T5_TOKENS
        context = torch.randn(rows, tokens, 4096, device=device, dtype=dtype)
        return x, t, context, torch.randn(rows, 2048, device=device, dtype=dtype)

    return make


def _sd3_transformer(
    model: nn.Module, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor, pooled: torch.Tensor
) -> torch.Tensor:
    return model(
        hidden_states=x, timestep=t, encoder_hidden_states=context, pooled_projections=pooled
    ).sample


def _flux_inputs(side: int) -> Inputs:
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
    denoiser: Model
    #: latent side -> the denoiser's call arguments
    denoiser_inputs: Callable[[int], Inputs]
    run: Callable[..., Any]
    vae: Model
    latent_channels: int
    #: every text encoder the family's conditioning runs, with its prompt length in tokens
    text_encoders: tuple[tuple[Model, int], ...]


SD_FAMILY_VAE = Model(
    "sdxl_vae", _diffusers("AutoencoderKL", SD_VAE), compile=("encoder", "decoder")
)
FLOW_VAE_MODEL = Model(
    "flow_vae_16ch", _diffusers("AutoencoderKL", FLOW_VAE), compile=("encoder", "decoder")
)
CLIP_BIGG = Model(
    "clip_bigg_text_encoder", _clip_text(CLIP_BIGG_TEXT_ENCODER, True), convolutional=False
)
T5_XXL = Model("t5_xxl_encoder", _t5_encoder, convolutional=False)
FAMILY_COSTS: tuple[FamilyCost, ...] = (
    FamilyCost(
        "sdxl",
        "stabilityai/stable-diffusion-xl-base-1.0",
        Model("sdxl_unet", _diffusers("UNet2DConditionModel", SDXL_UNET)),
        _sdxl_inputs,
        _sdxl_unet,
        SD_FAMILY_VAE,
        4,
        ((TEXT_MODEL, CLIP_TOKENS), (CLIP_BIGG, CLIP_TOKENS)),
    ),
    FamilyCost(
        "sd3.5-medium",
        "stabilityai/stable-diffusion-3.5-medium",
        Model(
            "sd35_medium_transformer",
            _diffusers("SD3Transformer2DModel", SD35_MEDIUM_TRANSFORMER),
            convolutional=False,
        ),
        _sd3_inputs,
        _sd3_transformer,
        FLOW_VAE_MODEL,
        16,
        (
            (
                Model(
                    "clip_l_text_encoder_projection",
                    _clip_text(SD15_TEXT_ENCODER, True),
                    convolutional=False,
                ),
                CLIP_TOKENS,
            ),
            (CLIP_BIGG, CLIP_TOKENS),
            (T5_XXL, SD3_T5_TOKENS),
        ),
    ),
    FamilyCost(
        "flux.1-dev",
        "black-forest-labs/FLUX.1-dev",
        Model(
            "flux1_dev_transformer",
            _diffusers("FluxTransformer2DModel", FLUX1_DEV_TRANSFORMER),
            convolutional=False,
        ),
        _flux_inputs,
        _flux_transformer,
        FLOW_VAE_MODEL,
        16,
        ((TEXT_MODEL, CLIP_TOKENS), (T5_XXL, FLUX_T5_TOKENS)),
    ),
)


def _text_stages(family: FamilyCost, *, per_image: bool) -> tuple[Stage, ...]:
    return tuple(
        Stage(f"text_{model.name}", model.name, _token_inputs(tokens), _call, per_image=per_image)
        for model, tokens in family.text_encoders
    )


def _family_models(family: FamilyCost, *extra: Model) -> tuple[Model, ...]:
    text = tuple(model for model, _ in family.text_encoders)
    return (family.vae, family.denoiser, *text, *extra)


def _family_denoiser(family: FamilyCost, name: str, side: int, **kwargs: Any) -> Stage:
    inputs = family.denoiser_inputs(side)
    return Stage(name, family.denoiser.name, inputs, family.run, **kwargs)


def family_lare2_pipeline(family: FamilyCost) -> Callable[[int], Pipeline]:
    def pipeline(size: int) -> Pipeline:
        ensemble, side, channels = 4, size // 8, family.latent_channels
        egre = Model(f"egre_clip_rn50_{channels}ch", _egre(channels), generator=False)
        stages = (
            Stage("vae_encode", family.vae.name, _images(size), _encode),
            _family_denoiser(family, "denoiser", side, rows=ensemble),
            *_text_stages(family, per_image=False),
            Stage("classifier", egre.name, _egre_inputs(min(224, size) // 8, channels), _call),
        )
        return Pipeline(
            _family_models(family, egre),
            stages,
            f"{family.hub_id}: VAE encode, one denoiser pass on the {ensemble} noised latents "
            f"(the ensemble in one batch), EGRE on the {channels}-channel LaRE map; the prompt "
            "encoders run once per distinct prompt (cached), so they are left out of the total",
        )

    return pipeline


def family_fakeinversion_pipeline(family: FamilyCost) -> Callable[[int], Pipeline]:
    def pipeline(size: int) -> Pipeline:
        side, steps, channels = size // 8, FAKEINVERSION_STEPS, family.latent_channels
        prefix = Model("blip2_vision_qformer", Blip2Prefix, convolutional=False)
        lm = Model("blip2_opt_2.7b", _opt("sdpa"), convolutional=False, compile=())
        classifier = Model("fakeinversion_resnet50", _fakeinversion_net, generator=False)
        stages = (
            Stage("caption_vision_qformer", prefix.name, _images(224), _call),
            Stage(
                "caption_language_model",
                lm.name,
                _prefix,
                _greedy_caption,
                estimate_quick_cpu_from="caption_vision_qformer",
            ),
            *_text_stages(family, per_image=True),
            Stage("vae_encode", family.vae.name, _images(size), _encode),
            _family_denoiser(family, "denoiser_inversion", side, calls=steps),
            _family_denoiser(
                family,
                "denoiser_regeneration",
                side,
                calls=steps,
                same_as="denoiser_inversion",
            ),
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


def family_dire_pipeline(family: FamilyCost) -> Callable[[int], Pipeline]:
    def pipeline(size: int) -> Pipeline:
        side, channels = size // 8, family.latent_channels
        classifier = _classifier("resnet50", 224)
        stages = (
            Stage("vae_encode", family.vae.name, _images(size), _encode),
            *_text_stages(family, per_image=False),
            _family_denoiser(family, "denoiser_inversion", side, calls=DIRE_STEPS),
            _family_denoiser(
                family,
                "denoiser_reconstruction",
                side,
                calls=DIRE_STEPS,
                same_as="denoiser_inversion",
            ),
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


def family_aeroblade_pipeline(family: FamilyCost) -> Callable[[int], Pipeline]:
    def pipeline(size: int) -> Pipeline:
        lpips = Model("lpips_vgg16_layer2", _lpips, generator=False)
        stages = (
            Stage("vae_roundtrip", family.vae.name, _images(size), _vae_roundtrip),
            Stage("lpips", lpips.name, _lpips_inputs(size, 1), _call, rows=2),
        )
        return Pipeline(
            (family.vae, lpips),
            stages,
            f"{family.hub_id}'s autoencoder alone: one round trip (also what `ldmdetect "
            "reconstruct` spends per `ae` training image) and LPIPS over the view and its "
            "reconstruction",
        )

    return pipeline


register(
    CostSpec(
        "ae",
        "ae",
        "tf_efficientnetv2_b0 classifier on the raw crop (the method's default backbone)",
        "crop side (input_size)",
        256,
        ae_pipeline("tf_efficientnetv2_b0"),
    )
)
register(
    CostSpec(
        "ae:convnext_large",
        "ae",
        "ConvNeXt-L classifier on the raw crop (the README's real-data backbone)",
        "crop side (input_size)",
        256,
        ae_pipeline("convnext_large"),
    )
)
register(
    CostSpec(
        "lare2",
        "lare2",
        "SD v1.5 VAE encode + one UNet pass on 4 noised latents (t=200) + EGRE on CLIP RN50",
        "LaRE's whole-image resize (lare.image_size); EGRE's crop is min(224, size)",
        256,
        lare2_pipeline,
    )
)
register(
    CostSpec(
        "dire",
        "dire",
        f"ADM-256 unconditional: {DIRE_STEPS} + {DIRE_STEPS} DDIM passes, ResNet-50 at 224",
        "the pixel UNet's input side",
        256,
        dire_pipeline,
    )
)
register(
    CostSpec(
        "fakeinversion",
        "fakeinversion",
        "BLIP-2 caption, SD v1.5 DDIM inversion + re-generation (50 + 50), decodes, ResNet-50",
        "the inverted center crop (inversion.image_size)",
        512,
        fakeinversion_pipeline,
    )
)
register(
    CostSpec(
        "aeroblade",
        "aeroblade",
        "SD1, SD2 and Kandinsky 2.1 autoencoder round trips + LPIPS VGG16 (layer 2)",
        "the view (input_size)",
        512,
        aeroblade_pipeline,
    )
)
register(
    CostSpec(
        "vfm-probe",
        "vfm-probe",
        "DINOv2 ViT-L/14 embedding at 224 + linear probe",
        "none: images are resized to 224",
        224,
        vfm_pipeline,
    )
)

for _family in FAMILY_COSTS:
    _where = f"{_family.hub_id}-sized"
    register(
        CostSpec(
            f"lare2:{_family.name}",
            "lare2",
            f"{_where} VAE encode + one denoiser pass on 4 noised latents + EGRE",
            "LaRE's whole-image resize (lare.image_size); EGRE's crop is min(224, size)",
            256,
            family_lare2_pipeline(_family),
            sizes=FAMILY_SIZES,
            time_cpu=False,
        )
    )
    register(
        CostSpec(
            f"fakeinversion:{_family.name}",
            "fakeinversion",
            f"BLIP-2 caption, {_where} inversion + re-generation (50 + 50), decodes, ResNet-50",
            "the inverted center crop (inversion.image_size)",
            512,
            family_fakeinversion_pipeline(_family),
            sizes=FAMILY_SIZES,
            time_cpu=False,
        )
    )
    register(
        CostSpec(
            f"dire:{_family.name}",
            "dire",
            f"{_where} latent DIRE: {DIRE_STEPS} + {DIRE_STEPS} passes, decode, ResNet-50",
            "the reconstructed square (dire.image_size)",
            256,
            family_dire_pipeline(_family),
            sizes=FAMILY_SIZES,
            time_cpu=False,
        )
    )
    register(
        CostSpec(
            f"aeroblade:{_family.name}",
            "aeroblade",
            f"{_where} autoencoder round trip + LPIPS VGG16 (layer 2)",
            "the view (input_size)",
            512,
            family_aeroblade_pipeline(_family),
            sizes=FAMILY_SIZES,
            time_cpu=False,
        )
    )


# --------------------------------------------------------------------------------------------
# Measuring


@dataclass(frozen=True)
class Bench:
    """Where and how to measure."""

    device: torch.device
    dtype: torch.dtype  # generator components' dtype
    quick: bool = False
    #: convolutional models and their inputs channels-last (default: on CUDA)
    channels_last: bool = False
    #: classifiers under bf16 autocast (default: on CUDA, as ``Detector`` scores)
    autocast: bool = False
    compile: bool = False
    batch: int = 8  # the throughput batch
    repeats: int = 3
    #: quick CPU: skip a throughput batch whose estimated time exceeds this many seconds
    quick_budget_s: float = 20.0
    sizes: tuple[int, ...] = SIZES
    timed_sizes: tuple[int, ...] = SIZES
    #: a spec's own ``sizes`` replace ``sizes`` (False when ``--sizes`` names them)
    spec_sizes: bool = True

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def sizes_for(self, spec: CostSpec) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """The sizes ``spec`` is counted at and those it is timed at."""
        if spec.sizes is None or not self.spec_sizes:
            return self.sizes, tuple(s for s in self.timed_sizes if s in self.sizes)
        return spec.sizes, (min(spec.sizes),) if self.quick_cpu else spec.sizes

    @property
    def quick_cpu(self) -> bool:
        return self.quick and not self.cuda


def count_flops(fn: Callable[[], Any]) -> int:
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def _meta_model(model: Model) -> nn.Module:
    """The architecture without storage; attention is eager on meta (SDPA mask helpers of
    transformers read mask values, which meta tensors lack)."""
    build = _opt("eager") if model.name == "blip2_opt_2.7b" else model.build
    if model.name == "blip2_vision_qformer":
        build = lambda: Blip2Prefix("eager")  # noqa: E731
    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return build().to("meta").eval().requires_grad_(False)


def stage_flops(pipeline: Pipeline, stage: Stage, meta: dict[str, nn.Module]) -> int:
    """FLOPs of ONE call of ``stage`` for ONE image (its ``rows`` rows)."""
    if stage.model not in meta:
        meta[stage.model] = _meta_model(_find(pipeline, stage.model))
    model = meta[stage.model]
    args = stage.inputs(stage.rows, torch.device("meta"), torch.float32)
    if stage.run is _greedy_caption:
        # One forward over the whole sequence (prefix + caption): the matmul FLOPs of a
        # cached greedy decode, give or take the logits of the prefix positions.
        width = OPT_2_7B["hidden_size"]
        embeds = torch.empty(1, BLIP2_QUERY_TOKENS + 1 + CAPTION_TOKENS, width, device="meta")
        return count_flops(lambda: _lm_full_sequence(model, embeds))
    return count_flops(lambda: stage.run(model, *args))


def _find(pipeline: Pipeline, name: str) -> Model:
    for model in pipeline.models:
        if model.name == name:
            return model
    raise KeyError(f"stage model {name!r} is not among the pipeline's models")


def flops_report(
    spec: CostSpec, size: int, meta: dict[str, nn.Module] | None = None
) -> dict[str, Any]:
    """FLOPs of every stage of ``spec`` at ``size``, per call and per image; ``meta`` caches
    the meta-device models between calls."""
    pipeline = spec.pipeline(size)
    meta = {} if meta is None else meta
    stages: dict[str, Any] = {}
    total = 0
    for stage in pipeline.stages:
        one = stage_flops(pipeline, stage, meta)
        per_image = one * stage.calls
        stages[stage.name] = {
            "model": stage.model,
            "flops_per_call": one,
            "calls_per_image": stage.calls,
            "rows_per_image": stage.rows,
            "per_image": stage.per_image,
            "flops_per_image": per_image if stage.per_image else None,
            "flops_per_prompt": None if stage.per_image else one,
        }
        if stage.per_image:
            total += per_image
    for entry in stages.values():
        if entry["per_image"]:
            entry["flops_share"] = round(entry["flops_per_image"] / total, 4) if total else None
    return {"flops_per_image": total, "stages": stages}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _autocast(bench: Bench) -> contextlib.AbstractContextManager:
    if bench.autocast:
        return torch.autocast(bench.device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def seconds_per_call(fn: Callable[[], Any], bench: Bench, *, repeats: int) -> float:
    """Seconds of one call: CUDA events over ``repeats`` calls (mean), or the best of
    ``repeats`` wall-clock calls on a CPU."""
    if bench.cuda:
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(repeats):
            fn()
        end.record()
        torch.cuda.synchronize(bench.device)
        return start.elapsed_time(end) / 1000 / repeats
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


class Memory:
    """Peak memory of a block above a baseline taken before the method's models existed."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.how = self._how()
        self.baseline = self._current()

    def _how(self) -> str:
        if self.device.type == "cuda":
            return "torch.cuda.max_memory_allocated above the allocation before the models"
        try:
            Path("/proc/self/clear_refs").write_text("5")
            return "peak RSS (VmHWM, reset per measurement) above the RSS before the models"
        except OSError:
            return "peak RSS (ru_maxrss, process lifetime) above the RSS before the models"

    def _current(self) -> int:
        if self.device.type == "cuda":
            return torch.cuda.memory_allocated(self.device)
        return _status_kb("VmRSS") * 1024

    def reset(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        elif "VmHWM" in self.how:
            Path("/proc/self/clear_refs").write_text("5")

    def peak(self) -> int:
        if self.device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(self.device)
        elif "VmHWM" in self.how:
            peak = _status_kb("VmHWM") * 1024
        else:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        return max(0, peak - self.baseline)


def _status_kb(field_name: str) -> int:
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def attention_processors(module: nn.Module) -> list[str]:
    """diffusers attention processor classes in ``module``; a plain ``AttnProcessor`` (no
    SDPA) anywhere is an error, since it would make every attention several times slower."""
    processors = getattr(module, "attn_processors", None)
    if not processors:
        return []
    names = sorted({type(p).__name__ for p in processors.values()})
    if "AttnProcessor" in names:
        raise RuntimeError(f"{type(module).__name__} uses the plain AttnProcessor, not SDPA")
    return names


def build_model(model: Model, bench: Bench) -> tuple[nn.Module, dict[str, Any]]:
    """A randomly initialised model on the bench's device, frozen, set up for the GPU path."""
    with torch.device(bench.device), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = model.build()
    # Buffers made by legacy constructors (torch.Tensor(list)) ignore the device context.
    module = module.to(bench.device).eval().requires_grad_(False)
    if model.generator and bench.dtype != torch.float32:
        module = module.to(bench.dtype)
    info: dict[str, Any] = {
        "parameters": sum(p.numel() for p in module.parameters()),
        "dtype": str(bench.dtype if model.generator else torch.float32).removeprefix("torch."),
    }
    if bench.channels_last and model.convolutional:
        module = module.to(memory_format=torch.channels_last)
        info["channels_last"] = True
    processors = attention_processors(module)
    if processors:
        info["attention_processors"] = processors
    if bench.compile and model.compile:
        for target in model.compile:
            if target:
                setattr(module, target, torch.compile(getattr(module, target)))
            else:
                module = torch.compile(module)
        info["compiled"] = list(model.compile)
    return module, info


def _inputs(stage: Stage, rows: int, bench: Bench, model: Model) -> tuple[Any, ...]:
    dtype = bench.dtype if model.generator else torch.float32
    args = stage.inputs(rows, bench.device, dtype)
    if bench.channels_last and model.convolutional:
        args = tuple(
            a.contiguous(memory_format=torch.channels_last)
            if isinstance(a, torch.Tensor) and a.dim() == 4 and a.is_floating_point()
            else a
            for a in args
        )
    return args


WARMUP_SIZE = 64  # --quick on a CPU warms each stage up at this size


def time_pipeline(
    spec: CostSpec,
    size: int,
    flops: dict[str, Any],
    bench: Bench,
    built: dict[str, nn.Module],
    memory: Memory,
) -> dict[str, Any]:
    """Seconds per image of every stage at batch 1 and the throughput batch; images/s, peak
    memory and (CUDA) model-FLOP utilisation."""
    pipeline = spec.pipeline(size)
    models = {m.name: m for m in pipeline.models}
    warm_pipeline = spec.pipeline(WARMUP_SIZE) if bench.quick_cpu else pipeline
    warmup = {stage.name: stage for stage in warm_pipeline.stages}
    peak = peak_bf16_flops(device_name(bench.device)) if bench.cuda else None
    batches = [1] if bench.batch == 1 else [1, bench.batch]
    result: dict[str, Any] = {"images_per_s": {}, "peak_memory_bytes": {}, "stages": {}}
    skipped: dict[str, str] = {}
    per_image_1: dict[str, float] = {}
    for batch in batches:
        if batch > 1 and bench.quick_cpu:
            estimate = batch * sum(per_image_1.values())
            if estimate > bench.quick_budget_s:
                skipped[str(batch)] = (
                    f"--quick on a CPU: batch {batch} would take about {estimate:.0f} s"
                )
                continue
        memory.reset()
        times: dict[str, float] = {}
        estimated: dict[str, str] = {}
        for stage in pipeline.stages:
            if stage.same_as is not None:
                times[stage.name] = times[stage.same_as]
                continue
            if bench.quick_cpu and stage.estimate_quick_cpu_from:
                source = stage.estimate_quick_cpu_from
                rate = flops["stages"][source]["flops_per_call"] * batch / times[source]
                one = flops["stages"][stage.name]["flops_per_call"]
                times[stage.name] = one * batch / rate
                estimated[stage.name] = (
                    f"not run (--quick on a CPU): its FLOPs at {source}'s achieved FLOP/s, a "
                    "lower bound (a small-batch greedy decode is memory-bound)"
                )
                continue
            model = models[stage.model]
            if stage.model not in built:
                built[stage.model], info = build_model(model, bench)
                result.setdefault("models", {})[stage.model] = info
            module = built[stage.model]
            rows = stage.rows * batch
            # A quick CPU run warms up at a small size: that pays the one-off costs
            # (allocator, lazy initialisation, thread pools) at a fraction of a full call.
            small = warmup[stage.name]
            warm = _inputs(small, small.rows * (1 if bench.quick_cpu else batch), bench, model)
            args = _inputs(stage, rows, bench, model)
            with torch.inference_mode(), _autocast(bench):
                for _ in range(2 if bench.cuda else 1):
                    stage.run(module, *warm)
                synchronize(bench.device)
                repeats = 1 if bench.quick_cpu else (10 if bench.cuda else bench.repeats)
                call = lambda module=module, args=args, stage=stage: stage.run(module, *args)  # noqa: E731
                seconds = seconds_per_call(call, bench, repeats=repeats)
                if bench.quick_cpu and seconds < 1.0:
                    # Cheap calls are noisy, and --quick skipped their full-size warm-up.
                    seconds = min(seconds, seconds_per_call(call, bench, repeats=3))
                times[stage.name] = seconds
            del args, warm
        result["peak_memory_bytes"][str(batch)] = memory.peak()
        total = 0.0
        for stage in pipeline.stages:
            entry = result["stages"].setdefault(stage.name, {"seconds_per_image": {}})
            seconds = times[stage.name] * stage.calls / batch
            entry["seconds_per_image"][str(batch)] = round(seconds, 6)
            if stage.name in estimated:
                entry["estimated"] = estimated[stage.name]
            one = flops["stages"][stage.name]["flops_per_call"]
            rate = one * batch / times[stage.name] if times[stage.name] > 0 else None
            entry.setdefault("flop_per_s", {})[str(batch)] = rate and round(rate, -6)
            if peak and rate and stage.name not in estimated:
                entry.setdefault("mfu", {})[str(batch)] = round(rate / peak, 4)
            if stage.per_image:
                total += seconds
                if batch == 1:
                    per_image_1[stage.name] = seconds
        result["images_per_s"][str(batch)] = round(1 / total, 6) if total > 0 else None
        for stage in pipeline.stages:
            if stage.per_image and total > 0:
                share = result["stages"][stage.name]["seconds_per_image"][str(batch)] / total
                result["stages"][stage.name].setdefault("time_share", {})[str(batch)] = round(
                    share, 4
                )
    if skipped:
        result["skipped_batches"] = skipped
    return result


def release_memory() -> None:
    """Hand freed memory back: the CUDA cache, and glibc's heap (``malloc_trim``), without
    which a freed model's pages stay resident and hide the next method's peak RSS."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)


@contextlib.contextmanager
def released() -> Iterator[None]:
    """Free big models between methods (they do not fit side by side on small machines)."""
    release_memory()
    try:
        yield
    finally:
        release_memory()


def measure(spec: CostSpec, bench: Bench, *, flops_only: bool = False) -> dict[str, Any]:
    """One spec's JSON entry: FLOPs at every size, timings at ``bench.timed_sizes``."""
    entry: dict[str, Any] = {
        "method": spec.method,
        "what": spec.what,
        "size_means": spec.size_means,
        "default_size": spec.default_size,
        "sizes": {},
    }
    start = time.perf_counter()
    meta: dict[str, nn.Module] = {}
    sizes, timed = bench.sizes_for(spec)
    flops = {size: flops_report(spec, size, meta) for size in sizes}
    del meta
    for size, report in flops.items():
        entry["sizes"][str(size)] = dict(report)
        entry["note"] = spec.pipeline(size).note
    entry["flops_seconds"] = round(time.perf_counter() - start, 2)
    if flops_only:
        entry["timing"] = "FLOPs only"
        return entry
    if not bench.cuda and not spec.time_cpu:
        entry["timing"] = "not timed on a CPU (models too big for its memory in float32)"
        return entry
    if bench.quick_cpu and not spec.time_quick_cpu:
        entry["timing"] = "not timed by --quick on a CPU"
        return entry
    with released():
        built: dict[str, nn.Module] = {}
        memory = Memory(bench.device)
        entry["memory_measure"] = memory.how
        start = time.perf_counter()
        for size in timed:
            timing = time_pipeline(spec, size, flops[size], bench, built, memory)
            stages = timing.pop("stages")
            entry.setdefault("models", {}).update(timing.pop("models", {}))
            target = entry["sizes"][str(size)]
            for name, figures in stages.items():
                target["stages"][name].update(figures)
            target.update(timing)
        entry["timing_seconds"] = round(time.perf_counter() - start, 1)
        del built
    return entry


# --------------------------------------------------------------------------------------------
# Report


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def ratios(methods: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """DIRE over LaRE^2 per size: how many times more FLOPs and time DIRE spends per image."""
    if not {"lare2", "dire"} <= methods.keys():
        return {}
    out: dict[str, Any] = {"paper_claim": "LaRE^2 extracts features 8x faster than DIRE"}
    for size, lare in methods["lare2"]["sizes"].items():
        dire = methods["dire"]["sizes"].get(size)
        if dire is None:
            continue
        row: dict[str, Any] = {
            "flops": round(dire["flops_per_image"] / lare["flops_per_image"], 1),
        }
        for batch, rate in lare.get("images_per_s", {}).items():
            other = dire.get("images_per_s", {}).get(batch)
            if rate and other:
                row[f"time_batch{batch}"] = round(rate / other, 1)
        out[f"dire_over_lare2_{size}"] = row
    return out


def report_header(bench: Bench) -> dict[str, Any]:
    return {
        "benchmark": "feature_cost",
        "device": str(bench.device),
        "device_name": device_name(bench.device),
        "generator_dtype": str(bench.dtype).removeprefix("torch."),
        "classifier_dtype": "float32 under bf16 autocast" if bench.autocast else "float32",
        "channels_last": bench.channels_last,
        "autocast": "bfloat16" if bench.autocast else None,
        "sdpa": "diffusers AttnProcessor2_0 (checked), timm fused attention, transformers sdpa",
        "compile": bench.compile,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "quick": bench.quick,
        "flops_sizes": list(bench.sizes),
        "timed_sizes": list(bench.timed_sizes),
        "batch_sizes": [1, bench.batch] if bench.batch > 1 else [1],
        "peak_bf16_flops": peak_bf16_flops(device_name(bench.device)) if bench.cuda else None,
        "timing": (
            "each stage timed alone, after a warm-up, times its calls per image; "
            + (
                "CUDA events, mean of 10 calls"
                if bench.cuda
                else f"best of {1 if bench.quick else bench.repeats} wall-clock calls"
            )
            + ("; --quick on a CPU warms up at 64 px" if bench.quick_cpu else "")
        ),
    }


def _si(value: float | None, unit: str = "") -> str:
    if value is None:
        return "—"
    for scale, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.3g} {prefix}{unit}"
    return f"{value:.3g} {unit}".rstrip()


def _rate(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.3g}"


def markdown(reports: Sequence[dict[str, Any]]) -> str:
    """One README table over one or more runs (e.g. a CPU and a GPU JSON)."""
    lines = [
        "| method | size | FLOP / image | img/s, batch 1 | img/s, batch N | "
        "peak memory, batch 1 / N | device |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    notes: list[str] = []
    for report in reports:
        batches = report.get("batch_sizes", [1])
        big = str(batches[-1])
        device = f"{report['device_name']}, {report['generator_dtype']}"
        if report["device"] == "cpu":
            device += f", {report['threads']} threads"
        for name, entry in report["methods"].items():
            # an untimed entry's FLOPs are the architecture's, not the device's
            where = "FLOPs only" if isinstance(entry.get("timing"), str) else device
            for size, figures in entry["sizes"].items():
                rates = figures.get("images_per_s", {})
                mem = figures.get("peak_memory_bytes", {})
                if rates:
                    mem_text = " / ".join(_si(mem.get(b), "B") for b in ("1", big) if b in mem)
                else:
                    mem_text = "—"
                big_rate = _rate(rates.get(big)) if big != "1" else "—"
                if big != "1" and big in rates:
                    big_rate += f" (N={big})"
                lines.append(
                    f"| {name} | {size} | {_si(figures['flops_per_image'])} | "
                    f"{_rate(rates.get('1'))} | {big_rate} | {mem_text} | {where} |"
                )
        if report.get("peak_bf16_flops"):
            for name, entry in report["methods"].items():
                for size, figures in entry["sizes"].items():
                    mfu = [
                        f"{stage} {max(values['mfu'].values()):.0%}"
                        for stage, values in figures["stages"].items()
                        if values.get("mfu")
                    ]
                    if mfu:
                        notes.append(
                            f"model-FLOP utilisation, {name} at {size} px "
                            f"({report['device_name']}, best batch): " + ", ".join(mfu)
                        )
        for key, row in report.get("ratios", {}).items():
            if key.startswith("dire_over_lare2_"):
                size = key.rsplit("_", 1)[1]
                timed = ", ".join(
                    f"{v}x time at batch {k.removeprefix('time_batch')}"
                    for k, v in row.items()
                    if k.startswith("time_batch")
                )
                notes.append(
                    f"DIRE / LaRE^2 at {size} px ({report['device_name']}): {row['flops']}x "
                    f"the FLOPs{', ' + timed if timed else ''} (the paper: LaRE^2 is 8x faster)"
                )
    return "\n".join(lines + ([""] + [f"- {n}" for n in notes] if notes else []))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", action="append", help="a cost spec (repeatable); default: all")
    parser.add_argument("--quick", action="store_true", help="CPU: 256 px, single calls")
    parser.add_argument("--flops-only", action="store_true", help="count FLOPs, time nothing")
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--sizes",
        type=int,
        nargs="+",
        help=f"working sizes of every spec (default: {SIZES}, the families' specs {FAMILY_SIZES})",
    )
    parser.add_argument(
        "--batch", type=int, default=None, help="throughput batch (default: 16 CUDA, 4 CPU)"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--compile", action="store_true", help="torch.compile every model")
    for flag, what in (("channels-last", "channels-last convolutions"), ("autocast", "autocast")):
        parser.add_argument(
            f"--{flag}",
            choices=("auto", "on", "off"),
            default="auto",
            help=f"bf16 {what} (auto: on CUDA only)"
            if flag == "autocast"
            else what + " (auto: on CUDA only)",
        )
    parser.add_argument("--output", type=Path, help="write the JSON here too")
    parser.add_argument("--markdown", action="store_true", help="print the README table too")
    parser.add_argument(
        "--table",
        type=Path,
        nargs="+",
        help="print the README table of these JSON files (merged) and exit",
    )
    args = parser.parse_args(argv)
    if args.table:
        reports = [json.loads(path.read_text()) for path in args.table]
        print(markdown(reports))
        return {"reports": reports}
    check_specs()
    if args.threads:
        torch.set_num_threads(args.threads)
    # Random weights can drive activations into denormals, which are 100x slower on CPUs.
    torch.set_flush_denormal(True)
    from ldmdetect.generative.loading import default_dtype, resolve_device

    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    sizes = tuple(args.sizes or SIZES)
    bench = Bench(
        device=device,
        dtype=default_dtype(device),
        quick=args.quick,
        channels_last=args.channels_last == "on" or (args.channels_last == "auto" and cuda),
        autocast=args.autocast == "on" or (args.autocast == "auto" and cuda),
        compile=args.compile,
        batch=args.batch or (16 if cuda else 4),
        sizes=sizes,
        # --quick on a CPU times one size: 256 px, or the smallest asked for
        timed_sizes=(256 if 256 in sizes else min(sizes),) if args.quick and not cuda else sizes,
        spec_sizes=args.sizes is None,
    )
    names = args.method or list(COST_SPECS)
    unknown = [n for n in names if n not in COST_SPECS]
    if unknown:
        parser.error(f"unknown cost spec(s) {unknown}; known: {', '.join(COST_SPECS)}")
    report = report_header(bench)
    report["methods"] = {}
    for name in names:
        start = time.perf_counter()
        report["methods"][name] = measure(COST_SPECS[name], bench, flops_only=args.flops_only)
        report["methods"][name]["benchmark_seconds"] = round(time.perf_counter() - start, 1)
        print(f"{name}: {report['methods'][name]['benchmark_seconds']} s", file=sys.stderr)
    report["ratios"] = ratios(report["methods"])
    text = json.dumps(report, indent=1)
    print(text)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text + "\n")
    if args.markdown:
        print(markdown([report]))
    return report


if __name__ == "__main__":
    main()
