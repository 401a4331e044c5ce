"""DDIM inversion and re-generation (``features.inversion``).

Correctness on a *trained* UNet, the shipped mini LDM: inverting a latent with N DDIM steps and
sampling back with N steps must return close to where it started, and much closer than the
same round trip through a UNet of the same architecture re-initialised at random.

Tolerance: relative L2 error ``|z_0' - z_0| / |z_0|`` < 0.25 per image at 10 steps. DDIM
inversion is exact only in the limit of infinitely many steps: each inverse step predicts the
noise at the latent it leaves (z_t) and uses it for the latent it reaches (z_t+1), which it
does not know yet, a first-order error per step, so the round trip's error shrinks about as
1/N. Measured on 8 bundled photos (64 px center crops, their training captions): mean 0.23 /
0.14 / 0.077 at 5 / 10 / 20 steps, worst 0.19 at 10 steps; the same round trip through the
random UNet: 1.0-2.2 at 10 steps, not shrinking with N. The test also checks that the error
falls with more steps (10 vs 5), which a misaligned pair of schedules would not show.
"""

import pytest
import torch
from diffusers import UNet2DConditionModel

from ldmdetect.features.inversion import (
    InversionConfig,
    ddim_invert,
    ddim_sample,
    invert_and_regenerate,
    invert_latents,
    regenerate_latents,
    resize_uint8,
)
from ldmdetect.features.reconstruction import encode_latents
from ldmdetect.generative.components import load_sd_components
from ldmdetect.generative.families import UnsupportedFamily
from ldmdetect.generative.mini import CAPTIONS, mini_ldm_dir
from ldmdetect.io.crops import center_box, crop
from ldmdetect.io.images import load_image, pil_to_uint8
from ldmdetect.io.samples import sample_photos

TOLERANCE_10_STEPS = 0.25


@pytest.fixture(scope="module")
def mini():
    return load_sd_components(mini_ldm_dir(), device="cpu")


@pytest.fixture(scope="module")
def tiny(tiny_pipeline_dir):
    return load_sd_components(tiny_pipeline_dir, device="cpu")


@pytest.fixture(scope="module")
def photos_64():
    """Three bundled photos (64 px center crops of thumbnails) and their training captions."""
    images, prompts = [], []
    for name, path in sample_photos()[:3]:
        image = load_image(path)
        image.thumbnail((96, 96))
        images.append(pil_to_uint8(crop(image, center_box(image.width, image.height, 64))))
        key = next(k for k in CAPTIONS if name.startswith(k.split("_")[0]))
        prompts.append(CAPTIONS[key])
    return torch.stack(images), prompts


def _round_trip_error(z0, embeddings, unet, scheduler_config, steps):
    zt = ddim_invert(z0, embeddings, unet, scheduler_config, steps=steps)
    z0_again = ddim_sample(zt, embeddings, unet, scheduler_config, steps=steps)
    return (z0_again - z0).flatten(1).norm(dim=1) / z0.flatten(1).norm(dim=1), zt


def test_inversion_round_trip_on_the_trained_mini_ldm(mini, photos_64):
    images, prompts = photos_64
    z0 = encode_latents(mini.vae, images.float() / 255, sample=False)
    embeddings = mini.encode_prompts(prompts)
    config = mini.scheduler.config
    error_10, zt = _round_trip_error(z0, embeddings, mini.unet, config, 10)
    assert (error_10 < TOLERANCE_10_STEPS).all(), error_10
    # The inverted latent looks like the unit Gaussian the sampler starts from.
    assert 0.8 < zt.std().item() < 1.2
    error_5, _ = _round_trip_error(z0, embeddings, mini.unet, config, 5)
    assert (error_10 < 0.8 * error_5).all(), (error_5, error_10)

    random_unet = UNet2DConditionModel.from_config(mini.unet.config).eval()
    random_error, _ = _round_trip_error(z0, embeddings, random_unet, config, 10)
    assert random_error.min() > 3 * error_10.max(), (random_error, error_10)


def test_invert_and_regenerate_shapes_batching_and_prompts(tiny):
    config = InversionConfig(image_size=64, steps=3)
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (3, 3, 64, 64), dtype=torch.uint8, generator=generator)
    prompts = ["a photo", "a cat", "a photo"]
    encoded: list[int] = []
    hook = tiny.text_encoder.register_forward_hook(
        lambda module, args, output: encoded.append(args[0].shape[0])
    )
    try:
        tiny._prompt_cache.clear()
        noise, recon = invert_and_regenerate(images, prompts, tiny, config)
    finally:
        hook.remove()
    assert encoded == [2]  # one text-encoder pass, for the two distinct prompts
    assert noise.shape == recon.shape == (3, 3, 64, 64)
    assert noise.dtype == recon.dtype == torch.float32
    assert noise.min() >= 0 and noise.max() <= 1 and recon.min() >= 0 and recon.max() <= 1
    # Deterministic, and an image's result does not depend on its batch.
    single_noise, single_recon = invert_and_regenerate(images[1:2], prompts[1:2], tiny, config)
    torch.testing.assert_close(single_noise, noise[1:2], atol=1e-4, rtol=0)
    torch.testing.assert_close(single_recon, recon[1:2], atol=1e-4, rtol=0)
    # The prompt conditions the walk; float input in [0, 1] is the same as uint8.
    other_noise, _ = invert_and_regenerate(images[1:2], ["a dog"], tiny, config)
    assert not torch.allclose(other_noise, noise[1:2], atol=1e-4)
    float_noise, _ = invert_and_regenerate(images[1:2].float() / 255, prompts[1:2], tiny, config)
    torch.testing.assert_close(float_noise, single_noise)


