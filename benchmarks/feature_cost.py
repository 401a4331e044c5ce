"""Feature-extraction cost per detection method: FLOPs per image and images/s; prints JSON.

Each method registers a cost function (``@register("name")``) that builds its generator at
full size with random weights (cost does not depend on weight values) and measures one
image's feature. The architectures are written out below from the published configs, so the
benchmark needs no download.

    python benchmarks/feature_cost.py --quick --threads 2          # CPU, a few minutes
    python benchmarks/feature_cost.py --method lare2 --device cuda  # bf16 on GPU

FLOPs are counted with ``torch.utils.flop_counter.FlopCounterMode`` on the meta device
(shapes only, so counting is free and identical on every machine); a multiply-add is 2 FLOPs.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel, UNet2DModel
from torch.utils.flop_counter import FlopCounterMode
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from ldmdetect.features.lare import LareConfig, lare_maps
from ldmdetect.generative.components import SDComponents
from ldmdetect.generative.loading import default_dtype, resolve_device
from ldmdetect.generative.tiny import write_byte_level_tokenizer

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
# runwayml/stable-diffusion-v1-5 vae/config.json.
SD15_VAE: dict[str, Any] = {
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
# runwayml/stable-diffusion-v1-5 scheduler/scheduler_config.json (PNDM there; same betas).
SD15_SCHEDULER: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "prediction_type": "epsilon",
}
# ADM's 256x256 unconditional model (guided-diffusion's 256x256_diffusion_uncond.pt, the
# generator DIRE inverts): num_channels 256, channel_mult (1, 1, 2, 2, 4, 4) for 256 px,
# num_res_blocks 2, attention_resolutions 32,16,8 (the three lowest levels and the middle),
# num_head_channels 64, resblock_updown (resnet down/upsampling), use_scale_shift_norm,
# learn_sigma (6 output channels). This UNet2DModel has 552.8 M parameters, as ADM's.
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


# --------------------------------------------------------------------------------------------
# Registry and shared helpers


@dataclass(frozen=True)
class Bench:
    """What every cost function gets: where and how to measure."""

    device: torch.device
    dtype: torch.dtype
    image_size: int
    quick: bool
    batch_sizes: tuple[int, ...] = (1, 8)

    @property
    def repeats(self) -> int:
        return 1 if self.quick else 3


CostFunction = Callable[[Bench], dict[str, Any]]
COST_FUNCTIONS: dict[str, CostFunction] = {}


def register(name: str) -> Callable[[CostFunction], CostFunction]:
    def add(fn: CostFunction) -> CostFunction:
        COST_FUNCTIONS[name] = fn
        return fn

    return add


def build(cls: type, config: dict[str, Any], bench: Bench) -> torch.nn.Module:
    """A randomly initialised model on the bench's device and dtype, frozen."""
    model = cls(CLIPTextConfig(**config)) if issubclass(cls, CLIPTextModel) else cls(**config)
    model = model.to(bench.device)
    if bench.dtype != torch.float32:
        model = model.to(bench.dtype)
    return model.eval().requires_grad_(False)


def on_meta(cls: type, config: dict[str, Any]) -> torch.nn.Module:
    """The same architecture without storage, for counting FLOPs."""
    with torch.device("meta"):
        if issubclass(cls, CLIPTextModel):
            return cls(CLIPTextConfig(**config)).eval()
        return cls(**config).eval()


def count_flops(fn: Callable[[], Any]) -> int:
    with torch.device("meta"), torch.inference_mode(), FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds(fn: Callable[[], Any], bench: Bench, *, warmup: bool | None = None) -> float:
    """Best wall time of ``bench.repeats`` calls, after one untimed warm-up call.

    ``warmup`` None means warm up unless ``--quick``: on a CPU one call takes up to minutes, so
    ``--quick`` warms up only a model's first measurement (``warmup=True``), which pays the
    process's one-off costs (allocation, kernel selection) for the rest.
    """
    if warmup or (warmup is None and not bench.quick):
        fn()
        synchronize(bench.device)
    best = float("inf")
    for _ in range(bench.repeats):
        start = time.perf_counter()
        fn()
        synchronize(bench.device)
        best = min(best, time.perf_counter() - start)
    return best


