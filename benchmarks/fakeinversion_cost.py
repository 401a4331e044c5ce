"""What FakeInversion costs per image, stage by stage, on full-size architectures.

Stages: captioning (BLIP-2 OPT-2.7b: ViT-g vision tower, Q-Former, OPT-2.7b generating 20
tokens), the text encoder (SD v1.5's CLIP ViT-L/14 text tower), VAE encoding of the 512 px
crop, DDIM inversion + re-generation (2 x steps UNet passes on a 64x64 latent), decoding of
z_T and z_0' and the 9-channel ResNet-50. Weights are random: cost depends on the
architecture only.

FLOPs come from ``torch.utils.flop_counter.FlopCounterMode`` on models built on the meta
device (no memory, no weights), one forward each, multiplied by how often the stage runs.
Captioning's language model is counted as one forward over its whole sequence (32 query
tokens + BOS + 20 new tokens): the matmul FLOPs of a cached greedy decode.

Timing:
- ``--quick`` (CPU-friendly): one UNet pass, one VAE encode, one VAE decode, the text encoder
  and BLIP-2's vision tower + Q-Former are timed on ``--batch`` images; stage times are those
  multiplied by how often the stage runs. BLIP-2's language model (2.65 B parameters) is not
  run: its time is estimated from its FLOPs at the FLOP rate the vision tower achieved
  (``estimated`` in the JSON), a lower bound, since greedy decoding at small batch is
  memory-bound.
- default: ``invert_and_regenerate`` itself, end to end, and BLIP-2's ``generate`` forced to 20
  new tokens (``--no-generate`` skips it; its time is then estimated as above).

    python benchmarks/fakeinversion_cost.py --quick --threads 2
    python benchmarks/fakeinversion_cost.py --device cuda --batch 8
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from collections.abc import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

SD15_UNET = {
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    "up_block_types": ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    "block_out_channels": (320, 640, 1280, 1280),
    "layers_per_block": 2,
    "cross_attention_dim": 768,
    "attention_head_dim": 8,
}
SD15_VAE = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "block_out_channels": (128, 256, 512, 512),
    "layers_per_block": 2,
    "latent_channels": 4,
    "sample_size": 512,
    "scaling_factor": 0.18215,
}
SD15_TEXT = {
    "vocab_size": 49408,
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "max_position_embeddings": 77,
    "hidden_act": "quick_gelu",
}
SD15_SCHEDULER = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "prediction_type": "epsilon",
}
OPT_2_7B = {
    "vocab_size": 50272,
    "hidden_size": 2560,
    "num_hidden_layers": 32,
    "ffn_dim": 10240,
    "num_attention_heads": 32,
    "word_embed_proj_dim": 2560,
    "max_position_embeddings": 2048,
}
CAPTION_TOKENS = 20
QUERY_TOKENS = 32


def blip2_config():
    from transformers import Blip2Config, OPTConfig

    # Blip2Config's vision and Q-Former defaults are BLIP-2's (ViT-g/14 at 224, 12-layer
    # Q-Former); the OPT defaults are not OPT-2.7b's, so those are given.
    return Blip2Config(
        text_config=OPTConfig(**OPT_2_7B).to_dict(),
        num_query_tokens=QUERY_TOKENS,
        image_token_index=50265,
    )


def build(device: str | torch.device, dtype: torch.dtype):
    """Random-weight SD v1.5 components and BLIP-2 OPT-2.7b (meta device: no memory)."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import Blip2ForConditionalGeneration, CLIPTextConfig, CLIPTextModel

    with torch.device(device):
        unet = UNet2DConditionModel(**SD15_UNET).to(dtype).eval()
        vae = AutoencoderKL(**SD15_VAE).to(dtype).eval()
        text = CLIPTextModel(CLIPTextConfig(**SD15_TEXT)).to(dtype).eval()
    # from_config keeps DDIM's set_alpha_to_one in the config, as loading a pipeline does.
    scheduler = DDPMScheduler.from_config(SD15_SCHEDULER)
    return unet, vae, text, scheduler, Blip2ForConditionalGeneration


