"""What the mini generator recipes share: data, autoencoder phase, training loop, figures.

``recipes/mini_ldm/train.py`` (an SD-style LDM) and ``recipes/mini_flow/train.py`` (an
SD3-style rectified-flow model) train on the same photos, hold out the same subjects and
measure their autoencoders the same way; this module is that common ground, so that the two
models differ only where their architectures do. Each recipe's config dataclass provides the
fields read here (``seed``, ``patch_size``, ``zoom_range``, ``holdout``, the ``ae_*`` settings,
...): the functions take the config as it is rather than a copy of its fields.

The moving average is diffusers' ``EMAModel``; the learning-rate schedule is transformers'
cosine-with-minimum schedule; the checkpoints are ``accelerate.Accelerator.save_state``
folders, so an interrupted run resumes where its last checkpoint left off and ends with the
same weights as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import shutil
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from diffusers import AutoencoderKL
from diffusers.training_utils import EMAModel
from PIL import Image, ImageDraw
from transformers.optimization import get_cosine_with_min_lr_schedule_with_warmup

from ldmdetect.features.reconstruction import reconstruct as features_reconstruct
from ldmdetect.generative.mini import CAPTIONS
from ldmdetect.io.files import atomic_path, atomic_write_text
from ldmdetect.io.images import load_image, pil_to_uint8
from ldmdetect.io.samples import sample_photos

# A recipe's config dataclass (MiniLDMConfig, MiniFlowConfig): read by field name.
Config = Any


class RecipeConfig:
    """What both recipes' config dataclasses derive from their autoencoder fields, and their
    JSON round trip (training_log.json records the config; resuming reads it back)."""

    @property
    def downsampling_factor(self) -> int:
        return 2 ** (len(self.ae_block_out_channels) - 1)  # type: ignore[attr-defined]

    @property
    def latent_size(self) -> int:
        return self.patch_size // self.downsampling_factor  # type: ignore[attr-defined]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Any:
        """Inverse of :meth:`to_dict`; JSON lists become the tuples the fields declare."""
        known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        kwargs = {}
        for key, value in data.items():
            if key not in known:
                raise ValueError(f"unknown {cls.__name__} field {key!r}")
            kwargs[key] = tuple(value) if isinstance(value, list) else value
        return cls(**kwargs)


def build_autoencoder(config: Config, **extra: Any) -> AutoencoderKL:
    """A randomly initialised ``AutoencoderKL`` of the recipe's architecture (``extra``: the
    family's own options, e.g. SD3's missing quant convolutions)."""
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
        **extra,
    )


def _photo_paths() -> dict[str, Path]:
    """The bundled photos under the recipe's names (motorcycle: the left view only, the right
    one is a near-duplicate that would double its weight)."""
    photos = dict(sample_photos())
    photos["motorcycle"] = photos.pop("motorcycle_left")
    photos.pop("motorcycle_right", None)
    return photos


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


def training_photo_names(config: Config) -> list[str]:
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


def heldout_patches(config: Config, n: int | None = None) -> torch.Tensor:
    """The fixed evaluation patches of the held-out photos (same sampler, fixed seed)."""
    generator = torch.Generator().manual_seed(config.seed + 1)
    photos = load_photos(config.holdout)
    count = config.eval_patches if n is None else n
    return sample_patches(photos, count, config.patch_size, config.zoom_range, generator)[0]


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


def lr_schedule(optimizer: torch.optim.Optimizer, config: Config, total: int):
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


def autocast(config: Config) -> contextlib.AbstractContextManager:
    if config.bf16_autocast:
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


class Clock:
    """Wall and process CPU seconds since creation (CPU time counts every thread)."""

    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def read(self) -> dict[str, float]:
        return {
            "wall_s": round(time.perf_counter() - self.wall, 1),
            "cpu_s": round(time.process_time() - self.cpu, 1),
        }


class Rate:
    """Seconds per step since the last call, wall and CPU, for progress lines."""

    def __init__(self) -> None:
        self.clock = Clock()

    def per_step(self, steps: int) -> str:
        seconds, self.clock = self.clock.read(), Clock()
        return f"{seconds['wall_s'] / steps:.2f} s/step wall, {seconds['cpu_s'] / steps:.2f} CPU"


def say(progress: bool, tag: str, message: str) -> None:
    """A progress line, time-stamped and tagged with the recipe's name, when ``progress``."""
    if progress:
        print(f"[{tag} {time.strftime('%H:%M:%S')}] {message}", flush=True)


