"""The shipped mini LDM loads offline like any SD checkpoint and generates with no dtype argument.

The recipe that trains it is tested in tests/recipes/test_mini_ldm_train.py."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import StableDiffusionPipeline

from ldmdetect.generative.mini import (
    CAPTIONS,
    mini_ldm_dir,
    mini_ldm_heldout_subjects,
    mini_ldm_training_log,
)


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