def count_flops(fn: Callable[[], object]) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def flops_per_image() -> dict[str, float]:
    """FLOPs of one forward of each stage for ONE 512 px image (meta device)."""
    from transformers import Blip2ForConditionalGeneration

    from ldmdetect.models.fakeinversion import FakeInversionNet

    meta = torch.device("meta")
    unet, vae, text, _, _ = build(meta, torch.float32)
    with meta:
        # Eager attention: the SDPA mask helpers inspect mask values, which meta tensors lack.
        blip2 = Blip2ForConditionalGeneration._from_config(
            blip2_config(), attn_implementation="eager"
        )
        classifier = FakeInversionNet("resnet50")
    latent = torch.zeros(1, 4, 64, 64, device=meta)
    context = torch.zeros(1, 77, 768, device=meta)
    pixels = torch.zeros(1, 3, 512, 512, device=meta)
    image_embeds = blip2.vision_model(torch.zeros(1, 3, 224, 224, device=meta)).last_hidden_state
    sequence = QUERY_TOKENS + 1 + CAPTION_TOKENS
    hidden = OPT_2_7B["hidden_size"]
    return {
        "caption_vision": count_flops(
            lambda: blip2.vision_model(torch.zeros(1, 3, 224, 224, device=meta))
        ),
        "caption_qformer": count_flops(
            lambda: blip2.language_projection(
                blip2.qformer(
                    query_embeds=blip2.query_tokens, encoder_hidden_states=image_embeds
                ).last_hidden_state
            )
        ),
        "caption_language_model": count_flops(
            lambda: blip2.language_model(
                inputs_embeds=torch.zeros(1, sequence, hidden, device=meta)
            )
        ),
        "text_encoder": count_flops(
            lambda: text(torch.zeros(1, 77, dtype=torch.long, device=meta))
        ),
        "vae_encode": count_flops(lambda: vae.encode(pixels)),
        "unet_pass": count_flops(lambda: unet(latent, 500, encoder_hidden_states=context)),
        "vae_decode": count_flops(lambda: vae.decode(latent)),
        "classifier": count_flops(lambda: classifier(torch.zeros(1, 9, 224, 224, device=meta))),
    }