def test_guidance_above_one_runs_classifier_free_guidance(tiny):
    images = torch.full((1, 3, 64, 64), 128, dtype=torch.uint8)
    plain = invert_and_regenerate(images, ["a cat"], tiny, InversionConfig(64, 2, 1.0))
    guided = invert_and_regenerate(images, ["a cat"], tiny, InversionConfig(64, 2, 3.0))
    assert guided[0].shape == plain[0].shape
    assert not torch.allclose(guided[0], plain[0], atol=1e-4)
    z = torch.zeros(1, 4, 8, 8)
    embeddings = tiny.encode_prompts(["a cat"])
    with pytest.raises(ValueError, match="unconditional"):
        ddim_invert(z, embeddings, tiny.unet, tiny.scheduler.config, steps=2, guidance=2.0)


def test_input_checks(tiny):
    config = InversionConfig(image_size=64, steps=1)
    with pytest.raises(ValueError, match="64x64"):
        invert_and_regenerate(torch.zeros(1, 3, 32, 32, dtype=torch.uint8), [""], tiny, config)
    with pytest.raises(ValueError, match="prompts"):
        invert_and_regenerate(torch.zeros(2, 3, 64, 64, dtype=torch.uint8), [""], tiny, config)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        invert_and_regenerate(torch.full((1, 3, 64, 64), 2.0), [""], tiny, config)
    with pytest.raises(ValueError, match="multiple"):
        invert_and_regenerate(
            torch.zeros(1, 3, 60, 60, dtype=torch.uint8), [""], tiny, InversionConfig(60, 1)
        )
    with pytest.raises(ValueError, match="steps"):
        InversionConfig(steps=0)
    with pytest.raises(ValueError, match="guidance"):
        InversionConfig(guidance=0.5)


def test_resize_uint8_keeps_flat_colours_and_sizes():
    flat = torch.full((2, 3, 64, 48), 200, dtype=torch.uint8)
    out = resize_uint8(flat, 32)
    assert out.shape == (2, 3, 32, 32) and out.dtype == torch.uint8
    assert (out == 200).all()
    assert resize_uint8(flat[..., :32, :32], 32).equal(flat[..., :32, :32])


@pytest.mark.parametrize(("family", "guidance"), [("sdxl", 1.0), ("sd3", 2.0), ("flux", 1.0)])
def test_every_family_inverts_and_regenerates(family, guidance, family_components):
    components = family_components(family)
    images = torch.randint(0, 256, (2, 3, 64, 64), generator=torch.Generator().manual_seed(0))
    config = InversionConfig(image_size=64, steps=2, guidance=guidance)
    noise, reconstruction = invert_and_regenerate(
        images.to(torch.uint8), ["a cat", "a dog"], components, config
    )
    for out in (noise, reconstruction):
        assert out.shape == (2, 3, 64, 64) and out.dtype == torch.float32
        assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1
    single, _ = invert_and_regenerate(images[:1].to(torch.uint8), ["a cat"], components, config)
    torch.testing.assert_close(single[0], noise[0], rtol=0, atol=1e-4)


@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_flow_inversion_round_trip_error_shrinks_with_the_steps(family, family_components):
    """Euler inversion is first order: running the ODE up and down again misses x_0 by an
    error that shrinks like 1/steps (the velocity field is smooth even in a random model)."""
    components = family_components(family)
    z0 = torch.randn(2, 16, 8, 8, generator=torch.Generator().manual_seed(0))
    prompts = ["a cat", ""]
    errors = []
    for steps in (2, 8, 32):
        zt = invert_latents(components, z0, prompts, steps=steps)
        assert zt.std() > z0.std() / 2  # noise-like, not collapsed
        back = regenerate_latents(components, zt, prompts, steps=steps)
        errors.append(float((back - z0).abs().mean()))
    assert errors[1] < errors[0] / 2 and errors[2] < errors[1] / 2
    assert errors[2] < 0.05 * float(z0.abs().mean())


def test_flux_refuses_classifier_free_guidance_in_one_line(family_components):
    components = family_components("flux")
    with pytest.raises(UnsupportedFamily) as info:
        invert_latents(components, torch.zeros(1, 16, 8, 8), ["a cat"], steps=1, guidance=3.0)
    message = str(info.value)
    assert "flux" in message and "inversion" in message and "\n" not in message
