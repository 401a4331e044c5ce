"""Train the mini LDM: the recipe behind ``ldmdetect.generative.mini.mini_ldm_dir()``.

    python recipes/mini_ldm/train.py --output DIR [--threads 2] [--seed 0] [--compile]

No Stable Diffusion weights are reachable offline, yet detectors that exploit the generator's
autoencoder need a *trained* LDM: a random autoencoder leaves no faithful-reconstruction traces
and a random UNet generates noise. This script trains one on CPU from the colour photos bundled
with scikit-image, scikit-learn and matplotlib:

1. an ``AutoencoderKL`` (4 latent channels like SD, downsampling factor 4 instead of 8 so that
   64 px patches reconstruct faithfully), MSE loss plus SD's small KL term;
2. a ``UNet2DConditionModel`` on its latents (epsilon prediction, SD's DDPM noise schedule),
   conditioned on a frozen random CLIP text encoder fed "a photo of a {subject}" captions.

It writes a ``StableDiffusionPipeline`` directory in safetensors (autoencoder and UNet in fp16,
the tiny text encoder in fp32), ``training_log.json``, ``samples.png`` and the model card. The
defaults of :class:`MiniLDMConfig` are the shipped model's logged config.

Like diffusers' ``examples/``, this is a training script next to the package, not part of it:
the installed package only loads the shipped weights. What it shares with the mini flow model's
recipe (data, the autoencoder phase, the training loop with diffusers' ``EMAModel``,
transformers' cosine schedule and ``accelerate`` checkpoints, so that an interrupted run
resumes where its last checkpoint left off and ends with the same weights as an uninterrupted
one, and the figure helpers) is in ``recipes/common.py``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    DDPMScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from diffusers.models.attention_processor import AttnProcessor
from transformers import CLIPTextModel, CLIPTokenizer

from ldmdetect.generative.mini import CAPTIONS
from ldmdetect.generative.tiny import build_tiny_text_encoder, write_byte_level_tokenizer
from ldmdetect.io.files import atomic_write_text

# The pieces both mini generator recipes share live in recipes/common.py; a recipe runs as a
# script (its own folder on the path), so the recipes folder is put beside it.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import (
    Clock,
    Interrupted,
    RecipeConfig,
    StepCallback,
    adamw_optimizer,
    autocast,
    autoencoder_phase,
    compile_loss,
    data_section,
    directory_size,
    encode_latent_pool,
    heldout_patches,
    heldout_rows,
    load_photos,
    machine_info,
    parameter_counts,
    psnr,
    reconstruct,
    sample_patches,
    save_grid,
    say,
    to_pil,
    train_with_ema,
    training_photo_names,
)
from common import build_autoencoder as common_build_autoencoder
from common import lr_schedule as _lr_schedule

# What tests and recipes/mini_ldm/speed.py use from here, shared pieces included.
__all__ = [
    "Interrupted",
    "MiniLDMConfig",
    "_lr_schedule",
    "adamw_optimizer",
    "build_autoencoder",
    "build_unet",
    "compile_loss",
    "heldout_patches",
    "load_photos",
    "psnr",
    "reconstruct",
    "sample_patches",
    "train_mini_ldm",
    "training_photo_names",
    "write_model_card",
    "write_sample_grid",
]

# Stable Diffusion v1's noise schedule, so that timesteps mean the same noise level as in SD
# (LaRE's fixed t=200 and DDIM inversion depend on it).
SD_SCHEDULER_CONFIG: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "prediction_type": "epsilon",
    "clip_sample": False,
}

# Fields that only change speed, not the result, so the shipped log need not record them.
SPEED_ONLY_FIELDS = ("unet_plain_attention",)


@dataclass
class MiniLDMConfig(RecipeConfig):
    """Every knob of the recipe; the defaults are the shipped model's (its training_log.json)."""

    seed: int = 0
    # Data: square patches cut from photos shrunk by a random zoom (log-uniform in zoom_range,
    # 1.0 = native resolution), so that patches span close-ups to whole-object views.
    patch_size: int = 64
    zoom_range: tuple[float, float] = (0.25, 1.0)
    holdout: tuple[str, ...] = ("china", "grace_hopper")
    eval_patches: int = 256
    # Autoencoder. len(ae_block_out_channels) - 1 halvings: 3 widths = factor 4.
    ae_block_out_channels: tuple[int, ...] = (32, 64, 128)
    ae_layers_per_block: int = 1
    latent_channels: int = 4
    ae_steps: int = 3000
    ae_batch_size: int = 16
    # Progressive resizing: the first ae_small_patch_steps steps train on ae_small_patch_size
    # patches (same zooms, a smaller field of view). The autoencoder is convolutional, so what it
    # learns there carries over to full patches, and a step costs about a third (a quarter of
    # the pixels; recipes/mini_ldm/speed.py). The last steps and every evaluation use patch_size.
    ae_small_patch_size: int = 32
    ae_small_patch_steps: int = 2000
    ae_lr: float = 3e-3
    ae_loss: str = "mse"  # "mse" (what PSNR measures; +1.3 dB at 200 steps here) or "l1" (SD's)
    # KL weight relative to the summed per-pixel L1 loss, SD's ratio: the latent stays close to
    # a Gaussian without costing reconstruction detail.
    kl_weight: float = 1e-6
    # Initial posterior log-variance. diffusers' init gives std ~1 against a mean of std ~0.2, so
    # the decoder would first see mostly noise and learn slowly; SD's trained VAE has a small std.
    ae_initial_logvar: float = -6.0
    ae_eval_every: int = 250
    # Frozen random text encoder.
    text_hidden_size: int = 64
    text_layers: int = 2
    text_heads: int = 4
    # UNet on the latents; cross-attention where unet_cross_attention is True.
    unet_block_out_channels: tuple[int, ...] = (64, 128, 128)
    unet_cross_attention: tuple[bool, ...] = (False, True, True)
    unet_layers_per_block: int = 1
    # Channels per attention head (SD's UNets use 40-160); see build_unet for diffusers' naming.
    unet_attention_head_dim: int = 32
    unet_steps: int = 2000
    unet_batch_size: int = 32
    unet_lr: float = 1e-3
    ema_decay: float = 0.999
    # Train with diffusers' plain AttnProcessor (bmm + softmax, same maths): under bf16 autocast
    # torch's CPU SDPA kernel is slow on these short sequences (UNet step, 1 thread: 0.78 CPU s
    # plain vs. 2.0 SDPA; fp32 SDPA 1.25; recipes/mini_ldm/speed.py). Inference keeps SDPA.
    unet_plain_attention: bool = True
    # Share of training captions replaced by "" so that classifier-free guidance works.
    caption_dropout: float = 0.1
    latent_pool_size: int = 4096
    # Shared by both phases.
    warmup_steps: int = 50
    norm_num_groups: int = 32
    grad_clip: float = 1.0
    # bfloat16 autocast for training forward passes: faster on CPUs with native bf16
    # (autoencoder step, 1 thread: 1.19 CPU s vs. 1.91 in fp32; slow where bf16 is emulated:
    # turn off there). Evaluation and the saved weights are not bf16.
    bf16_autocast: bool = True
    log_every: int = 25
    checkpoint_every: int = 250

    def __post_init__(self) -> None:
        for size in (self.patch_size, self.ae_small_patch_size):
            if size % self.downsampling_factor:
                raise ValueError(
                    f"patch size {size} is not a multiple of the autoencoder's downsampling "
                    f"factor {self.downsampling_factor}"
                )


