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
the installed package only loads the shipped weights. The moving average is diffusers'
``EMAModel``; the learning-rate schedule is transformers' cosine-with-minimum schedule; the
checkpoints are ``accelerate.Accelerator.save_state`` folders, so an interrupted run resumes
where its last checkpoint left off and ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import shutil
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    DDPMScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from diffusers.models.attention_processor import AttnProcessor
from diffusers.training_utils import EMAModel
from PIL import Image, ImageDraw
from transformers import CLIPTextModel, CLIPTokenizer
from transformers.optimization import get_cosine_with_min_lr_schedule_with_warmup

from ldmdetect.features.reconstruction import reconstruct as features_reconstruct
from ldmdetect.generative.mini import CAPTIONS
from ldmdetect.generative.tiny import build_tiny_text_encoder, write_byte_level_tokenizer
from ldmdetect.io.files import atomic_path, atomic_write_text
from ldmdetect.io.images import load_image, pil_to_uint8
from ldmdetect.io.samples import sample_photos

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


def _photo_paths() -> dict[str, Path]:
    """The bundled photos under the recipe's names (motorcycle: the left view only, the right
    one is a near-duplicate that would double its weight)."""
    photos = dict(sample_photos())
    photos["motorcycle"] = photos.pop("motorcycle_left")
    photos.pop("motorcycle_right", None)
    return photos


@dataclass
class MiniLDMConfig:
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

    @property
    def downsampling_factor(self) -> int:
        return 2 ** (len(self.ae_block_out_channels) - 1)

    @property
    def latent_size(self) -> int:
        return self.patch_size // self.downsampling_factor

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MiniLDMConfig:
        """Inverse of :meth:`to_dict`; JSON lists become the tuples the fields declare."""
        known = {f.name: f for f in fields(cls)}
        kwargs = {}
        for key, value in data.items():
            if key not in known:
                raise ValueError(f"unknown MiniLDMConfig field {key!r}")
            kwargs[key] = tuple(value) if isinstance(value, list) else value
        return cls(**kwargs)


# ----------------------------------------------------------------------------------------------
# Data


def load_photos(names: Sequence[str]) -> list[torch.Tensor]:
    """The named bundled photos as uint8 ``3xHxW`` tensors."""
    paths = _photo_paths()
    unknown = [n for n in names if n not in paths]
    if unknown:
        raise KeyError(f"unknown photos {unknown}; known: {sorted(paths)}")
    photos = [pil_to_uint8(load_image(paths[name])) for name in names]
    return photos


def training_photo_names(config: MiniLDMConfig) -> list[str]:
    """All captioned photos except the held-out ones."""
    missing = [n for n in config.holdout if n not in CAPTIONS]
    if missing:
        raise KeyError(f"held-out photos {missing} are not among {sorted(CAPTIONS)}")
    return [n for n in CAPTIONS if n not in config.holdout]