def timed(fn: Callable[[], object], device: torch.device, repeats: int = 1) -> float:
    """Seconds per call (after one warm-up call)."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    with torch.inference_mode():
        fn()
        sync()
        start = time.perf_counter()
        for _ in range(repeats):
            fn()
        sync()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="time single passes, multiply")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--steps", type=int, default=50, help="DDIM steps (each way)")
    parser.add_argument("--guidance", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--no-generate", action="store_true", help="skip BLIP-2 generate")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from ldmdetect.features.inversion import InversionConfig, invert_and_regenerate
    from ldmdetect.generative.components import SDComponents
    from ldmdetect.generative.loading import default_dtype, resolve_device
    from ldmdetect.generative.tiny import write_byte_level_tokenizer

    device = resolve_device(args.device)
    dtype = default_dtype(device)
    b, steps = args.batch, args.steps
    unet_passes = 2 * steps * (2 if args.guidance != 1.0 else 1)  # guided rows double the batch

    flops = flops_per_image()
    flops["caption"] = (
        flops["caption_vision"] + flops["caption_qformer"] + flops["caption_language_model"]
    )
    per_image = {
        "caption": flops["caption"],
        "text_encoder": flops["text_encoder"],  # at most once per image (once per caption)
        "vae_encode": flops["vae_encode"],
        "inversion_and_sampling": unet_passes * flops["unet_pass"],
        "vae_decode_both": 2 * flops["vae_decode"],
        "classifier": flops["classifier"],
    }
    total_flops = sum(per_image.values())

    unet, vae, text, scheduler, blip2_cls = build(device, dtype)
    seconds: dict[str, float] = {}
    estimated: list[str] = []
    generator = torch.Generator(device="cpu").manual_seed(0)
    pixels = torch.rand(b, 3, 512, 512, generator=generator)
    latent = torch.randn(b, 4, 64, 64, generator=generator).to(device, dtype)
    context = torch.randn(b, 77, 768, generator=generator).to(device, dtype)
    tokens = torch.randint(0, 49408, (b, 77), generator=generator).to(device)

    seconds["text_encoder"] = timed(lambda: text(tokens), device)
    seconds["vae_encode"] = timed(
        lambda: vae.encode(pixels.to(device, dtype) * 2 - 1).latent_dist.mean, device
    )
    seconds["vae_decode_both"] = 2 * timed(lambda: vae.decode(latent), device)
    unet_seconds = timed(lambda: unet(latent, 500, encoder_hidden_states=context), device)
    if args.quick:
        seconds["inversion_and_sampling"] = unet_passes * unet_seconds
    else:
        with tempfile.TemporaryDirectory() as tmp:
            from transformers import CLIPTokenizer

            tokenizer = CLIPTokenizer.from_pretrained(write_byte_level_tokenizer(tmp))
        components = SDComponents(vae, unet, text, tokenizer, scheduler)
        config = InversionConfig(image_size=512, steps=steps, guidance=args.guidance)
        prompts = [f"a photo number {i}" for i in range(b)]
        start = time.perf_counter()
        invert_and_regenerate(pixels, prompts, components, config)
        if device.type == "cuda":
            torch.cuda.synchronize()
        end_to_end = time.perf_counter() - start
        # The end-to-end call includes the text encoder, the encode and the decodes.
        seconds["inversion_and_sampling"] = max(
            0.0,
            end_to_end
            - seconds["text_encoder"]
            - seconds["vae_encode"]
            - seconds["vae_decode_both"],
        )
        seconds["invert_and_regenerate_end_to_end"] = end_to_end
    unet = None  # free its memory before BLIP-2 is built

    # Captioning: vision tower + Q-Former timed; the language model timed or estimated.
    from transformers import Blip2QFormerModel, Blip2VisionModel

    config = blip2_config()
    generate = not (args.quick or args.no_generate)
    with torch.device(device):
        if generate:
            blip2 = blip2_cls._from_config(config).to(dtype).eval()
            vision, qformer = blip2.vision_model, blip2.qformer
        else:  # the 2.65 B-parameter language model is never built
            vision = Blip2VisionModel(config.vision_config).to(dtype).eval()
            qformer = Blip2QFormerModel(config.qformer_config).to(dtype).eval()
        queries = torch.zeros(b, QUERY_TOKENS, config.qformer_config.hidden_size, dtype=dtype)
    images = torch.rand(b, 3, 224, 224, generator=generator).to(device, dtype)
    vision_seconds = timed(lambda: vision(images), device)
    with torch.inference_mode():
        image_embeds = vision(images).last_hidden_state
    qformer_seconds = timed(
        lambda: qformer(query_embeds=queries, encoder_hidden_states=image_embeds), device
    )
    rate = (
        b
        * (flops["caption_vision"] + flops["caption_qformer"])
        / (vision_seconds + qformer_seconds)
    )
    if generate:
        seconds["caption"] = timed(
            lambda: blip2.generate(
                pixel_values=images,
                max_new_tokens=CAPTION_TOKENS,
                min_new_tokens=CAPTION_TOKENS,
                do_sample=False,
            ),
            device,
        )
    else:
        language_seconds = b * flops["caption_language_model"] / rate
        seconds["caption"] = vision_seconds + qformer_seconds + language_seconds
        estimated.append(
            "caption: vision tower + Q-Former timed; the OPT-2.7b language model estimated from "
            "its FLOPs at the vision tower's FLOP rate (a lower bound: decoding is memory-bound)"
        )

    seconds["classifier"] = 0.0  # below the timer's noise next to the rest; see FLOPs
    stages = ["caption", "text_encoder", "vae_encode", "inversion_and_sampling", "vae_decode_both"]
    total_seconds = sum(seconds[s] for s in stages)
    result = {
        "benchmark": "fakeinversion_cost",
        "mode": "quick: single passes timed and multiplied" if args.quick else "end to end",
        "device": str(device),
        "dtype": str(dtype).replace("torch.", ""),
        "threads": torch.get_num_threads(),
        "batch": b,
        "image_size": 512,
        "steps_each_way": steps,
        "guidance": args.guidance,
        "unet_passes_per_image": unet_passes,
        "flops_single_forward": {k: round(v / 1e9, 2) for k, v in flops.items()},
        "gflops_per_image": {k: round(v / 1e9, 1) for k, v in per_image.items()},
        "gflops_share": {k: round(v / total_flops, 4) for k, v in per_image.items()},
        "gflops_total_per_image": round(total_flops / 1e9, 1),
        "seconds_per_batch": {k: round(v, 3) for k, v in seconds.items()},
        "unet_pass_seconds_per_batch": round(unet_seconds, 3),
        "images_per_second": {s: round(b / seconds[s], 4) if seconds[s] else None for s in stages},
        "images_per_second_all_stages": round(b / total_seconds, 5),
        "time_share": {s: round(seconds[s] / total_seconds, 4) for s in stages},
        "estimated": estimated,
        "machine": {"platform": platform.platform(), "torch": torch.__version__},
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
