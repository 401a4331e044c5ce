"""Batched LaRE against the per-image loop: images/s of both, and how far their maps differ.

``lare2.features.lare_maps`` runs the VAE once on a batch of images and the UNet once on all
their noise draws (B x ensemble rows). LaRE's official extraction goes image by image;
``lare_loop`` below is such a loop, one image and one UNet pass per noise draw at a time, with
the same per-image random draws, so both paths compute the same maps and only their batching
differs (the JSON reports the largest difference, relative to the largest map value).

    python benchmarks/lare_batched.py --device cuda --min-speedup 5 \\
        --output benchmarks/results/lare_batched-cuda-h100.json
    python benchmarks/lare_batched.py --tiny --device cpu --images 4 --batch 2   # smoke run

The models are SD v1.5's VAE, UNet and CLIP text encoder with random weights (architectures
from ``feature_cost.py`` beside this script: cost depends on the architecture only, so nothing
is downloaded), in the package's generator dtype (bf16 on CUDA); ``--tiny`` uses the
package's tiny random SD pipeline instead. ``--min-speedup X`` exits with status 1 when
batched is not X times faster.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import feature_cost
import torch

from ldmdetect.features.reconstruction import scale_latents, to_vae_input
from ldmdetect.generative.autoencoder import autoencoder_scale_factor
from ldmdetect.generative.components import SDComponents
from ldmdetect.methods import cost
from ldmdetect.methods.lare2.features import LareConfig, lare_maps

PROMPT = "a photo"  # one prompt for all: its encoding is cached, as extraction caches it


def sd15_components(device: torch.device, dtype: torch.dtype, workdir: Path) -> SDComponents:
    """SD v1.5's VAE, UNet and text encoder, random weights, with SD's DDPM schedule and a
    byte-level CLIP tokenizer (77 tokens, as SD pads prompts)."""
    import diffusers
    from transformers import CLIPTokenizer

    from ldmdetect.generative.tiny import build_tiny_scheduler, write_byte_level_tokenizer

    with torch.device(device), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        models = {
            "vae": diffusers.AutoencoderKL(**cost.SD_VAE),
            "unet": diffusers.UNet2DConditionModel(**cost.SD15_UNET),
            "text_encoder": cost.TEXT_MODEL.build(),
        }
    for name, model in models.items():
        models[name] = model.to(device=device, dtype=dtype).eval().requires_grad_(False)
    tokenizer = CLIPTokenizer.from_pretrained(write_byte_level_tokenizer(workdir / "tokenizer"))
    scheduler = diffusers.DDPMScheduler.from_config(build_tiny_scheduler().config)
    return SDComponents(**models, tokenizer=tokenizer, scheduler=scheduler, family="sd")


def tiny_components(device: torch.device, workdir: Path) -> SDComponents:
    """The package's tiny random SD pipeline, loaded as detectors load theirs."""
    from ldmdetect.generative.components import load_sd_components
    from ldmdetect.generative.tiny import write_tiny_pipeline

    pipeline = write_tiny_pipeline(workdir / "tiny")
    names = ("vae", "unet", "text_encoder", "tokenizer", "scheduler")
    return load_sd_components(pipeline, device=device, names=names)


@torch.inference_mode()
def lare_loop(
    images: torch.Tensor,
    prompts: Sequence[str],
    seeds: Sequence[int],
    components: SDComponents,
    config: LareConfig,
) -> torch.Tensor:
    """LaRE maps one image at a time, one UNet pass per noise draw (the official loop), for an
    epsilon-prediction SD UNet; the random draws are :func:`lare_maps`'s, image by image."""
    vae, scheduler = components.vae, components.scheduler
    if scheduler.config.prediction_type != "epsilon" or components.family != "sd":
        raise ValueError("the reference loop covers SD 1.x's epsilon UNet only")
    device, maps = components.device, []
    channels = vae.config.latent_channels
    side = config.image_size // autoencoder_scale_factor(vae)
    for image, prompt, seed in zip(images, prompts, seeds, strict=True):
        pixels = image[None].float() / 255
        generator = torch.Generator("cpu").manual_seed(int(seed))
        posterior_noise = torch.randn(channels, side, side, generator=generator)
        draws = torch.randn(config.ensemble, channels, side, side, generator=generator)
        posterior = vae.encode(to_vae_input(vae, pixels)).latent_dist
        latent = posterior.mean.float()
        if config.sample_posterior:
            latent = latent + posterior.std.float() * posterior_noise.to(device)
        latent = scale_latents(vae, latent)
        conditioning = components.condition([prompt])
        timestep = torch.full((1,), config.timestep, dtype=torch.long, device=device)
        error = torch.zeros(1, channels, side, side, device=device)
        for draw in draws:
            noise = draw[None].to(device)
            noisy = scheduler.add_noise(latent, noise, timestep)
            error += (components.predict(noisy, timestep, conditioning) - noise).square()
        maps.append((error / config.ensemble).cpu())
    return torch.cat(maps)


