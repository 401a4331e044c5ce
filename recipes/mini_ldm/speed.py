"""Seconds per training step of the mini LDM recipe, with and without its speed settings.

    python recipes/mini_ldm/speed.py [--steps 6] [--rounds 3] [--threads 2] [--compile]

Times the autoencoder step (fp32 vs. bf16 autocast, on full patches and on the small patches
of its first steps) and the UNet step (torch's SDPA attention vs. diffusers' plain
``AttnProcessor``, each in fp32 and bf16) at the default config's sizes, variants interleaved
round by round so that a change in machine load hits all of them alike.
``--compile`` adds the default settings with train.py's ``--compile`` (torch.compile'd losses;
their compile time is printed, not counted in the per-step times).
Prints JSON with the median seconds per step and the full-retrain estimate of each setting.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from diffusers.models.attention_processor import AttnProcessor
from train import (
    SD_SCHEDULER_CONFIG,
    MiniLDMConfig,
    adamw_optimizer,
    build_autoencoder,
    build_unet,
    compile_loss,
    load_photos,
    sample_patches,
    training_photo_names,
)


def _autocast(bf16: bool) -> contextlib.AbstractContextManager:
    return torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


def autoencoder_step(
    config: MiniLDMConfig, bf16: bool, compiled: bool = False, small: bool = False
):
    size = config.ae_small_patch_size if small else config.patch_size
    vae = build_autoencoder(config).train()
    optimizer = adamw_optimizer(vae.parameters(), config.ae_lr)
    photos = load_photos(training_photo_names(config))
    generator = torch.Generator().manual_seed(0)

    def losses(images: torch.Tensor) -> torch.Tensor:
        with _autocast(bf16):
            posterior = vae.encode(images).latent_dist
            decoded = vae.decode(posterior.sample()).sample.float()
        return (decoded - images).pow(2).mean() + config.kl_weight * posterior.kl().mean()

    losses = compile_loss(losses, compiled)

    def step() -> None:
        images, _ = sample_patches(photos, config.ae_batch_size, size, config.zoom_range, generator)
        loss = losses(images)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), config.grad_clip)
        optimizer.step()

    return step


def unet_step(config: MiniLDMConfig, bf16: bool, plain: bool, compiled: bool = False):
    unet = build_unet(config).train()
    if plain:
        unet.set_attn_processor(AttnProcessor())
    optimizer = adamw_optimizer(unet.parameters(), config.unet_lr)
    scheduler = DDPMScheduler(**SD_SCHEDULER_CONFIG)
    shape = (config.unet_batch_size, config.latent_channels, config.latent_size, config.latent_size)
    text = torch.randn(config.unet_batch_size, 77, config.text_hidden_size)

    def noise_loss(noisy: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        with _autocast(bf16):
            prediction = unet(noisy, t, text).sample.float()
        return F.mse_loss(prediction, noise)

    noise_loss = compile_loss(noise_loss, compiled)

    def step() -> None:
        latents, noise = torch.randn(shape), torch.randn(shape)
        t = torch.randint(1000, (shape[0],))
        loss = noise_loss(scheduler.add_noise(latents, noise, t), t, noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), config.grad_clip)
        optimizer.step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="the recipe trains with 2")
    parser.add_argument(
        "--compile", action="store_true", help="also time the defaults with train.py --compile"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = MiniLDMConfig()
    torch.manual_seed(0)
    variants = {
        "autoencoder fp32": autoencoder_step(config, bf16=False),
        "autoencoder bf16": autoencoder_step(config, bf16=True),
        "autoencoder fp32 small patches": autoencoder_step(config, bf16=False, small=True),
        "autoencoder bf16 small patches": autoencoder_step(config, bf16=True, small=True),
        "unet sdpa fp32": unet_step(config, bf16=False, plain=False),
        "unet plain fp32": unet_step(config, bf16=False, plain=True),
        "unet sdpa bf16": unet_step(config, bf16=True, plain=False),
        "unet plain bf16": unet_step(config, bf16=True, plain=True),
    }
    if args.compile:
        variants["autoencoder bf16 compiled"] = autoencoder_step(config, True, compiled=True)
        variants["autoencoder bf16 small patches compiled"] = autoencoder_step(
            config, True, compiled=True, small=True
        )
        variants["unet plain bf16 compiled"] = unet_step(config, True, plain=True, compiled=True)
    warm_up: dict[str, float] = {}
    times: dict[str, list[float]] = {name: [] for name in variants}
    cpu: dict[str, list[float]] = {name: [] for name in variants}
    for name, step in variants.items():
        start = time.perf_counter()
        step()  # warm-up: allocator, kernels, compilation
        step()  # a compiled step's backward graph is also built on first use
        warm_up[name] = round(time.perf_counter() - start, 1)
    for r in range(args.rounds):
        for name, step in variants.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            for _ in range(args.steps):
                step()
            times[name].append((time.perf_counter() - start) / args.steps)
            cpu[name].append((time.process_time() - start_cpu) / args.steps)
            print(f"round {r + 1} {name}: {times[name][-1]:.2f} s/step", file=sys.stderr)
    median = {name: round(statistics.median(t), 3) for name, t in times.items()}
    median_cpu = {name: round(statistics.median(t), 3) for name, t in cpu.items()}

    def retrain_minutes(ae: str, unet: str) -> float:
        # Training steps only (the autoencoder's first steps on small patches), plus the
        # warm-up where it includes compilation.
        small = ae.replace("bf16", "bf16 small patches").replace("fp32", "fp32 small patches")
        small_steps = min(config.ae_small_patch_steps, config.ae_steps)
        seconds = (
            median[small] * small_steps
            + median[ae] * (config.ae_steps - small_steps)
            + median[unet] * config.unet_steps
        )
        if args.compile and ae.endswith("compiled"):
            seconds += warm_up[ae] + warm_up[small] + warm_up[unet]
        return round(seconds / 60, 1)

    speedup = {
        "autoencoder bf16 vs fp32": round(
            median["autoencoder fp32"] / median["autoencoder bf16"], 2
        ),
        "unet plain vs sdpa (fp32)": round(median["unet sdpa fp32"] / median["unet plain fp32"], 2),
        "unet plain bf16 vs sdpa fp32": round(
            median["unet sdpa fp32"] / median["unet plain bf16"], 2
        ),
    }
    if args.compile:
        for phase in ("autoencoder bf16", "unet plain bf16"):
            speedup[f"{phase} compiled vs eager"] = round(
                median[phase] / median[f"{phase} compiled"], 2
            )
    estimates = {
        "baseline (fp32, sdpa)": retrain_minutes("autoencoder fp32", "unet sdpa fp32"),
        "defaults (bf16, plain attention)": retrain_minutes("autoencoder bf16", "unet plain bf16"),
        "bf16 autoencoder, plain fp32 unet": retrain_minutes("autoencoder bf16", "unet plain fp32"),
    }
    if args.compile:
        estimates["defaults with --compile (incl. compiling)"] = retrain_minutes(
            "autoencoder bf16 compiled", "unet plain bf16 compiled"
        )

    print(
        json.dumps(
            {
                "seconds_per_step_median": median,
                "seconds_per_step_rounds": {k: [round(x, 3) for x in v] for k, v in times.items()},
                # CPU seconds per step (all threads): less sensitive to other processes.
                "cpu_seconds_per_step_median": median_cpu,
                "speedup": speedup,
                "full_retrain_minutes_estimate": estimates,
                "warm_up_seconds": warm_up,
                "steps": {
                    "autoencoder": config.ae_steps,
                    "autoencoder on small patches": config.ae_small_patch_steps,
                    "unet": config.unet_steps,
                },
                "torch_threads": args.threads,
                "cpu_count": os.cpu_count(),
                "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],
                "torch": torch.__version__,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