@contextlib.contextmanager
def released() -> Iterator[None]:
    """Free big models between methods (they do not fit side by side on small machines)."""
    try:
        yield
    finally:
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def random_images(batch: int, size: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(batch)
    return torch.randint(0, 256, (batch, 3, size, size), generator=generator, dtype=torch.uint8)


# --------------------------------------------------------------------------------------------
# LaRE^2


def official_lare(
    components: SDComponents, image: torch.Tensor, prompt: str, config: LareConfig
) -> torch.Tensor:
    """LaRE the way the official ``extract_lare.py`` computes it: one image per call.

    Per image: tokenise and encode the prompt, encode the image (batch 1), sample the
    posterior, repeat the latent ``ensemble`` times, noise all copies and run the UNet once on
    that batch of ``ensemble``; the squared error is averaged over the copies.
    """
    vae, unet, scheduler = components.vae, components.unet, components.scheduler
    device = components.device
    tokens = components.tokenizer(
        [prompt], padding="max_length", max_length=77, truncation=True, return_tensors="pt"
    )
    context = components.text_encoder(tokens.input_ids.to(device))[0]
    x = (image[None].to(device).float() / 127.5 - 1).to(vae.dtype)
    latents = vae.encode(x).latent_dist.sample() * vae.config.scaling_factor
    latents = latents.repeat(config.ensemble, 1, 1, 1)
    noise = torch.randn_like(latents)
    t = torch.full((config.ensemble,), config.timestep, device=device, dtype=torch.long)
    noisy = scheduler.add_noise(latents, noise, t)
    prediction = unet(noisy, t, context.repeat(config.ensemble, 1, 1)).sample
    return (prediction.float() - noise.float()).square().mean(0).cpu()


@register("lare2")
def lare2_cost(bench: Bench) -> dict[str, Any]:
    """LaRE^2 on SD v1.5: VAE encode + one UNet pass on ``ensemble`` noised latents."""
    config = LareConfig(image_size=bench.image_size)
    side = bench.image_size // 8
    e = config.ensemble

    meta_vae, meta_unet = on_meta(AutoencoderKL, SD15_VAE), on_meta(UNet2DConditionModel, SD15_UNET)
    meta_text = on_meta(CLIPTextModel, SD15_TEXT_ENCODER)
    vae_flops = count_flops(lambda: meta_vae.encode(torch.empty(1, 3, *(bench.image_size,) * 2)))
    unet_flops = count_flops(
        lambda: meta_unet(
            torch.empty(e, 4, side, side),
            torch.full((e,), config.timestep),
            torch.empty(e, 77, 768),
        )
    )
    text_flops = count_flops(lambda: meta_text(torch.zeros(1, 77, dtype=torch.long)))

    with tempfile.TemporaryDirectory() as folder:
        # A byte-level CLIP tokenizer: SD's 49k vocabulary is not needed to time 77-token
        # sequences (every prompt is padded to 77).
        tokenizer = CLIPTokenizer.from_pretrained(write_byte_level_tokenizer(folder))
    start = time.perf_counter()
    components = SDComponents(
        vae=build(AutoencoderKL, SD15_VAE, bench),
        unet=build(UNet2DConditionModel, SD15_UNET, bench),
        text_encoder=build(CLIPTextModel, SD15_TEXT_ENCODER, bench),
        tokenizer=tokenizer,
        scheduler=DDPMScheduler(**SD15_SCHEDULER),
    )
    build_seconds = time.perf_counter() - start
    prompt = "a photo of a cat"
    components.encode_prompts([prompt])  # class prompts are encoded once per class

    batched: dict[str, float] = {}
    for i, batch in enumerate(bench.batch_sizes):
        images = random_images(batch, bench.image_size)
        run = lambda images=images, batch=batch: lare_maps(  # noqa: E731
            images, [prompt] * batch, list(range(batch)), components, config
        )
        elapsed = seconds(run, bench, warmup=True if i == 0 else None)
        batched[str(batch)] = round(batch / elapsed, 4)

    image = random_images(1, bench.image_size)[0]
    with torch.inference_mode():
        official = seconds(lambda: official_lare(components, image, prompt, config), bench)
        ids = components.tokenizer(
            [prompt], padding="max_length", max_length=77, return_tensors="pt"
        ).input_ids.to(bench.device)
        text = seconds(lambda: components.text_encoder(ids), bench)
    return {
        "generator": "SD v1.5 architecture, random weights (VAE, UNet, CLIP ViT-L/14 text)",
        "config": config.to_dict(),
        "latent": [4, side, side],
        "flops_per_image": vae_flops + unet_flops,
        "flops": {
            "vae_encode": vae_flops,
            "unet_x_ensemble": unet_flops,
            "text_encoder_per_prompt": text_flops,
        },
        "images_per_s": batched,
        "seconds_per_image": {b: round(1 / r, 4) for b, r in batched.items()},
        "official_way": {
            "what": (
                "extract_lare.py: one image per call; text encoder, VAE (batch 1) and UNet "
                f"(batch {e}: the ensemble is batched per image, not looped) every image"
            ),
            "flops_per_image": vae_flops + unet_flops + text_flops,
            "images_per_s": round(1 / official, 4),
            "seconds_per_image": round(official, 4),
        },
        "text_encoder_seconds_per_prompt": round(text, 4),
        "note": "prompt embeddings are cached per distinct prompt, so images/s excludes them",
        "build_seconds": round(build_seconds, 1),
    }


# --------------------------------------------------------------------------------------------
# DIRE


@register("dire")
def dire_cost(bench: Bench) -> dict[str, Any]:
    """DIRE: DDIM inversion (20 steps) then reconstruction (20 steps) with ADM-256 uncond."""
    passes = 2 * DIRE_STEPS
    size = bench.image_size
    meta_unet = on_meta(UNet2DModel, ADM256_UNCOND)
    parameters = sum(p.numel() for p in meta_unet.parameters())
    pass_flops = count_flops(lambda: meta_unet(torch.empty(1, 3, size, size), torch.tensor([500])))

    start = time.perf_counter()
    unet = build(UNet2DModel, ADM256_UNCOND, bench)
    build_seconds = time.perf_counter() - start

    def unet_pass(batch: int) -> None:
        x = torch.randn(batch, 3, size, size, device=bench.device, dtype=bench.dtype)
        t = torch.full((batch,), 500, device=bench.device)
        unet(x, t)

    per_pass: dict[str, float] = {}
    with torch.inference_mode():
        for i, batch in enumerate(bench.batch_sizes):
            if bench.quick and bench.device.type == "cpu" and batch > 1:
                continue  # minutes per pass on a CPU; batch 1 states the cost
            elapsed = seconds(
                lambda batch=batch: unet_pass(batch), bench, warmup=True if i == 0 else None
            )
            per_pass[str(batch)] = elapsed / batch
    per_image = {b: s * passes for b, s in per_pass.items()}
    return {
        "generator": "ADM 256x256 unconditional (guided-diffusion), random weights",
        "unet_config": {
            k: list(v) if isinstance(v, tuple) else v for k, v in ADM256_UNCOND.items()
        },
        "unet_parameters": parameters,
        "unet_passes_per_image": passes,
        "flops_per_image": pass_flops * passes,
        "flops": {"unet_pass": pass_flops},
        "images_per_s": {b: round(1 / s, 6) for b, s in per_image.items()},
        "seconds_per_image": {b: round(s, 3) for b, s in per_image.items()},
        "unet_pass_seconds_per_image": {b: round(s, 4) for b, s in per_pass.items()},
        "timing": (
            f"one UNet pass timed, times {passes} ({DIRE_STEPS} DDIM inversion + {DIRE_STEPS} "
            "reconstruction steps); the DDIM update arithmetic between passes is negligible"
        ),
        "build_seconds": round(build_seconds, 1),
    }


# --------------------------------------------------------------------------------------------


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def ratios(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """DIRE over LaRE: how many times more time and FLOPs DIRE spends per image."""
    if not {"lare2", "dire"} <= results.keys():
        return {}
    lare, dire = results["lare2"], results["dire"]
    out: dict[str, Any] = {
        "dire_over_lare2_flops": round(dire["flops_per_image"] / lare["flops_per_image"], 1),
        "dire_over_lare2_time": {
            b: round(dire["seconds_per_image"][b] / lare["seconds_per_image"][b], 1)
            for b in dire["seconds_per_image"]
            if b in lare["seconds_per_image"]
        },
        "dire_over_lare2_official_way_time_batch1": round(
            dire["seconds_per_image"]["1"] / lare["official_way"]["seconds_per_image"], 1
        ),
        "paper_claim": "LaRE^2 extracts features 8x faster than DIRE",
    }
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="all", choices=[*COST_FUNCTIONS, "all"])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="one timed run per measurement, no warm-up; on CPU, DIRE at batch 1 only",
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    # Random weights can drive activations into denormals, which are 100x slower on CPUs.
    torch.set_flush_denormal(True)
    device = resolve_device(args.device)
    bench = Bench(
        device=device, dtype=default_dtype(device), image_size=args.image_size, quick=args.quick
    )
    methods = list(COST_FUNCTIONS) if args.method == "all" else [args.method]
    results: dict[str, Any] = {}
    for name in methods:
        with released():
            start = time.perf_counter()
            results[name] = COST_FUNCTIONS[name](bench)
            results[name]["benchmark_seconds"] = round(time.perf_counter() - start, 1)
    report = {
        "device": str(device),
        "device_name": device_name(device),
        "dtype": str(bench.dtype).removeprefix("torch."),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "image_size": args.image_size,
        "quick": args.quick,
        "methods": results,
        "ratios": ratios(results),
    }
    print(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