# ----------------------------------------------------------------------------------------------
# Models


def build_autoencoder(config: MiniLDMConfig) -> AutoencoderKL:
    """A randomly initialised ``AutoencoderKL`` of the recipe's architecture."""
    return common_build_autoencoder(config)


def build_unet(config: MiniLDMConfig) -> UNet2DConditionModel:
    """A randomly initialised ``UNet2DConditionModel`` for the recipe's latents."""
    if len(config.unet_cross_attention) != len(config.unet_block_out_channels):
        raise ValueError("unet_cross_attention needs one flag per unet_block_out_channels entry")
    uneven = [c for c in config.unet_block_out_channels if c % config.unet_attention_head_dim]
    if uneven:
        raise ValueError(
            f"unet_attention_head_dim {config.unet_attention_head_dim} does not divide the "
            f"widths {uneven}"
        )
    # UNet2DConditionModel's `attention_head_dim` is, despite its name, the number of heads per
    # block (diffusers issue #2011; SD 2's config passes [5, 10, 20, 20] for 64-channel heads),
    # so the heads are computed from the widths here.
    heads = tuple(c // config.unet_attention_head_dim for c in config.unet_block_out_channels)
    down = tuple(
        "CrossAttnDownBlock2D" if a else "DownBlock2D" for a in config.unet_cross_attention
    )
    up = tuple(
        "CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(config.unet_cross_attention)
    )
    return UNet2DConditionModel(
        sample_size=config.latent_size,
        in_channels=config.latent_channels,
        out_channels=config.latent_channels,
        down_block_types=down,
        up_block_types=up,
        block_out_channels=config.unet_block_out_channels,
        layers_per_block=config.unet_layers_per_block,
        cross_attention_dim=config.text_hidden_size,
        attention_head_dim=heads,
        norm_num_groups=config.norm_num_groups,
    )


_TAG = "mini-ldm"


def _unet_recipe(config: MiniLDMConfig) -> str:
    return json.dumps({k: v for k, v in config.to_dict().items() if k not in SPEED_ONLY_FIELDS})


@torch.no_grad()
def _encode_prompts(
    tokenizer: CLIPTokenizer, text_encoder: CLIPTextModel, prompts: Sequence[str]
) -> torch.Tensor:
    """Prompt embeddings exactly as ``StableDiffusionPipeline.encode_prompt`` computes them."""
    ids = tokenizer(
        list(prompts),
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids
    return text_encoder(ids)[0]


def _train_unet(
    config: MiniLDMConfig,
    vae: AutoencoderKL,
    photos: list[torch.Tensor],
    captions: list[str],
    tokenizer: CLIPTokenizer,
    text_encoder: CLIPTextModel,
    work: Path,
    progress: bool,
    on_step: StepCallback | None,
    torch_compile: bool,
) -> tuple[UNet2DConditionModel, float, dict[str, Any]]:
    """Phase 2: DDPM epsilon-prediction training on scaled latents; returns the EMA UNet."""
    clock = Clock()
    means, stds, sources = encode_latent_pool(vae, photos, config)
    # SD's convention: latents are multiplied by scaling_factor = 1 / std of training latents.
    generator = torch.Generator().manual_seed(config.seed + 3)
    sampled = means + stds * torch.randn(means.shape, generator=generator)
    scaling_factor = float(1.0 / sampled.std())
    embeddings = _encode_prompts(tokenizer, text_encoder, [*captions, ""])
    empty = len(captions)
    say(progress, _TAG, f"latent pool {tuple(means.shape)}, scaling_factor {scaling_factor:.4f}")

    torch.manual_seed(config.seed)
    unet = build_unet(config)
    if config.unet_plain_attention:
        unet.set_attn_processor(AttnProcessor())
    noise_scheduler = DDPMScheduler(**SD_SCHEDULER_CONFIG)

    def draw() -> tuple[torch.Tensor, ...]:
        index = torch.randint(len(means), (config.unet_batch_size,), generator=generator)
        noise = torch.randn(means[index].shape, generator=generator)
        latents = (means[index] + stds[index] * noise) * scaling_factor
        prompt = sources[index].clone()
        dropped = torch.rand(len(index), generator=generator) < config.caption_dropout
        prompt[dropped] = empty
        timesteps = torch.randint(
            noise_scheduler.config.num_train_timesteps, (len(index),), generator=generator
        )
        epsilon = torch.randn(latents.shape, generator=generator)
        noisy = noise_scheduler.add_noise(latents, epsilon, timesteps)
        return noisy, timesteps, embeddings[prompt], epsilon

    def make_loss(model: torch.nn.Module):
        def noise_loss(
            noisy: torch.Tensor,
            timesteps: torch.Tensor,
            text: torch.Tensor,
            epsilon: torch.Tensor,
        ) -> torch.Tensor:
            with autocast(config):
                prediction = model(noisy, timesteps, text).sample.float()
            return F.mse_loss(prediction, epsilon)

        return noise_loss

    averaged, log = train_with_ema(
        config,
        "unet",
        unet,
        steps=config.unet_steps,
        lr=config.unet_lr,
        draw=draw,
        make_loss=make_loss,
        build=lambda: build_unet(config),
        generator=generator,
        log={"scaling_factor": scaling_factor},
        work=work,
        recipe=_unet_recipe(config),
        clock=clock,
        tag=_TAG,
        progress=progress,
        on_step=on_step,
        torch_compile=torch_compile,
    )
    return averaged, scaling_factor, log


def train_mini_ldm(
    config: MiniLDMConfig,
    output_dir: str | Path,
    *,
    progress: bool = True,
    on_step: StepCallback | None = None,
    torch_compile: bool = False,
) -> Path:
    """Train the autoencoder, then the UNet, and write a ``StableDiffusionPipeline`` directory.

    The autoencoder and UNet are stored in fp16 (the shipped copy must stay small), the text
    encoder (a few hundred kB) in fp32. ``StableDiffusionPipeline.from_pretrained(dir)`` with no
    dtype then runs in fp32 throughout: diffusers loads its models in fp32 unless told
    otherwise, while transformers loads a model in the dtype its config records, so an fp16
    text encoder would meet an fp32 UNet. ``training_log.json`` records the config, losses,
    held-out PSNR (fp32 and after the fp16 round trip), wall/CPU time and the machine.

    Interrupted runs resume from ``output_dir/_checkpoints`` (``Accelerator.save_state`` every
    ``checkpoint_every`` steps) when the config is unchanged, and end with the same weights as
    an uninterrupted run. ``on_step(phase, step)`` is called after every optimisation step.

    ``torch_compile`` runs each phase's loss through ``torch.compile`` (needs a C++ compiler;
    a one-off compile of a few minutes, then faster steps: ``recipes/mini_ldm/speed.py``). It
    is a way of running the recipe, not part of it: it is logged beside the thread count, not
    in the config, and changes the weights only by floating-point rounding.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    work = output_dir / "_checkpoints"
    clock = Clock()
    names = training_photo_names(config)
    photos = load_photos(names)
    captions = [CAPTIONS[n] for n in names]
    say(progress, _TAG, f"training photos: {names}; held out: {list(config.holdout)}")

    vae, ae_log, reused_time = autoencoder_phase(
        config,
        photos,
        work,
        progress,
        on_step,
        torch_compile,
        build=build_autoencoder,
        tag=_TAG,
    )

    tokenizer = CLIPTokenizer.from_pretrained(write_byte_level_tokenizer(work / "tokenizer"))
    text_encoder = build_tiny_text_encoder(
        config.seed,
        config.text_hidden_size,
        num_layers=config.text_layers,
        num_heads=config.text_heads,
        intermediate_size=4 * config.text_hidden_size,
    ).requires_grad_(False)
    unet, scaling_factor, unet_log = _train_unet(
        config,
        vae,
        photos,
        captions,
        tokenizer,
        text_encoder,
        work,
        progress,
        on_step,
        torch_compile,
    )
    vae.register_to_config(scaling_factor=scaling_factor)

    pipeline = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=DDIMScheduler(**SD_SCHEDULER_CONFIG, set_alpha_to_one=False, steps_offset=1),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipeline.to(dtype=torch.float16)
    # fp32 text encoder: its stored dtype is what transformers loads by default (see above).
    pipeline.text_encoder.to(dtype=torch.float32)
    pipeline.save_pretrained(output_dir, safe_serialization=True)

    # The fp16 weights are what ships, so report their PSNR too (loaded back like users do).
    shipped = AutoencoderKL.from_pretrained(output_dir / "vae", torch_dtype=torch.float32)
    evaluation = heldout_patches(config)
    fp16_psnr = psnr(evaluation, reconstruct(shipped, evaluation)).mean().item()
    # Phase times add up across resumed invocations; the clock covers only this one.
    total = {k: round(v + reused_time[k], 1) for k, v in clock.read().items()}
    log = {
        "config": config.to_dict(),
        "downsampling_factor": config.downsampling_factor,
        "training_photos": {n: CAPTIONS[n] for n in names},
        "heldout_photos": {n: CAPTIONS[n] for n in config.holdout},
        "heldout_psnr_db": round(ae_log["final_heldout_psnr"], 3),
        "heldout_psnr_fp16_db": round(fp16_psnr, 3),
        "autoencoder": ae_log,
        "unet": unet_log,
        "time": total,
        "torch_threads": torch.get_num_threads(),
        "torch_compile": torch_compile,
        "machine": machine_info(),
        "parameters": parameter_counts({"vae": vae, "unet": unet, "text_encoder": text_encoder}),
    }
    atomic_write_text(output_dir / "training_log.json", json.dumps(log, indent=1))
    shutil.rmtree(work)
    say(
        progress, _TAG, f"done in {total['wall_s']} s wall / {total['cpu_s']} s CPU -> {output_dir}"
    )
    return output_dir


# ----------------------------------------------------------------------------------------------
# Model card figure


def write_sample_grid(
    pipeline_dir: str | Path,
    path: str | Path,
    *,
    prompts: Sequence[str] | None = None,
    per_prompt: int = 6,
    num_inference_steps: int = 50,
    guidance_scale: float = 3.0,
    heldout: int = 6,
    scale: int = 2,
    seed: int = 0,
) -> Path:
    """Write the model card's PNG: samples per prompt, then held-out patches and reconstructions.

    Pixels are enlarged with nearest-neighbour only, so that the grid shows what the model
    outputs, not a resampler's smoothing.
    """
    pipeline_dir = Path(pipeline_dir)
    config = MiniLDMConfig.from_dict(
        json.loads((pipeline_dir / "training_log.json").read_text())["config"]
    )
    pipeline = StableDiffusionPipeline.from_pretrained(pipeline_dir, torch_dtype=torch.float32)
    pipeline.set_progress_bar_config(disable=True)
    if prompts is None:
        prompts = [CAPTIONS[n] for n in training_photo_names(config)]

    # Prompt i's noise is drawn from seed + i, as one call per prompt would draw it, and all
    # prompts sample in one batch: the same pixels, about 15% less time on a CPU.
    latent_shape = (per_prompt, pipeline.unet.config.in_channels, *(2 * [config.latent_size]))
    latents = torch.cat(
        [
            torch.randn(latent_shape, generator=torch.Generator().manual_seed(seed + i))
            for i in range(len(prompts))
        ]
    )
    images = pipeline(
        [prompt for prompt in prompts for _ in range(per_prompt)],
        num_inference_steps=num_inference_steps,
        guidance_scale=guidance_scale,
        latents=latents,
        output_type="pt",
    ).images
    rows = [
        (prompt, to_pil(chunk * 2 - 1, scale))
        for prompt, chunk in zip(prompts, images.split(per_prompt), strict=True)
    ]
    rows += heldout_rows(config, pipeline.vae, heldout, scale)
    return save_grid(rows, config.patch_size * scale, path)


def write_model_card(pipeline_dir: str | Path) -> Path:
    """Write ``README.md`` from ``training_log.json``, so the card's numbers are the run's."""
    pipeline_dir = Path(pipeline_dir)
    log = json.loads((pipeline_dir / "training_log.json").read_text())
    config = MiniLDMConfig.from_dict(log["config"])
    ae, unet, time_ = log["autoencoder"], log["unet"], log["time"]
    params = log["parameters"]
    curve = ", ".join(f"{s}: {v:.1f}" for s, v in ae["heldout_psnr"])
    mb = directory_size(pipeline_dir) / 2**20
    plain = log["config"].get("unet_plain_attention")  # speed only; older logs lack it
    attention = "not recorded" if plain is None else ("plain" if plain else "SDPA")
    small = config.ae_small_patch_size
    small_note = (
        f"\n  It stays low while the autoencoder sees only {small} px patches and rises within"
        " a few hundred full-patch steps."
        if 0 < config.ae_small_patch_steps < config.ae_steps
        else ""
    )
    text = f"""# mini-ldm: a miniature latent diffusion model, trained on CPU

**What it is.** A complete, *trained* latent diffusion model in Stable Diffusion's on-disk layout
(`StableDiffusionPipeline`: `vae/`, `unet/`, `text_encoder/`, `tokenizer/`, `scheduler/`), small
enough to ship inside ldmdetect ({mb:.1f} MiB of safetensors: autoencoder and UNet in fp16, text
encoder in fp32, so a plain `from_pretrained` runs in fp32). It is ldmdetect's embedded
default generator and in-house test bed: its images really are "generated by an LDM", in
miniature (64x64 px), and its autoencoder reconstructs real photos faithfully, so
reconstruction-based detectors (AE, AEROBLADE, LaRE, DIRE, FakeInversion) can be trained and
tested end to end offline.

**What it is not.** A stand-in for Stable Diffusion in real-world detection. It was trained on
{len(log["training_photos"])} photos; detectors trained on its traces say nothing about SD, SDXL,
Midjourney or any production generator. Use real SD weights for that.

```python
from diffusers import StableDiffusionPipeline
from ldmdetect.generative.mini import mini_ldm_dir

pipe = StableDiffusionPipeline.from_pretrained(mini_ldm_dir())  # fp32; torch_dtype= to change
image = pipe("a photo of a cat", num_inference_steps=50, guidance_scale=3.0).images[0]  # 64x64
```

{data_section(config, log)}

## Recipe (seed {config.seed}; `MiniLDMConfig` defaults)
- **Autoencoder**: `AutoencoderKL`, widths {list(config.ae_block_out_channels)},
  {config.ae_layers_per_block} resnet per level, downsampling factor
  **{log["downsampling_factor"]}**, **{config.latent_channels} latent channels** like SD,
  {params["vae"] / 1e6:.2f} M parameters. {config.ae_steps} steps, batch {config.ae_batch_size},
  the first {config.ae_small_patch_steps} on {small}x{small} patches (same zooms, a smaller
  field of view; a step costs about a third), the rest on full patches,
  AdamW lr {config.ae_lr} (warm-up {config.warmup_steps}, cosine to a tenth),
  {config.ae_loss.upper()} reconstruction loss + KL weight {config.kl_weight} (SD's ratio),
  initial posterior log-variance {config.ae_initial_logvar}.
  Factor 4, not SD's 8: in an earlier 300-step trial at 64 px, factor 8 reached 17.4 dB and
  factor 4 21.3 dB; factor 8 leaves too little latent to be faithful on 64 px patches.
- **Text encoder**: frozen, randomly initialised `CLIPTextModel` (hidden
  {config.text_hidden_size}, {config.text_layers} layers, {config.text_heads} heads) with the
  byte-level CLIP tokenizer (77 tokens, SD's layout). Random but fixed: the UNet learns to read
  its embeddings of the captions.
- **UNet**: `UNet2DConditionModel`, widths {list(config.unet_block_out_channels)},
  cross-attention {list(config.unet_cross_attention)} with heads of
  {config.unet_attention_head_dim} channels, {params["unet"] / 1e6:.2f} M parameters,
  on {config.latent_size}x{config.latent_size}x{config.latent_channels} latents scaled by
  `scaling_factor` = 1/std of the training latents = {unet["scaling_factor"]:.4f} (stored in
  `vae/config.json` like SD's 0.18215). Epsilon prediction, DDPM with SD's schedule
  (scaled_linear 0.00085..0.012, 1000 steps), {config.unet_steps} steps, batch
  {config.unet_batch_size}, AdamW lr {config.unet_lr} (same warm-up and cosine), EMA
  {config.ema_decay} (shipped), caption dropout {config.caption_dropout} for classifier-free
  guidance, latents of a fixed pool of {config.latent_pool_size} training patches (posterior
  re-sampled each step). Attention processor in training (speed only, same maths):
  {attention}.
- Scheduler shipped: `DDIMScheduler` with SD v1's config. bf16 autocast in training:
  {config.bf16_autocast}; training steps through `torch.compile`: {log.get("torch_compile", False)}.

## Results
- **Held-out reconstruction PSNR: {log["heldout_psnr_db"]:.2f} dB** (fp32 weights),
  **{log["heldout_psnr_fp16_db"]:.2f} dB** with the shipped fp16 weights. Target: >= 24 dB
  (SD's VAE: ~24.5 dB on COCO at 256 px).
- Held-out PSNR during training (step: dB; always on full patches): {curve}.{small_note}
- Autoencoder loss ({config.ae_loss}): {ae["loss"][0]:.4f} -> {ae["loss"][-1]:.4f};
  L1: {ae["l1"][0]:.4f} -> {ae["l1"][-1]:.4f}.
- UNet epsilon MSE: {unet["loss"][0]:.4f} -> {unet["loss"][-1]:.4f}
  (mean of the last 10 logs: {sum(unet["loss"][-10:]) / len(unet["loss"][-10:]):.4f}).
- Time: **{time_["wall_s"] / 60:.1f} min wall, {time_["cpu_s"] / 60:.1f} min CPU** in all
  (autoencoder {ae["time"]["wall_s"] / 60:.1f} / {ae["time"]["cpu_s"] / 60:.1f} min, UNet
  {unet["time"]["wall_s"] / 60:.1f} / {unet["time"]["cpu_s"] / 60:.1f} min), torch threads
  {log["torch_threads"]}, {log["machine"]["cpu_count"]} CPUs ({log["machine"]["processor"]},
  {log["machine"]["platform"]}). Wall time depends on whatever else the machine runs; CPU
  time over threads estimates a run with the cores to itself.

## Samples
![samples](samples.png)

Rows 1-{len(log["training_photos"])}: generated from each training caption (DDIM 50 steps,
guidance 3.0, 6 seeds). Last two rows: held-out photo patches and their reconstructions.
Pixels are enlarged 2x with nearest-neighbour only.

## Reproduce
From a source checkout of ldmdetect (the recipe is a script beside the package, not installed
with it): `python recipes/mini_ldm/train.py --output OUTPUT_DIR` trains with the defaults
(`MiniLDMConfig`, equal to this model's logged config) and writes this directory: weights,
`training_log.json`, `samples.png` and this card. Checkpoints are `accelerate` state folders in
`OUTPUT_DIR/_checkpoints`; an interrupted run resumes from the last one when rerun with the same
command.
"""
    return atomic_write_text(pipeline_dir / "README.md", text)


def main(argv: Sequence[str] | None = None) -> None:
    """Retrain the shipped mini LDM (defaults = its logged config) and write its model card."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--output", type=Path, required=True, help="pipeline directory to write")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (recorded)")
    parser.add_argument("--seed", type=int, default=MiniLDMConfig.seed)
    parser.add_argument(
        "--compile",
        action="store_true",
        help="compile the training steps with torch.compile (needs a C++ compiler; faster "
        "steps after a few minutes of compiling)",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = train_mini_ldm(MiniLDMConfig(seed=args.seed), args.output, torch_compile=args.compile)
    write_sample_grid(out, out / "samples.png")
    write_model_card(out)


if __name__ == "__main__":
    main()
