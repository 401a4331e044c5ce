"""The shipped mini LDM loads like any SD checkpoint, reconstructs faithfully, and retrains."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderKL, StableDiffusionPipeline

from ldmdetect.generative.mini import (
    MiniLDMConfig,
    build_autoencoder,
    heldout_patches,
    mini_ldm_dir,
    psnr,
    reconstruct,
    train_mini_ldm,
)

# The model card states this target; SD's own VAE scores ~24.5 dB on COCO at 256 px.
PSNR_TARGET_DB = 24.0


@pytest.fixture(scope="module")
def shipped_config() -> MiniLDMConfig:
    log = json.loads((mini_ldm_dir() / "training_log.json").read_text())
    return MiniLDMConfig.from_dict(log["config"])


@pytest.fixture(scope="module")
def heldout(shipped_config: MiniLDMConfig) -> torch.Tensor:
    return heldout_patches(shipped_config, 32)


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


def test_shipped_autoencoder_is_faithful_on_heldout_photos(
    shipped_config: MiniLDMConfig, heldout: torch.Tensor
) -> None:
    vae = AutoencoderKL.from_pretrained(mini_ldm_dir() / "vae", torch_dtype=torch.float32)
    trained = psnr(heldout, reconstruct(vae, heldout)).mean().item()
    torch.manual_seed(0)
    random_vae = build_autoencoder(shipped_config).eval()
    untrained = psnr(heldout, reconstruct(random_vae, heldout)).mean().item()
    assert trained > untrained + 10
    assert trained >= PSNR_TARGET_DB


def test_train_mini_ldm_smoke(tmp_path: Path) -> None:
    config = MiniLDMConfig(
        ae_block_out_channels=(32, 32),
        ae_steps=2,
        ae_batch_size=2,
        ae_eval_every=2,
        eval_patches=2,
        text_hidden_size=32,
        text_layers=1,
        text_heads=2,
        unet_block_out_channels=(32, 32),
        unet_cross_attention=(False, True),
        unet_attention_head_dim=8,
        unet_steps=2,
        unet_batch_size=2,
        latent_pool_size=4,
        warmup_steps=1,
        log_every=1,
    )
    out = train_mini_ldm(config, tmp_path / "mini", progress=False)
    log = json.loads((out / "training_log.json").read_text())
    assert log["config"]["ae_steps"] == 2
    assert len(log["unet"]["loss"]) == 2
    assert not (out / "_checkpoints").exists()
    _assert_plain_loading_layout(out)  # a retrain writes the shipped layout
    vae_config = json.loads((out / "vae" / "config.json").read_text())
    assert vae_config["scaling_factor"] == pytest.approx(log["unet"]["scaling_factor"])
    image = _generate_plain(out, steps=1)
    # factor 2 here: the pipeline derives the output size from the UNet and VAE configs.
    assert image.shape == (1, 3, 64, 64)
