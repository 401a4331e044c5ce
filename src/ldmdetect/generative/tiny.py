"""Tiny random generator components in Stable Diffusion's on-disk layout.

No model hub is reachable in tests or CI, so every code path that loads SD components is
exercised on these: they are real diffusers/transformers models, saved with
``save_pretrained`` and loaded back through the same ``from_pretrained`` calls users take.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

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


@contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Seed weight initialisation without depending on or disturbing the global RNG.

    diffusers and transformers initialise weights from the global generator; forking it keeps
    a seed's weights identical whatever ran before, and leaves the caller's RNG state alone.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def build_tiny_autoencoder(seed: int = 0) -> AutoencoderKL:
    """An SD-shaped KL autoencoder (4 latent channels, 4 blocks -> factor 8) at tiny widths.

    The block count, not the width, fixes the downsampling factor, so shape logic written
    against this model holds for SD 1.x/2.x/XL VAEs.
    """
    with _seeded(seed):
        return AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            block_out_channels=(8, 16, 16, 16),
            layers_per_block=1,
            latent_channels=4,
            norm_num_groups=4,
            sample_size=TINY_IMAGE_SIZE,
            scaling_factor=0.18215,
        ).eval()


def build_tiny_unet(seed: int = 0, cross_attention_dim: int = 32) -> UNet2DConditionModel:
    """A text-conditioned UNet with SD's block kinds (cross-attention down, mid and up)."""
    with _seeded(seed):
        return UNet2DConditionModel(
            sample_size=TINY_LATENT_SIZE,
            in_channels=4,
            out_channels=4,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            block_out_channels=(16, 32),
            layers_per_block=1,
            norm_num_groups=8,
            # In UNet2DConditionModel this legacy name means the number of heads.
            attention_head_dim=2,
            cross_attention_dim=cross_attention_dim,
        ).eval()


def build_tiny_text_encoder(
    seed: int = 0,
    hidden_size: int = 32,
    *,
    num_layers: int = 2,
    num_heads: int = 4,
    intermediate_size: int | None = None,
) -> CLIPTextModel:
    """A CLIP text tower that reads the byte-level tokenizer's ids (vocab 514, 77 positions)."""
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
    )
    with _seeded(seed):
        return CLIPTextModel(config).eval()


def build_tiny_scheduler() -> DDIMScheduler:
    """DDIM with the scheduler config SD 1.x/2.x ship, so timestep maths matches theirs."""
    return DDIMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
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
