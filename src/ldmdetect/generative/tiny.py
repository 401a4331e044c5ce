"""Tiny random generator pipelines in the on-disk layout of every supported family.

No model hub is reachable in tests or CI, so every code path that loads generator components is
exercised on these: they are real diffusers/transformers models (SD 1/2, SDXL, SD3 and FLUX.1
classes at tiny widths), saved with ``save_pretrained`` and loaded back through the same
``from_pretrained`` calls users take; diffusers' own pipeline class of each family loads and runs
them.
"""

from __future__ import annotations

import json
import os
import string
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import torch
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    EulerDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
    FluxPipeline,
    FluxTransformer2DModel,
    SD3Transformer2DModel,
    StableDiffusion3Pipeline,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
    T5Config,
    T5EncoderModel,
    T5TokenizerFast,
)

from ldmdetect.io.files import atomic_write_text

BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"


def _byte_symbols() -> list[str]:
    """The 256 printable stand-ins for bytes used by GPT-2/CLIP byte-level BPE."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    printable += list(range(ord("®"), ord("ÿ") + 1))
    symbols, extra = {}, 0
    for b in range(256):
        if b in printable:
            symbols[b] = chr(b)
        else:
            symbols[b] = chr(256 + extra)
            extra += 1
    return [symbols[b] for b in range(256)]


def write_byte_level_tokenizer(output_dir: str | Path) -> Path:
    """Write a CLIP BPE tokenizer whose vocabulary is the 256 byte symbols and no merges.

    It tokenizes any text (one token per character) without downloading SD's 49k-token
    vocabulary, and loads through ``CLIPTokenizer.from_pretrained`` like the real one.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    symbols = _byte_symbols()
    vocab_list = symbols + [s + "</w>" for s in symbols] + [BOS_TOKEN, EOS_TOKEN]
    vocab = {tok: i for i, tok in enumerate(vocab_list)}
    atomic_write_text(output_dir / "vocab.json", json.dumps(vocab, ensure_ascii=False))
    atomic_write_text(output_dir / "merges.txt", "#version: 0.2\n")
    tokenizer = CLIPTokenizer(
        str(output_dir / "vocab.json"),
        str(output_dir / "merges.txt"),
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=EOS_TOKEN,
        model_max_length=77,
    )
    tokenizer.save_pretrained(output_dir)
    return output_dir


def byte_level_special_ids() -> tuple[int, int]:
    """(bos_id, eos_id) of the byte-level tokenizer, for the text encoder's config."""
    return 512, 513


# 64 px images / VAE factor 8: the UNet's default sample size, so pipelines default to 64x64.
TINY_IMAGE_SIZE = 64
TINY_LATENT_SIZE = TINY_IMAGE_SIZE // 8


UNetT = TypeVar("UNetT", bound=torch.nn.Module)


@contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Seed weight initialisation without depending on or disturbing the global RNG.

    diffusers and transformers initialise weights from the global generator; forking it keeps
    a seed's weights identical whatever ran before, and leaves the caller's RNG state alone.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _tiny_unet(
    cls: type[UNetT], seed: int, down_block_types: tuple[str, ...], **config: Any
) -> UNetT:
    """A seeded, eval-mode tiny UNet of ``cls`` with the widths every tiny UNet shares (two
    levels of 16 and 32 channels, one layer each, GroupNorm over 8 groups) and an up path
    that mirrors ``down_block_types`` (``CrossAttnDownBlock2D`` -> ``CrossAttnUpBlock2D``, in
    reverse order); ``config`` holds what tells the kinds apart (sizes, conditioning)."""
    up_block_types = tuple(kind.replace("Down", "Up") for kind in reversed(down_block_types))
    with _seeded(seed):
        return cls(
            block_out_channels=(16, 32),
            layers_per_block=1,
            norm_num_groups=8,
            down_block_types=down_block_types,
            up_block_types=up_block_types,
            **config,
        ).eval()


def _tiny_latent_unet(
    seed: int, down_block_types: tuple[str, ...], **config: Any
) -> UNet2DConditionModel:
    """A text-conditioned :func:`_tiny_unet` over the tiny autoencoder's 4-channel latents."""
    return _tiny_unet(
        UNet2DConditionModel,
        seed,
        down_block_types,
        sample_size=TINY_LATENT_SIZE,
        in_channels=4,
        out_channels=4,
        **config,
    )