def sample_patches(
    photos: Sequence[torch.Tensor],
    n: int,
    patch_size: int,
    zoom_range: tuple[float, float],
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` random patches in [-1, 1] (random photo, zoom, position, horizontal flip).

    Zooming is cropping a ``patch_size / zoom`` square and shrinking it with antialiasing, the
    same as shrinking the photo first but cheaper. Only horizontal flips: upside-down scenes do
    not occur in photos. Returns the patches and the index of the photo each came from.
    """
    low, high = math.log(zoom_range[0]), math.log(zoom_range[1])
    indices = torch.randint(len(photos), (n,), generator=generator)
    patches = torch.empty(n, 3, patch_size, patch_size)
    for k, i in enumerate(indices.tolist()):
        photo = photos[i]
        height, width = photo.shape[1:]
        zoom = math.exp(low + (high - low) * torch.rand((), generator=generator).item())
        side = min(round(patch_size / zoom), height, width)
        top = int(torch.randint(height - side + 1, (), generator=generator))
        left = int(torch.randint(width - side + 1, (), generator=generator))
        crop = photo[None, :, top : top + side, left : left + side].float() / 127.5 - 1.0
        if side != patch_size:
            crop = F.interpolate(
                crop, size=(patch_size, patch_size), mode="bilinear", antialias=True
            )
        if torch.rand((), generator=generator).item() < 0.5:
            crop = crop.flip(-1)
        patches[k] = crop[0]
    return patches.clamp_(-1.0, 1.0), indices


def heldout_patches(config: MiniLDMConfig, n: int | None = None) -> torch.Tensor:
    """The fixed evaluation patches of the held-out photos (same sampler, fixed seed)."""
    generator = torch.Generator().manual_seed(config.seed + 1)
    photos = load_photos(config.holdout)
    count = config.eval_patches if n is None else n
    return sample_patches(photos, count, config.patch_size, config.zoom_range, generator)[0]


# ----------------------------------------------------------------------------------------------
# Models


def build_autoencoder(config: MiniLDMConfig) -> AutoencoderKL:
    """A randomly initialised ``AutoencoderKL`` of the recipe's architecture."""
    levels = len(config.ae_block_out_channels)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * levels,
        up_block_types=("UpDecoderBlock2D",) * levels,
        block_out_channels=config.ae_block_out_channels,
        layers_per_block=config.ae_layers_per_block,
        latent_channels=config.latent_channels,
        norm_num_groups=config.norm_num_groups,
        sample_size=config.patch_size,
    )


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


def psnr(reference: torch.Tensor, estimate: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB of images in [-1, 1], measured on the [0, 1] scale."""
    mse = ((reference.clamp(-1, 1) - estimate.clamp(-1, 1)) / 2).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(1.0 / mse.clamp_min(1e-10))


def reconstruct(vae: AutoencoderKL, images: torch.Tensor) -> torch.Tensor:
    """Posterior-mean AE round trip of images in [-1, 1] (the recipe's scale), as detectors do."""
    return features_reconstruct(vae, (images + 1) / 2, sample=False) * 2 - 1


# ----------------------------------------------------------------------------------------------
# Training


class Interrupted(Exception):
    """Raised by an ``on_step`` callback to stop a run as a crash would (tests use it)."""


StepCallback = Callable[[str, int], None]


def _lr_schedule(optimizer: torch.optim.Optimizer, config: MiniLDMConfig, total: int):
    """Linear warm-up, then cosine decay to a tenth: short runs end on a low learning rate."""
    return get_cosine_with_min_lr_schedule_with_warmup(
        optimizer,
        num_warmup_steps=config.warmup_steps,
        num_training_steps=total,
        min_lr_rate=0.1,
    )


def adamw_optimizer(parameters: Iterable[torch.nn.Parameter], lr: float) -> torch.optim.AdamW:
    """AdamW without weight decay, fused: one kernel for all tensors instead of a loop of small
    ops (UNet update 5 ms instead of 21 ms per step on a CPU; the same update rule)."""
    return torch.optim.AdamW(parameters, lr=lr, weight_decay=0.0, fused=True)


def compile_loss(loss: Callable[..., Any], enabled: bool) -> Callable[..., Any]:
    """``loss`` through ``torch.compile`` when enabled, else as it is.

    On CPU, inductor fuses the group norms, SiLUs and autocast casts around each convolution
    (about 40 % of an eager step); the convolutions stay oneDNN's. Only the loss function is
    compiled, so parameter names, checkpoints and saved weights are those of the eager models.
    ``fallback_random`` keeps eager's random stream (the posterior sample), so a compiled run
    draws the same noise as an eager one.
    """
    if not enabled:
        return loss
    return torch.compile(loss, options={"fallback_random": True})


def _autocast(config: MiniLDMConfig) -> contextlib.AbstractContextManager:
    if config.bf16_autocast:
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


class _Clock:
    """Wall and process CPU seconds since creation (CPU time counts every thread)."""

    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def read(self) -> dict[str, float]:
        return {
            "wall_s": round(time.perf_counter() - self.wall, 1),
            "cpu_s": round(time.process_time() - self.cpu, 1),
        }


class _Rate:
    """Seconds per step since the last call, wall and CPU, for progress lines."""

    def __init__(self) -> None:
        self.clock = _Clock()

    def per_step(self, steps: int) -> str:
        seconds, self.clock = self.clock.read(), _Clock()
        return f"{seconds['wall_s'] / steps:.2f} s/step wall, {seconds['cpu_s'] / steps:.2f} CPU"


def _say(progress: bool, message: str) -> None:
    if progress:
        print(f"[mini-ldm {time.strftime('%H:%M:%S')}] {message}", flush=True)


class _PhaseState:
    """What a phase's checkpoint holds besides models, optimizer, scheduler and torch's RNG
    (which ``Accelerator.save_state`` stores): the sampling generator, the step, the log and
    the time spent so far. Registered with ``register_for_checkpointing``."""

    def __init__(self, generator: torch.Generator, log: dict[str, Any]) -> None:
        self.generator, self.log = generator, log
        self.step = 0
        self.elapsed = {"wall_s": 0.0, "cpu_s": 0.0}

    def state_dict(self) -> dict[str, Any]:
        return {
            "generator": self.generator.get_state(),
            "step": self.step,
            "log": json.dumps(self.log),
            "elapsed": json.dumps(self.elapsed),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        self.step = int(state["step"])
        self.log.clear()
        self.log.update(json.loads(state["log"]))
        self.elapsed = json.loads(state["elapsed"])


class _Checkpoints:
    """One ``save_state`` folder per phase, replaced atomically, tagged with its recipe so that
    a changed recipe never resumes from it."""

    def __init__(self, accelerator: Accelerator, folder: Path, recipe: str) -> None:
        self.accelerator, self.folder, self.recipe = accelerator, folder, recipe

    def load(self) -> bool:
        tag = self.folder / "recipe.json"
        if not (tag.is_file() and tag.read_text() == self.recipe):
            return False
        self.accelerator.load_state(str(self.folder))
        return True

    def save(self) -> None:
        fresh = self.folder.with_name(self.folder.name + ".new")
        shutil.rmtree(fresh, ignore_errors=True)
        self.accelerator.save_state(str(fresh))
        (fresh / "recipe.json").write_text(self.recipe)
        stale = self.folder.with_name(self.folder.name + ".old")
        shutil.rmtree(stale, ignore_errors=True)
        if self.folder.exists():
            self.folder.rename(stale)
        fresh.rename(self.folder)
        shutil.rmtree(stale, ignore_errors=True)


def _accelerator() -> Accelerator:
    # Mixed precision is the recipe's own bf16 autocast (bf16_autocast), so accelerate runs in
    # fp32 and only prepares, saves and restores the training state.
    return Accelerator(cpu=True, mixed_precision="no")


# Fields besides ae_* that determine phase 1, so that a finished autoencoder is reused when
# only UNet settings change.
_AUTOENCODER_SHARED = (
    "seed", "patch_size", "zoom_range", "holdout", "eval_patches", "latent_channels",
    "kl_weight", "warmup_steps", "norm_num_groups", "grad_clip", "bf16_autocast",
)  # fmt: skip


def _autoencoder_recipe(config: MiniLDMConfig) -> str:
    items = config.to_dict().items()
    return json.dumps({k: v for k, v in items if k.startswith("ae_") or k in _AUTOENCODER_SHARED})


def _unet_recipe(config: MiniLDMConfig) -> str:
    return json.dumps({k: v for k, v in config.to_dict().items() if k not in SPEED_ONLY_FIELDS})


def _train_autoencoder(
    config: MiniLDMConfig,
    photos: list[torch.Tensor],
    work: Path,
    progress: bool,
    on_step: StepCallback | None,
    torch_compile: bool,
) -> tuple[AutoencoderKL, dict[str, Any]]:
    """Phase 1: MSE (or L1) + KL on random training patches; held-out PSNR along the way."""
    clock = _Clock()
    torch.manual_seed(config.seed)
    vae = build_autoencoder(config)
    with torch.no_grad():
        # quant_conv maps the encoder output to [mean, logvar]; offset the logvar half.
        vae.quant_conv.bias[config.latent_channels :] = config.ae_initial_logvar
    optimizer = adamw_optimizer(vae.parameters(), config.ae_lr)
    scheduler = _lr_schedule(optimizer, config, config.ae_steps)
    accelerator = _accelerator()
    vae, optimizer, scheduler = accelerator.prepare(vae, optimizer, scheduler)
    log: dict[str, Any] = {"steps": [], "loss": [], "l1": [], "kl": [], "heldout_psnr": []}
    state = _PhaseState(torch.Generator().manual_seed(config.seed), log)
    accelerator.register_for_checkpointing(state)
    checkpoints = _Checkpoints(accelerator, work / "autoencoder", _autoencoder_recipe(config))
    if checkpoints.load():
        _say(progress, f"autoencoder: resuming at step {state.step}")
    evaluation = heldout_patches(config)

    def evaluate(step: int) -> None:
        vae.eval()
        # Batches of 32: one batch of all 256 patches runs at half the speed on a CPU (its
        # 64 px activations outgrow the caches), and no graph is needed.
        with torch.no_grad():
            value = torch.cat([psnr(x, reconstruct(vae, x)) for x in evaluation.split(32)])
        value = value.mean().item()
        vae.train()
        log["heldout_psnr"].append([step, round(value, 3)])
        _say(progress, f"autoencoder step {step}: held-out PSNR {value:.2f} dB")

    def losses(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        with _autocast(config):
            posterior = vae.encode(images).latent_dist
            decoded = vae.decode(posterior.sample()).sample.float()
        l1 = (decoded - images).abs().mean()
        reconstruction = l1 if config.ae_loss == "l1" else (decoded - images).pow(2).mean()
        # The KL is summed over the latent: per pixel, so its weight holds at every patch size.
        kl = posterior.kl().mean() / images[0].numel()
        return reconstruction + config.kl_weight * kl, l1, kl

    losses = compile_loss(losses, torch_compile)
    vae.train()
    rate = _Rate()
    running = {"loss": 0.0, "l1": 0.0, "kl": 0.0}
    for step in range(state.step, config.ae_steps):
        small = step < config.ae_small_patch_steps
        size = config.ae_small_patch_size if small else config.patch_size
        images, _ = sample_patches(
            photos, config.ae_batch_size, size, config.zoom_range, state.generator
        )
        loss, l1, kl = losses(images)
        optimizer.zero_grad(set_to_none=True)
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(vae.parameters(), config.grad_clip)
        optimizer.step()
        scheduler.step()
        for key, value in (("loss", loss), ("l1", l1), ("kl", kl)):
            running[key] += value.item()
        done = step + 1
        if done % config.log_every == 0 or done == config.ae_steps:
            count = done - (log["steps"][-1] if log["steps"] else state.step)
            log["steps"].append(done)
            for key in running:
                log[key].append(round(running[key] / count, 6))
                running[key] = 0.0
            _say(
                progress,
                f"autoencoder step {done}/{config.ae_steps} l1 {log['l1'][-1]:.4f} "
                f"({rate.per_step(count)})",
            )
        if done % config.ae_eval_every == 0 or done == config.ae_steps:
            evaluate(done)
        if done % config.checkpoint_every == 0 and done < config.ae_steps:
            # Logged means restart here on resume, so log_every divides checkpoint_every.
            state.step, now = done, clock.read()
            elapsed, state.elapsed = state.elapsed, {k: state.elapsed[k] + now[k] for k in now}
            checkpoints.save()
            state.elapsed = elapsed
        if on_step is not None:
            on_step("autoencoder", done)
    vae = accelerator.unwrap_model(vae).eval().requires_grad_(False)
    now = clock.read()
    log["time"] = {k: round(state.elapsed[k] + now[k], 1) for k in now}
    log["final_heldout_psnr"] = log["heldout_psnr"][-1][1]
    return vae, log


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


@torch.no_grad()
def _encode_latent_pool(
    vae: AutoencoderKL, photos: list[torch.Tensor], config: MiniLDMConfig
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Posterior means/stds of a fixed pool of training patches, and each one's photo index.

    Encoding once instead of every step makes the UNet phase several times cheaper; sampling
    from the stored posteriors keeps SD's latent noise as augmentation.
    """
    generator = torch.Generator().manual_seed(config.seed + 2)
    means, stds, sources = [], [], []
    remaining = config.latent_pool_size
    while remaining > 0:
        n = min(64, remaining)
        images, index = sample_patches(photos, n, config.patch_size, config.zoom_range, generator)
        for chunk in images.split(32):  # encoded in halves: faster on a CPU, same patches
            posterior = vae.encode(chunk).latent_dist
            means.append(posterior.mean)
            stds.append(posterior.std)
        sources.append(index)
        remaining -= n
    return torch.cat(means), torch.cat(stds), torch.cat(sources)


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
    clock = _Clock()
    means, stds, sources = _encode_latent_pool(vae, photos, config)
    # SD's convention: latents are multiplied by scaling_factor = 1 / std of training latents.
    generator = torch.Generator().manual_seed(config.seed + 3)
    sampled = means + stds * torch.randn(means.shape, generator=generator)
    scaling_factor = float(1.0 / sampled.std())
    embeddings = _encode_prompts(tokenizer, text_encoder, [*captions, ""])
    empty = len(captions)
    _say(progress, f"latent pool {tuple(means.shape)}, scaling_factor {scaling_factor:.4f}")

    torch.manual_seed(config.seed)
    unet = build_unet(config)
    if config.unet_plain_attention:
        unet.set_attn_processor(AttnProcessor())
    # diffusers' EMA without its power warm-up: decay min(ema_decay, (1 + n) / (10 + n)) at
    # update n, so early weights do not dominate a short run.
    ema = EMAModel(unet.parameters(), decay=config.ema_decay, foreach=True)
    noise_scheduler = DDPMScheduler(**SD_SCHEDULER_CONFIG)
    optimizer = adamw_optimizer(unet.parameters(), config.unet_lr)
    lr_scheduler = _lr_schedule(optimizer, config, config.unet_steps)
    accelerator = _accelerator()
    unet, optimizer, lr_scheduler = accelerator.prepare(unet, optimizer, lr_scheduler)
    log: dict[str, Any] = {"steps": [], "loss": [], "scaling_factor": scaling_factor}
    state = _PhaseState(generator, log)
    accelerator.register_for_checkpointing(state)
    accelerator.register_for_checkpointing(ema)
    checkpoints = _Checkpoints(accelerator, work / "unet", _unet_recipe(config))
    if checkpoints.load():
        _say(progress, f"unet: resuming at step {state.step}")

    def noise_loss(
        noisy: torch.Tensor, timesteps: torch.Tensor, text: torch.Tensor, epsilon: torch.Tensor
    ) -> torch.Tensor:
        with _autocast(config):
            prediction = unet(noisy, timesteps, text).sample.float()
        return F.mse_loss(prediction, epsilon)

    noise_loss = compile_loss(noise_loss, torch_compile)
    unet.train()
    running = 0.0
    rate = _Rate()
    for step in range(state.step, config.unet_steps):
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
        loss = noise_loss(noisy, timesteps, embeddings[prompt], epsilon)
        optimizer.zero_grad(set_to_none=True)
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(unet.parameters(), config.grad_clip)
        optimizer.step()
        lr_scheduler.step()
        ema.step(unet.parameters())
        running += loss.item()
        done = step + 1
        if done % config.log_every == 0 or done == config.unet_steps:
            count = done - (log["steps"][-1] if log["steps"] else state.step)
            log["steps"].append(done)
            log["loss"].append(round(running / count, 6))
            running = 0.0
            _say(
                progress,
                f"unet step {done}/{config.unet_steps} loss {log['loss'][-1]:.4f} "
                f"({rate.per_step(count)})",
            )
        if done % config.checkpoint_every == 0 and done < config.unet_steps:
            state.step, now = done, clock.read()
            elapsed, state.elapsed = state.elapsed, {k: state.elapsed[k] + now[k] for k in now}
            checkpoints.save()
            state.elapsed = elapsed
        if on_step is not None:
            on_step("unet", done)
    now = clock.read()
    log["time"] = {k: round(state.elapsed[k] + now[k], 1) for k in now}
    averaged = build_unet(config)
    ema.copy_to(averaged.parameters())
    return averaged.eval().requires_grad_(False), scaling_factor, log


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
    clock = _Clock()
    names = training_photo_names(config)
    photos = load_photos(names)
    captions = [CAPTIONS[n] for n in names]
    _say(progress, f"training photos: {names}; held out: {list(config.holdout)}")

    finished = work / "vae"
    recipe = _autoencoder_recipe(config)
    if (finished / "recipe.json").exists() and (finished / "recipe.json").read_text() == recipe:
        vae = AutoencoderKL.from_pretrained(finished).eval().requires_grad_(False)
        ae_log = json.loads((finished / "phase_log.json").read_text())
        reused_time = ae_log["time"]
        _say(progress, "autoencoder: reusing the finished phase-1 checkpoint")
    else:
        vae, ae_log = _train_autoencoder(config, photos, work, progress, on_step, torch_compile)
        # Keep the finished phase 1 so that a crash or a UNet change never retrains it.
        vae.save_pretrained(finished)
        atomic_write_text(finished / "phase_log.json", json.dumps(ae_log))
        # Written last: its presence marks the phase as finished.
        atomic_write_text(finished / "recipe.json", recipe)
        reused_time = {"wall_s": 0.0, "cpu_s": 0.0}

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
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "torch": torch.__version__,
        },
        "parameters": {
            name: sum(p.numel() for p in module.parameters())
            for name, module in (("vae", vae), ("unet", unet), ("text_encoder", text_encoder))
        },
    }
    atomic_write_text(output_dir / "training_log.json", json.dumps(log, indent=1))
    shutil.rmtree(work)
    _say(progress, f"done in {total['wall_s']} s wall / {total['cpu_s']} s CPU -> {output_dir}")
    return output_dir


# ----------------------------------------------------------------------------------------------
# Model card figure


def _to_pil(images: torch.Tensor, scale: int) -> list[Image.Image]:
    arrays = ((images.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    result = []
    for array in arrays:
        image = Image.fromarray(array)
        result.append(image.resize((image.width * scale,) * 2, Image.Resampling.NEAREST))
    return result


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
    rows: list[tuple[str, list[Image.Image]]] = [
        (prompt, _to_pil(chunk * 2 - 1, scale))
        for prompt, chunk in zip(prompts, images.split(per_prompt), strict=True)
    ]
    originals = heldout_patches(config, heldout)
    recon = reconstruct(pipeline.vae, originals)
    rows.append(("held-out photo patches", _to_pil(originals, scale)))
    values = psnr(originals, recon).mean().item()
    rows.append((f"their reconstructions ({values:.1f} dB)", _to_pil(recon, scale)))

    tile = config.patch_size * scale
    label_width, gap = 260, 4
    columns = max(len(images) for _, images in rows)
    grid = Image.new(
        "RGB",
        (label_width + columns * (tile + gap), len(rows) * (tile + gap)),
        "white",
    )
    draw = ImageDraw.Draw(grid)
    for r, (label, images) in enumerate(rows):
        y = r * (tile + gap)
        draw.text((6, y + tile // 2 - 6), label, fill="black")
        for c, image in enumerate(images):
            grid.paste(image, (label_width + c * (tile + gap), y))
    path = Path(path)
    with atomic_path(path) as tmp:
        grid.save(tmp, optimize=True)
    return path


def _directory_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def write_model_card(pipeline_dir: str | Path) -> Path:
    """Write ``README.md`` from ``training_log.json``, so the card's numbers are the run's."""
    pipeline_dir = Path(pipeline_dir)
    log = json.loads((pipeline_dir / "training_log.json").read_text())
    config = MiniLDMConfig.from_dict(log["config"])
    ae, unet, time_ = log["autoencoder"], log["unet"], log["time"]
    params = log["parameters"]
    photos = "\n".join(f"| {n} | {c} |" for n, c in log["training_photos"].items())
    held = ", ".join(f"`{n}`" for n in log["heldout_photos"])
    curve = ", ".join(f"{s}: {v:.1f}" for s, v in ae["heldout_psnr"])
    mb = _directory_size(pipeline_dir) / 2**20
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

## Data
Random {config.patch_size}x{config.patch_size} patches of the colour photos bundled with
scikit-image, scikit-learn and matplotlib: each photo is shrunk by a random zoom (log-uniform in
{list(config.zoom_range)}, 1 = native resolution) before a random crop, then flipped
horizontally with probability 0.5. Each photo is captioned by its subject:

| photo | caption |
|---|---|
{photos}

Held out (never seen by either phase): {held}. Reported PSNR is the mean per-patch PSNR over
{config.eval_patches} fixed patches of the held-out photos (same sampler, seed {config.seed + 1}),
on the [0, 1] scale, posterior mean encoded.

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
