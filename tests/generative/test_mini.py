"""The shipped mini generators load offline like any SD / SD3 checkpoint and generate with no
dtype argument; ldmdetect's own loaders take the mini flow model as an SD3-family pipeline.

The recipes that train them are tested in tests/recipes/test_mini_ldm_train.py and
tests/recipes/test_mini_flow_train.py."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import StableDiffusion3Pipeline, StableDiffusionPipeline

from ldmdetect.features.reconstruction import reconstruct
from ldmdetect.generative.components import load_sd_components
from ldmdetect.generative.families import pipeline_family
from ldmdetect.generative.mini import (
    CAPTIONS,
    mini_flow_dir,
    mini_flow_heldout_subjects,
    mini_flow_training_log,
    mini_ldm_dir,
    mini_ldm_heldout_subjects,
    mini_ldm_training_log,
)
from ldmdetect.methods.lare2.features import LareConfig, lare_maps


def _stored_dtypes(pipeline_dir: Path) -> dict[str, set[str]]:
    from safetensors import safe_open

    out = {}
    for path in pipeline_dir.glob("*/*.safetensors"):
        with safe_open(path, "pt") as f:
            out[path.parent.name] = {f.get_slice(k).get_dtype() for k in f.keys()}  # noqa: SIM118
    return out


def _assert_plain_loading_layout(pipeline_dir: Path) -> None:
    """Big components in fp16 to stay small; the text encoder in fp32, as its config says,
    because transformers loads the stored dtype while diffusers loads fp32 unless told."""
    assert _stored_dtypes(pipeline_dir) == {
        "vae": {"F16"},
        "unet": {"F16"},
        "text_encoder": {"F32"},
    }
    config = json.loads((pipeline_dir / "text_encoder" / "config.json").read_text())
    assert config.get("dtype", config.get("torch_dtype")) == "float32"


def test_shipped_weights_are_small_safetensors() -> None:
    files = [p for p in mini_ldm_dir().rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) < 20 * 2**20
    assert not [p for p in files if p.suffix in {".bin", ".pt", ".pth", ".ckpt"}]
    _assert_plain_loading_layout(mini_ldm_dir())


def _generate_plain(pipeline_dir: Path, steps: int) -> torch.Tensor:
    # No dtype argument: what a user types first. Every component must agree on fp32.
    pipeline = StableDiffusionPipeline.from_pretrained(pipeline_dir)
    pipeline.set_progress_bar_config(disable=True)
    dtypes = {pipeline.vae.dtype, pipeline.unet.dtype, pipeline.text_encoder.dtype}
    assert dtypes == {torch.float32}
    images = pipeline(
        "a photo of a cat",
        num_inference_steps=steps,
        generator=torch.Generator().manual_seed(0),
        output_type="pt",
    ).images
    assert torch.isfinite(images).all()
    return images


def test_shipped_pipeline_generates_with_a_plain_from_pretrained() -> None:
    images = _generate_plain(mini_ldm_dir(), steps=2)
    assert images.shape == (1, 3, 64, 64)
    assert images.std() > 0.01


def test_shipped_pipeline_generates_64px_images_offline() -> None:
    pipeline = StableDiffusionPipeline.from_pretrained(mini_ldm_dir(), torch_dtype=torch.float32)
    pipeline.set_progress_bar_config(disable=True)
    assert pipeline.vae.config.latent_channels == 4
    assert pipeline.vae.config.scaling_factor != 0.18215  # measured on its own latents
    images = pipeline(
        "a photo of a cat",
        num_inference_steps=3,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
    ).images
    assert images.shape == (1, 64, 64, 3)
    assert images.std() > 0.01


def test_heldout_subjects_are_captioned_and_not_trained_on() -> None:
    log = mini_ldm_training_log()
    heldout = mini_ldm_heldout_subjects()
    assert heldout and set(heldout) <= set(CAPTIONS)
    assert not set(heldout) & set(log["training_photos"])
    assert set(heldout) | set(log["training_photos"]) == set(CAPTIONS)


# The mini flow model (SD3 family).

FLOW_MODELS = ("vae", "transformer", "text_encoder", "text_encoder_2", "text_encoder_3")


def test_shipped_flow_model_is_small_safetensors_in_sd3_layout() -> None:
    files = [p for p in mini_flow_dir().rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) < 20 * 2**20
    assert not [p for p in files if p.suffix in {".bin", ".pt", ".pth", ".ckpt"}]
    assert _stored_dtypes(mini_flow_dir()) == {
        "vae": {"F16"},
        "transformer": {"F16"},
        "text_encoder": {"F32"},
        "text_encoder_2": {"F32"},
        "text_encoder_3": {"F32"},
    }
    assert pipeline_family(mini_flow_dir()).name == "sd3"


def test_shipped_flow_model_generates_64px_images_with_a_plain_from_pretrained() -> None:
    pipeline = StableDiffusion3Pipeline.from_pretrained(mini_flow_dir())
    pipeline.set_progress_bar_config(disable=True)
    assert {getattr(pipeline, name).dtype for name in FLOW_MODELS} == {torch.float32}
    vae = pipeline.vae.config
    assert vae.latent_channels == 16 and not vae.use_quant_conv
    assert vae.shift_factor is not None  # measured on its own latents, like SD3's
    images = pipeline(
        "a photo of a cat",
        num_inference_steps=2,
        guidance_scale=4.0,
        generator=torch.Generator().manual_seed(0),
        output_type="pt",
    ).images
    assert images.shape == (1, 3, 64, 64)
    assert torch.isfinite(images).all()
    assert images.std() > 0.01


def test_flow_heldout_subjects_are_captioned_and_not_trained_on() -> None:
    log = mini_flow_training_log()
    heldout = mini_flow_heldout_subjects()
    assert heldout == mini_ldm_heldout_subjects()  # same split as the mini LDM
    assert not set(heldout) & set(log["training_photos"])
    assert set(heldout) | set(log["training_photos"]) == set(CAPTIONS)


def test_ldmdetects_loaders_take_the_flow_model_as_sd3() -> None:
    components = load_sd_components(mini_flow_dir(), device="cpu")
    assert components.family == "sd3"
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    # Reconstruction (AE, AEROBLADE) round-trips at 64 px through 16x16x16 latents.
    recon = reconstruct(components.vae, images, sample=False)
    assert recon.shape == images.shape and torch.isfinite(recon).all()
    # LaRE: the flow velocity error on the 16-channel latent grid.
    config = LareConfig(image_size=64, ensemble=2)
    maps = lare_maps(images, ["a photo of a cat", ""], [0, 1], components, config)
    assert maps.shape == (2, 16, 16, 16)
    assert torch.isfinite(maps).all() and maps.abs().sum() > 0