def build_tiny_autoencoder(
    seed: int = 0,
    *,
    latent_channels: int = 4,
    scaling_factor: float = 0.18215,
    shift_factor: float | None = None,
) -> AutoencoderKL:
    """An SD-shaped KL autoencoder (4 blocks -> factor 8) at tiny widths.

    The block count, not the width, fixes the downsampling factor, so shape logic written
    against this model holds for SD 1.x/2.x/XL VAEs (4 latent channels, the default) and, with
    16 channels and a shift, for the SD3 and FLUX.1 ones, which drop the 1x1 quant convolutions.
    """
    flow_vae = shift_factor is not None
    with _seeded(seed):
        return AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            block_out_channels=(8, 16, 16, 16),
            layers_per_block=1,
            latent_channels=latent_channels,
            norm_num_groups=4,
            sample_size=TINY_IMAGE_SIZE,
            scaling_factor=scaling_factor,
            shift_factor=shift_factor,
            use_quant_conv=not flow_vae,
            use_post_quant_conv=not flow_vae,
        ).eval()


def build_tiny_unet(seed: int = 0, cross_attention_dim: int = 32) -> UNet2DConditionModel:
    """A text-conditioned UNet with SD's block kinds (cross-attention down, mid and up)."""
    return _tiny_latent_unet(
        seed,
        ("CrossAttnDownBlock2D", "DownBlock2D"),
        # In UNet2DConditionModel this legacy name means the number of heads.
        attention_head_dim=2,
        cross_attention_dim=cross_attention_dim,
    )


def build_tiny_text_encoder(
    seed: int = 0,
    hidden_size: int = 32,
    *,
    num_layers: int = 2,
    num_heads: int = 4,
    intermediate_size: int | None = None,
    projection_dim: int | None = None,
) -> CLIPTextModel | CLIPTextModelWithProjection:
    """A CLIP text tower that reads the byte-level tokenizer's ids (vocab 514, 77 positions).

    With ``projection_dim`` it is a ``CLIPTextModelWithProjection`` (SDXL's second encoder,
    both of SD3's), whose projected pooled output conditions those models.
    """
    bos_id, eos_id = byte_level_special_ids()
    config = CLIPTextConfig(
        vocab_size=eos_id + 1,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size or 2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        max_position_embeddings=77,
        bos_token_id=bos_id,
        eos_token_id=eos_id,
        # The tokenizer pads with its eos token, as SD's does.
        pad_token_id=eos_id,
        projection_dim=projection_dim or hidden_size,
    )
    cls = CLIPTextModel if projection_dim is None else CLIPTextModelWithProjection
    with _seeded(seed):
        return cls(config).eval()


# The noise schedule SD 1.x/2.x and SDXL ship (their schedulers differ in how they walk it).
SD_BETAS: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
}


def build_tiny_scheduler() -> DDIMScheduler:
    """DDIM with the scheduler config SD 1.x/2.x ship, so timestep maths matches theirs."""
    return DDIMScheduler(
        **SD_BETAS,
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        prediction_type="epsilon",
    )