def _seconds(run: Any, device: torch.device) -> tuple[float, Any]:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    result = run()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start, result


def _timing(count: int, seconds: float) -> dict[str, float]:
    return {"seconds": round(seconds, 4), "images_per_s": round(count / seconds, 3)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--tiny", action="store_true", help="the tiny random SD pipeline")
    parser.add_argument("--images", type=int, default=None, help="default: 64 CUDA, 8 CPU")
    parser.add_argument("--batch", type=int, default=None, help="default: 32 CUDA, 4 CPU")
    parser.add_argument("--image-size", type=int, default=LareConfig().image_size)
    parser.add_argument("--min-speedup", type=float, default=None, help="exit 1 below this")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--output", type=Path, help="write the JSON here too")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # random weights: denormals are 100x slower on CPUs
    from ldmdetect.generative.loading import default_dtype, resolve_device

    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    count = args.images or (64 if cuda else 8)
    batch = args.batch or (32 if cuda else 4)
    config = LareConfig(image_size=args.image_size)
    with tempfile.TemporaryDirectory() as workdir:
        if args.tiny:
            components = tiny_components(device, Path(workdir))
        else:
            components = sd15_components(device, default_dtype(device), Path(workdir))
    generator = torch.Generator("cpu").manual_seed(0)
    size = config.image_size
    images = torch.randint(0, 256, (count, 3, size, size), dtype=torch.uint8, generator=generator)
    prompts, seeds = [PROMPT] * count, list(range(count))

    def batched() -> torch.Tensor:
        chunks = []
        for start in range(0, count, batch):
            rows = slice(start, start + batch)
            chunks.append(lare_maps(images[rows], prompts[rows], seeds[rows], components, config))
        return torch.cat(chunks)

    def loop() -> torch.Tensor:
        return lare_loop(images, prompts, seeds, components, config)

    # Warm-up: kernels chosen, prompt encoded, allocator grown, for both paths.
    lare_maps(images[:batch], prompts[:batch], seeds[:batch], components, config)
    lare_loop(images[:2], prompts[:2], seeds[:2], components, config)
    batched_seconds, batched_maps = _seconds(batched, device)
    loop_seconds, loop_maps = _seconds(loop, device)
    difference = (batched_maps - loop_maps).abs().max() / loop_maps.abs().max()
    speedup = loop_seconds / batched_seconds
    report: dict[str, Any] = {
        "benchmark": "lare_batched",
        "device": str(device),
        "device_name": feature_cost.device_name(device),
        "dtype": str(components.dtype).removeprefix("torch."),
        "models": "tiny random SD pipeline"
        if args.tiny
        else "SD v1.5 VAE + UNet + CLIP text encoder, random weights",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "lare": config.to_dict(),
        "images": count,
        "batch": batch,
        "batched": {
            "seconds": round(batched_seconds, 4),
            "images_per_s": round(count / batched_seconds, 3),
        },
        "loop": {"seconds": round(loop_seconds, 4), "images_per_s": round(count / loop_seconds, 3)},
        "speedup": round(speedup, 3),
        "max_relative_difference": float(difference),
        "min_speedup": args.min_speedup,
    }
    text = json.dumps(report, indent=1)
    print(text)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text + "\n")
    if args.min_speedup is not None and speedup < args.min_speedup:
        raise SystemExit(
            f"lare_batched: batched LaRE is {speedup:.2f}x the per-image loop, below the "
            f"{args.min_speedup:g}x asked for"
        )
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