class PhaseState:
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


class Checkpoints:
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


def make_accelerator() -> Accelerator:
    # Mixed precision is the recipe's own bf16 autocast (bf16_autocast), so accelerate runs in
    # fp32 and only prepares, saves and restores the training state.
    return Accelerator(cpu=True, mixed_precision="no")


# Fields besides ae_* that determine phase 1, so that a finished autoencoder is reused when
# only UNet settings change.
_AUTOENCODER_SHARED = (
    "seed", "patch_size", "zoom_range", "holdout", "eval_patches", "latent_channels",
    "kl_weight", "warmup_steps", "norm_num_groups", "grad_clip", "bf16_autocast",
)  # fmt: skip


def autoencoder_recipe(config: Config) -> str:
    """The config fields that determine the autoencoder phase, as a checkpoint tag."""
    items = config.to_dict().items()
    return json.dumps({k: v for k, v in items if k.startswith("ae_") or k in _AUTOENCODER_SHARED})


def train_autoencoder(
    config: Config,
    photos: list[torch.Tensor],
    work: Path,
    progress: bool,
    on_step: StepCallback | None,
    torch_compile: bool,
    *,
    build: Callable[[Config], AutoencoderKL],
    tag: str,
) -> tuple[AutoencoderKL, dict[str, Any]]:
    """Phase 1: MSE (or L1) + KL on random training patches; held-out PSNR along the way.

    ``build(config)`` makes the randomly initialised autoencoder (under ``config.seed``).
    """
    clock = Clock()
    torch.manual_seed(config.seed)
    vae = build(config)
    # The last layer before the posterior maps to [mean, logvar]: SD's quant_conv, or the
    # encoder's output convolution where there is none (SD3, FLUX.1). Offset the logvar half.
    moments = vae.quant_conv if vae.quant_conv is not None else vae.encoder.conv_out
    with torch.no_grad():
        moments.bias[config.latent_channels :] = config.ae_initial_logvar
    optimizer = adamw_optimizer(vae.parameters(), config.ae_lr)
    scheduler = lr_schedule(optimizer, config, config.ae_steps)
    accelerator = make_accelerator()
    vae, optimizer, scheduler = accelerator.prepare(vae, optimizer, scheduler)
    log: dict[str, Any] = {"steps": [], "loss": [], "l1": [], "kl": [], "heldout_psnr": []}
    state = PhaseState(torch.Generator().manual_seed(config.seed), log)
    accelerator.register_for_checkpointing(state)
    checkpoints = Checkpoints(accelerator, work / "autoencoder", autoencoder_recipe(config))
    if checkpoints.load():
        say(progress, tag, f"autoencoder: resuming at step {state.step}")
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
        say(progress, tag, f"autoencoder step {step}: held-out PSNR {value:.2f} dB")

    def losses(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        with autocast(config):
            posterior = vae.encode(images).latent_dist
            decoded = vae.decode(posterior.sample()).sample.float()
        l1 = (decoded - images).abs().mean()
        reconstruction = l1 if config.ae_loss == "l1" else (decoded - images).pow(2).mean()
        # The KL is summed over the latent: per pixel, so its weight holds at every patch size.
        kl = posterior.kl().mean() / images[0].numel()
        return reconstruction + config.kl_weight * kl, l1, kl

    losses = compile_loss(losses, torch_compile)
    vae.train()
    rate = Rate()
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
            say(
                progress,
                tag,
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
def encode_latent_pool(
    vae: AutoencoderKL, photos: list[torch.Tensor], config: Config
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


def autoencoder_phase(
    config: Config,
    photos: list[torch.Tensor],
    work: Path,
    progress: bool,
    on_step: StepCallback | None,
    torch_compile: bool,
    *,
    build: Callable[[Config], AutoencoderKL],
    tag: str,
) -> tuple[AutoencoderKL, dict[str, Any], dict[str, float]]:
    """The trained autoencoder, its log and the time already spent on it in earlier runs.

    A finished phase is kept in ``work/vae`` under its recipe tag, so that a crash or a
    change of the later phase's settings never retrains it; a changed autoencoder recipe
    does. The returned time is the reused phase's (zero when trained now: the caller's clock
    covers it).
    """
    finished = work / "vae"
    recipe = autoencoder_recipe(config)
    if (finished / "recipe.json").exists() and (finished / "recipe.json").read_text() == recipe:
        vae = AutoencoderKL.from_pretrained(finished).eval().requires_grad_(False)
        ae_log = json.loads((finished / "phase_log.json").read_text())
        say(progress, tag, "autoencoder: reusing the finished phase-1 checkpoint")
        return vae, ae_log, ae_log["time"]
    vae, ae_log = train_autoencoder(
        config, photos, work, progress, on_step, torch_compile, build=build, tag=tag
    )
    vae.save_pretrained(finished)
    atomic_write_text(finished / "phase_log.json", json.dumps(ae_log))
    # Written last: its presence marks the phase as finished.
    atomic_write_text(finished / "recipe.json", recipe)
    return vae, ae_log, {"wall_s": 0.0, "cpu_s": 0.0}


def train_with_ema(
    config: Config,
    phase: str,
    model: torch.nn.Module,
    *,
    steps: int,
    lr: float,
    draw: Callable[[], tuple[torch.Tensor, ...]],
    make_loss: Callable[[torch.nn.Module], Callable[..., torch.Tensor]],
    build: Callable[[], torch.nn.Module],
    generator: torch.Generator,
    log: dict[str, Any],
    work: Path,
    recipe: str,
    clock: Clock,
    tag: str,
    progress: bool,
    on_step: StepCallback | None,
    torch_compile: bool,
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Phase 2: train the denoiser ``model`` for ``steps`` steps; returns its EMA copy.

    Each step ``draw()`` makes a batch from ``generator`` (the checkpointed sampling stream)
    and ``make_loss(prepared_model)(*batch)`` its loss. AdamW at ``lr`` with the warm-up and
    cosine schedule, gradient clipping at ``config.grad_clip``, diffusers' ``EMAModel`` at
    ``config.ema_decay`` (without its power warm-up: decay min(ema_decay, (1 + n) / (10 + n))
    at update n, so early weights do not dominate a short run), a checkpoint in
    ``work/phase`` every ``config.checkpoint_every`` steps tagged with ``recipe``. ``build()``
    makes a fresh model of the same architecture to receive the averaged weights. ``log``
    gains ``steps``, ``loss`` (means over ``config.log_every`` steps) and ``time`` (``clock``
    plus the time of earlier, interrupted runs).
    """
    ema = EMAModel(model.parameters(), decay=config.ema_decay, foreach=True)
    optimizer = adamw_optimizer(model.parameters(), lr)
    lr_scheduler = lr_schedule(optimizer, config, steps)
    accelerator = make_accelerator()
    model, optimizer, lr_scheduler = accelerator.prepare(model, optimizer, lr_scheduler)
    log |= {"steps": [], "loss": []}
    state = PhaseState(generator, log)
    accelerator.register_for_checkpointing(state)
    accelerator.register_for_checkpointing(ema)
    checkpoints = Checkpoints(accelerator, work / phase, recipe)
    if checkpoints.load():
        say(progress, tag, f"{phase}: resuming at step {state.step}")
    loss_of = compile_loss(make_loss(model), torch_compile)
    model.train()
    running = 0.0
    rate = Rate()
    for step in range(state.step, steps):
        loss = loss_of(*draw())
        optimizer.zero_grad(set_to_none=True)
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        lr_scheduler.step()
        ema.step(model.parameters())
        running += loss.item()
        done = step + 1
        if done % config.log_every == 0 or done == steps:
            count = done - (log["steps"][-1] if log["steps"] else state.step)
            log["steps"].append(done)
            log["loss"].append(round(running / count, 6))
            running = 0.0
            say(
                progress,
                tag,
                f"{phase} step {done}/{steps} loss {log['loss'][-1]:.4f} ({rate.per_step(count)})",
            )
        if done % config.checkpoint_every == 0 and done < steps:
            state.step, now = done, clock.read()
            elapsed, state.elapsed = state.elapsed, {k: state.elapsed[k] + now[k] for k in now}
            checkpoints.save()
            state.elapsed = elapsed
        if on_step is not None:
            on_step(phase, done)
    now = clock.read()
    log["time"] = {k: round(state.elapsed[k] + now[k], 1) for k in now}
    averaged = build()
    ema.copy_to(averaged.parameters())
    return averaged.eval().requires_grad_(False), log


def machine_info() -> dict[str, Any]:
    """Where a run ran, for its training log."""
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
    }


def parameter_counts(modules: dict[str, torch.nn.Module]) -> dict[str, int]:
    return {name: sum(p.numel() for p in module.parameters()) for name, module in modules.items()}


# ----------------------------------------------------------------------------------------------
# Model card figure and text


def to_pil(images: torch.Tensor, scale: int) -> list[Image.Image]:
    """Images in [-1, 1] as PIL images enlarged ``scale`` times, nearest-neighbour."""
    arrays = ((images.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    result = []
    for array in arrays:
        image = Image.fromarray(array)
        result.append(image.resize((image.width * scale,) * 2, Image.Resampling.NEAREST))
    return result


def heldout_rows(
    config: Config, vae: AutoencoderKL, count: int, scale: int
) -> list[tuple[str, list[Image.Image]]]:
    """The figure's last two rows: held-out photo patches and their reconstructions."""
    originals = heldout_patches(config, count)
    recon = reconstruct(vae, originals)
    values = psnr(originals, recon).mean().item()
    return [
        ("held-out photo patches", to_pil(originals, scale)),
        (f"their reconstructions ({values:.1f} dB)", to_pil(recon, scale)),
    ]


def save_grid(rows: list[tuple[str, list[Image.Image]]], tile: int, path: str | Path) -> Path:
    """A labelled grid, one row of ``tile``-px images per label, saved as a PNG."""
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


def directory_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def data_section(config: Config, log: dict[str, Any]) -> str:
    """The model card's "Data" section: the photos, the sampler and the held-out patches."""
    photos = "\n".join(f"| {n} | {c} |" for n, c in log["training_photos"].items())
    held = ", ".join(f"`{n}`" for n in log["heldout_photos"])
    return f"""## Data
Random {config.patch_size}x{config.patch_size} patches of the colour photos bundled with
scikit-image, scikit-learn and matplotlib: each photo is shrunk by a random zoom (log-uniform in
{list(config.zoom_range)}, 1 = native resolution) before a random crop, then flipped
horizontally with probability 0.5. Each photo is captioned by its subject:

| photo | caption |
|---|---|
{photos}

Held out (never seen by either phase): {held}. Reported PSNR is the mean per-patch PSNR over
{config.eval_patches} fixed patches of the held-out photos (same sampler, seed {config.seed + 1}),
on the [0, 1] scale, posterior mean encoded."""