def write_tiny_pipeline(output_dir: str | os.PathLike, *, seed: int = 0) -> Path:
    """Write a complete Stable Diffusion pipeline directory of tiny random components.

    ``StableDiffusionPipeline.from_pretrained(output_dir)`` loads it offline, so the loaders
    and feature extractors are tested through the exact layout real checkpoints use.
    Overwrites the components of an earlier call in the same directory.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    text_encoder = build_tiny_text_encoder(seed=seed)
    pipeline = StableDiffusionPipeline(
        vae=build_tiny_autoencoder(seed=seed),
        text_encoder=text_encoder,
        tokenizer=CLIPTokenizer.from_pretrained(
            write_byte_level_tokenizer(output_dir / "tokenizer")
        ),
        unet=build_tiny_unet(seed=seed, cross_attention_dim=text_encoder.config.hidden_size),
        scheduler=build_tiny_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipeline.save_pretrained(output_dir, safe_serialization=True)
    return output_dir


# The T5 tokenizer's vocabulary: the specials T5 reserves at ids 0-2, SentencePiece's word
# marker, then single characters; any text tokenizes (unknown characters map to <unk>).
T5_PAD, T5_EOS, T5_UNK = "<pad>", "</s>", "<unk>"
_T5_SYMBOLS = string.ascii_letters + string.digits + string.punctuation


def write_t5_tokenizer(output_dir: str | Path) -> Path:
    """Write a T5 tokenizer (``tokenizer.json``: a Unigram model over single characters).

    Built offline, without SentencePiece or T5's 32k-piece model, and loaded back by
    ``T5TokenizerFast.from_pretrained`` like the real one: pad 0, eos 1 (appended to every
    prompt), unk 2.
    """
    output_dir = Path(output_dir)
    vocab = [(T5_PAD, 0.0), (T5_EOS, 0.0), (T5_UNK, 0.0), ("\u2581", -1.0)]
    vocab += [(c, -2.0) for c in _T5_SYMBOLS] + [("\u2581" + c, -2.5) for c in _T5_SYMBOLS]
    tokenizer = T5TokenizerFast(vocab=vocab, extra_ids=0, model_max_length=512)
    tokenizer.save_pretrained(output_dir)
    return output_dir


def t5_vocab_size() -> int:
    """Ids the T5 tokenizer of :func:`write_t5_tokenizer` can emit."""
    return 4 + 2 * len(_T5_SYMBOLS)


def build_tiny_t5(seed: int = 0, d_model: int = 32) -> T5EncoderModel:
    """A one-layer T5 encoder (relative positions: any prompt length) for the T5 tokenizer."""
    config = T5Config(
        vocab_size=t5_vocab_size(),
        d_model=d_model,
        d_kv=8,
        d_ff=2 * d_model,
        num_layers=1,
        num_heads=4,
        relative_attention_num_buckets=8,
        relative_attention_max_distance=32,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )
    with _seeded(seed):
        return T5EncoderModel(config).eval()


def build_tiny_sdxl_unet(seed: int = 0) -> UNet2DConditionModel:
    """An SDXL-style UNet: cross-attention over both encoders' hidden states (32 + 32) and
    ``text_time`` added conditioning (pooled 32 + 6 size/crop ids x 8)."""
    return _tiny_latent_unet(
        seed,
        ("DownBlock2D", "CrossAttnDownBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        cross_attention_dim=64,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=32 + 6 * 8,
    )


def build_tiny_sd3_transformer(seed: int = 0) -> SD3Transformer2DModel:
    """An MMDiT on 2x2 patches of 16-channel latents; text tokens of width 32 (the T5 width,
    CLIP's padded to it), pooled projections of both CLIP encoders (32 + 32)."""
    with _seeded(seed):
        return SD3Transformer2DModel(
            sample_size=TINY_LATENT_SIZE,
            patch_size=2,
            in_channels=16,
            out_channels=16,
            num_layers=1,
            attention_head_dim=8,
            num_attention_heads=2,
            joint_attention_dim=64,
            caption_projection_dim=16,
            pooled_projection_dim=64,
            pos_embed_max_size=16,
        ).eval()


def build_tiny_flux_transformer(seed: int = 0) -> FluxTransformer2DModel:
    """A FLUX.1-dev-style transformer: tokens are 2x2-packed 16-channel latents (64 wide), T5
    tokens of width 32, CLIP's pooled 32, a guidance embedding, 3-axis rotary positions."""
    with _seeded(seed):
        return FluxTransformer2DModel(
            patch_size=1,
            in_channels=64,
            num_layers=1,
            num_single_layers=1,
            attention_head_dim=16,
            num_attention_heads=2,
            joint_attention_dim=32,
            pooled_projection_dim=32,
            guidance_embeds=True,
            axes_dims_rope=(4, 6, 6),
        ).eval()


def build_tiny_sdxl_scheduler() -> EulerDiscreteScheduler:
    """Euler with the noise schedule SDXL ships (the SD betas, ``leading`` spacing)."""
    return EulerDiscreteScheduler(
        **SD_BETAS,
        steps_offset=1,
        timestep_spacing="leading",
        prediction_type="epsilon",
    )


def build_tiny_flow_scheduler(family: str) -> FlowMatchEulerDiscreteScheduler:
    """Flow-matching Euler as SD3 (static shift 3.0) or FLUX.1 (shift from the resolution)
    ship it."""
    if family == "sd3":
        return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0)
    return FlowMatchEulerDiscreteScheduler(
        num_train_timesteps=1000,
        shift=3.0,
        use_dynamic_shifting=True,
        base_shift=0.5,
        max_shift=1.15,
        base_image_seq_len=256,
        max_image_seq_len=4096,
    )


def _clip_tokenizer(directory: Path) -> CLIPTokenizer:
    return CLIPTokenizer.from_pretrained(write_byte_level_tokenizer(directory))


def _tiny_sdxl(output_dir: Path, seed: int) -> StableDiffusionXLPipeline:
    return StableDiffusionXLPipeline(
        vae=build_tiny_autoencoder(seed=seed, scaling_factor=0.13025),
        text_encoder=build_tiny_text_encoder(seed=seed),
        text_encoder_2=build_tiny_text_encoder(seed=seed + 1, projection_dim=32),
        tokenizer=_clip_tokenizer(output_dir / "tokenizer"),
        tokenizer_2=_clip_tokenizer(output_dir / "tokenizer_2"),
        unet=build_tiny_sdxl_unet(seed=seed),
        scheduler=build_tiny_sdxl_scheduler(),
    )


def _tiny_sd3(output_dir: Path, seed: int) -> StableDiffusion3Pipeline:
    return StableDiffusion3Pipeline(
        transformer=build_tiny_sd3_transformer(seed=seed),
        scheduler=build_tiny_flow_scheduler("sd3"),
        vae=build_tiny_autoencoder(
            seed=seed, latent_channels=16, scaling_factor=1.5305, shift_factor=0.0609
        ),
        text_encoder=build_tiny_text_encoder(seed=seed, projection_dim=32),
        tokenizer=_clip_tokenizer(output_dir / "tokenizer"),
        text_encoder_2=build_tiny_text_encoder(seed=seed + 1, projection_dim=32),
        tokenizer_2=_clip_tokenizer(output_dir / "tokenizer_2"),
        text_encoder_3=build_tiny_t5(seed=seed, d_model=64),
        tokenizer_3=T5TokenizerFast.from_pretrained(write_t5_tokenizer(output_dir / "tokenizer_3")),
    )


def _tiny_flux(output_dir: Path, seed: int) -> FluxPipeline:
    return FluxPipeline(
        scheduler=build_tiny_flow_scheduler("flux"),
        vae=build_tiny_autoencoder(
            seed=seed, latent_channels=16, scaling_factor=0.3611, shift_factor=0.1159
        ),
        text_encoder=build_tiny_text_encoder(seed=seed),
        tokenizer=_clip_tokenizer(output_dir / "tokenizer"),
        text_encoder_2=build_tiny_t5(seed=seed, d_model=32),
        tokenizer_2=T5TokenizerFast.from_pretrained(write_t5_tokenizer(output_dir / "tokenizer_2")),
        transformer=build_tiny_flux_transformer(seed=seed),
    )


_FAMILY_BUILDERS = {"sdxl": _tiny_sdxl, "sd3": _tiny_sd3, "flux": _tiny_flux}
TINY_FAMILIES: tuple[str, ...] = ("sd", *_FAMILY_BUILDERS)


def write_tiny_family_pipeline(
    output_dir: str | os.PathLike, family: str = "sd", *, seed: int = 0
) -> Path:
    """Write a tiny random pipeline of ``family`` (sd, sdxl, sd3 or flux) to ``output_dir``.

    Each is its family's diffusers pipeline class, saved with ``save_pretrained``: e.g.
    ``FluxPipeline.from_pretrained(output_dir)`` loads it offline and generates 64 px images.
    """
    if family == "sd":
        return write_tiny_pipeline(output_dir, seed=seed)
    if family not in _FAMILY_BUILDERS:
        raise ValueError(f"unknown tiny family {family!r}; choose from {', '.join(TINY_FAMILIES)}")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    pipeline = _FAMILY_BUILDERS[family](output_dir, seed)
    pipeline.save_pretrained(output_dir, safe_serialization=True)
    return output_dir
