import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler
from PIL import Image

from ldmdetect.generative.components import SDComponents, load_sd_components
from ldmdetect.methods.lare2.features import LareConfig, image_seed, lare_maps, resize_for_lare

SIZE = 64  # the tiny pipeline's native size; its VAE downsamples by 8
CONFIG = LareConfig(image_size=SIZE)


@pytest.fixture(scope="module")
def components(tiny_pipeline_dir) -> SDComponents:
    return load_sd_components(tiny_pipeline_dir, device="cpu")


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randint(0, 256, (3, 3, SIZE, SIZE), generator=torch.Generator().manual_seed(0)).to(
        torch.uint8
    )


PROMPTS = ["a photo of a cat", "", "a photo of a cat"]
SEEDS = [11, 12, 13]


def hand_lare(
    components: SDComponents, image: torch.Tensor, prompt: str, seed: int, config: LareConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """One image's LaRE map written out with the diffusers primitives, step by step.

    Returns the error against the scheduler's target and against the noise.
    """
    vae, unet, tokenizer = components.vae, components.unet, components.tokenizer
    source = components.sources["scheduler"]
    scheduler = DDPMScheduler.from_pretrained(source["id"], subfolder=source["subfolder"])
    generator = torch.Generator().manual_seed(seed)
    e = config.ensemble
    with torch.no_grad():
        x = image[None].float() / 255 * 2 - 1
        latent = vae.encode(x).latent_dist.sample(generator=generator)
        latents = (latent * vae.config.scaling_factor).repeat(e, 1, 1, 1)
        noise = torch.randn(latents.shape, generator=generator)
        t = torch.full((e,), config.timestep, dtype=torch.long)
        noisy = scheduler.add_noise(latents, noise, t)
        ids = tokenizer(
            [prompt], padding="max_length", max_length=77, truncation=True, return_tensors="pt"
        ).input_ids
        context = components.text_encoder(ids)[0].repeat(e, 1, 1)
        prediction = unet(noisy, t, encoder_hidden_states=context).sample
    if scheduler.config.prediction_type == "v_prediction":
        target = scheduler.get_velocity(latents, noise, t)
    else:
        target = noise
    return (prediction - target).square().mean(0), (prediction - noise).square().mean(0)


def test_config_defaults_are_the_official_ones_and_serialise():
    config = LareConfig()
    assert config.to_dict() == {
        "image_size": 256,
        "timestep": 200,
        "ensemble": 4,
        "sample_posterior": True,
        "seed": 0,
    }
    assert LareConfig(**json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(ValueError, match="ensemble"):
        LareConfig(ensemble=0)


def test_image_seed_is_stable_across_processes():
    ids = ["photos/cat.png", "photos/dog.png"]
    code = (
        "from ldmdetect.methods.lare2.features import image_seed; "
        f"print(hash('probe')); print([image_seed(i, 3) for i in {ids!r}])"
    )
    # A string hash seed other than this process's, so that hash()-based seeds would differ.
    hash_seed = "1" if os.environ.get("PYTHONHASHSEED") != "1" else "2"
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    child_hash, child_seeds = result.stdout.strip().splitlines()
    assert int(child_hash) != hash("probe")
    assert child_seeds == str([image_seed(i, 3) for i in ids])


def test_image_seed_separates_images_and_seeds():
    seeds = {image_seed(f"img{i}.png") for i in range(1000)}
    assert len(seeds) == 1000
    assert all(0 <= s < 2**63 for s in seeds)
    assert image_seed("a.png", 0) != image_seed("a.png", 1)


def test_resize_keeps_the_whole_image_bicubic():
    array = np.full((40, 120, 3), 128, dtype=np.uint8)
    array[:, :12] = (0, 255, 0)  # a stripe at the left edge, lost by any centre crop
    image = Image.fromarray(array)
    resized = resize_for_lare(image, 30)
    assert resized.dtype == torch.uint8 and resized.shape == (3, 30, 30)
    assert (resized[1, :, 0] > 200).all() and (resized[0, :, 0] < 50).all()
    assert (resized[:, :, -1] == 128).all()
    expected = np.array(image.resize((30, 30), Image.Resampling.BICUBIC))
    assert torch.equal(resized, torch.from_numpy(expected).permute(2, 0, 1))
    assert resize_for_lare(image.convert("L"), 16).shape == (3, 16, 16)


def test_maps_have_the_latent_shape_in_float32_on_cpu(components, images):
    maps = lare_maps(images, PROMPTS, SEEDS, components, CONFIG)
    assert maps.shape == (3, 4, SIZE // 8, SIZE // 8)
    assert maps.dtype == torch.float32 and maps.device.type == "cpu"
    assert (maps >= 0).all() and torch.isfinite(maps).all()


def test_maps_match_a_step_by_step_computation(components, images):
    maps = lare_maps(images[:1], PROMPTS[:1], SEEDS[:1], components, CONFIG)
    expected, _ = hand_lare(components, images[0], PROMPTS[0], SEEDS[0], CONFIG)
    torch.testing.assert_close(maps[0], expected, rtol=1e-4, atol=1e-5)


def test_an_images_map_does_not_depend_on_its_batch_and_reruns_are_identical(components, images):
    together = lare_maps(images, PROMPTS, SEEDS, components, CONFIG)
    alone = torch.cat(
        [
            lare_maps(images[i : i + 1], PROMPTS[i : i + 1], SEEDS[i : i + 1], components, CONFIG)
            for i in range(3)
        ]
    )
    torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-5)
    assert torch.equal(together, lare_maps(images, PROMPTS, SEEDS, components, CONFIG))
    # Same pixels and prompt, other seeds: other noise, so other maps.
    reseeded = lare_maps(images, PROMPTS, [21, 22, 23], components, CONFIG)
    assert not torch.allclose(together, reseeded, rtol=1e-3, atol=1e-4)


def test_uint8_and_unit_float_images_give_the_same_maps(components, images):
    from_uint8 = lare_maps(images, PROMPTS, SEEDS, components, CONFIG)
    from_float = lare_maps(images.float() / 255, PROMPTS, SEEDS, components, CONFIG)
    torch.testing.assert_close(from_uint8, from_float, rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        lare_maps(images.float(), PROMPTS, SEEDS, components, CONFIG)


def test_every_setting_changes_the_map(components, images):
    base = lare_maps(images[:1], ["a photo of a cat"], [5], components, CONFIG)
    variants = {
        "prompt": lare_maps(images[:1], ["a photo of a dog"], [5], components, CONFIG),
        "timestep": lare_maps(
            images[:1], ["a photo of a cat"], [5], components, LareConfig(SIZE, timestep=500)
        ),
        "posterior mean": lare_maps(
            images[:1],
            ["a photo of a cat"],
            [5],
            components,
            LareConfig(SIZE, sample_posterior=False),
        ),
    }
    for name, maps in variants.items():
        assert not torch.allclose(base, maps, rtol=1e-3, atol=1e-5), name


def test_more_ensemble_members_average_more_draws(components, images):
    one = lare_maps(images[:1], [""], [5], components, LareConfig(SIZE, ensemble=1))
    four = lare_maps(images[:1], [""], [5], components, LareConfig(SIZE, ensemble=4))
    # Member 0 draws the same noise in both; the mean over four draws is not that one draw.
    assert not torch.allclose(one, four, rtol=1e-3, atol=1e-5)
    hand, _ = hand_lare(components, images[0], "", 5, LareConfig(SIZE, ensemble=1))
    torch.testing.assert_close(one[0], hand, rtol=1e-4, atol=1e-5)


def test_v_prediction_compares_against_the_velocity(tiny_pipeline_dir, tmp_path, images):
    pipeline = tmp_path / "tiny-v"
    shutil.copytree(tiny_pipeline_dir, pipeline)
    config_path = pipeline / "scheduler" / "scheduler_config.json"
    scheduler_config = json.loads(config_path.read_text())
    scheduler_config["prediction_type"] = "v_prediction"
    config_path.write_text(json.dumps(scheduler_config))
    components = load_sd_components(pipeline, device="cpu")
    assert components.scheduler.config.prediction_type == "v_prediction"

    maps = lare_maps(images[:1], [""], [7], components, CONFIG)
    velocity_error, noise_error = hand_lare(components, images[0], "", 7, CONFIG)
    torch.testing.assert_close(maps[0], velocity_error, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(maps[0], noise_error, rtol=1e-2, atol=1e-3)


def test_bad_inputs_are_refused(components, images):
    with pytest.raises(ValueError, match="32x32"):
        lare_maps(images, PROMPTS, SEEDS, components, LareConfig(image_size=32))
    with pytest.raises(ValueError, match="3 images, 2 prompts"):
        lare_maps(images, PROMPTS[:2], SEEDS, components, CONFIG)
    with pytest.raises(ValueError, match="outside"):
        lare_maps(images, PROMPTS, SEEDS, components, LareConfig(SIZE, timestep=1000))
    no_unet = SDComponents(vae=components.vae, scheduler=components.scheduler)
    with pytest.raises(ValueError, match="unet"):
        lare_maps(images, PROMPTS, SEEDS, no_unet, CONFIG)
    assert lare_maps(images[:0], [], [], components, CONFIG).shape == (0, 4, 8, 8)


@pytest.mark.parametrize(("family", "channels"), [("sdxl", 4), ("sd3", 16), ("flux", 16)])
def test_every_family_gives_maps_of_its_latent_channels(family, channels, family_components):
    components = family_components(family)
    config = LareConfig(image_size=SIZE, ensemble=2)
    maps = lare_maps(images_of(2), PROMPTS[:2], SEEDS[:2], components, config)
    assert maps.shape == (2, channels, SIZE // 8, SIZE // 8)
    assert torch.isfinite(maps).all() and (maps > 0).all()
    again = lare_maps(images_of(2)[1:], PROMPTS[1:2], SEEDS[1:2], components, config)
    torch.testing.assert_close(again[0], maps[1], rtol=1e-4, atol=1e-4)
    other = lare_maps(images_of(2), PROMPTS[:2], SEEDS[:2], components, LareConfig(SIZE, 600, 2))
    assert not torch.allclose(other, maps)


def images_of(n: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (n, 3, SIZE, SIZE), generator=generator).to(torch.uint8)


@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_flow_lare_is_the_velocity_error_at_a_fixed_level(family, family_components):
    """Written out with diffusers' primitives: ``scale_noise`` of an unshifted scheduler (its
    timestep 200 is the level 0.2), the transformer called as the pipeline calls it."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline

    components = family_components(family)
    vae, transformer = components.vae, components.transformer
    config = LareConfig(image_size=SIZE, ensemble=3, timestep=200)
    image, prompt, seed = images_of(1), "a photo of a cat", 5
    maps = lare_maps(image, [prompt], [seed], components, config)

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        posterior = vae.encode(image.float() / 255 * 2 - 1).latent_dist
        z = posterior.sample(generator=generator)
        latents = ((z - vae.config.shift_factor) * vae.config.scaling_factor).repeat(3, 1, 1, 1)
        noise = torch.randn(latents.shape, generator=generator)
        scheduler = FlowMatchEulerDiscreteScheduler(shift=1.0)
        t = torch.full((3,), 200.0)
        noisy = scheduler.scale_noise(latents, t, noise)
        conditioning = components.condition([prompt] * 3)
        if family == "sd3":
            prediction = transformer(
                hidden_states=noisy,
                timestep=t,
                encoder_hidden_states=conditioning.hidden,
                pooled_projections=conditioning.pooled,
            ).sample
        else:
            packed = FluxPipeline._pack_latents(noisy, 3, 16, 8, 8)
            out = transformer(
                hidden_states=packed,
                timestep=t / 1000,
                guidance=torch.full((3,), 3.5),
                pooled_projections=conditioning.pooled,
                encoder_hidden_states=conditioning.hidden,
                txt_ids=torch.zeros(conditioning.hidden.shape[1], 3),
                img_ids=FluxPipeline._prepare_latent_image_ids(3, 4, 4, "cpu", torch.float32),
            ).sample
            prediction = FluxPipeline._unpack_latents(out, SIZE, SIZE, 8)
    expected = (prediction - (noise - latents)).square().mean(0)
    torch.testing.assert_close(maps[0], expected, rtol=1e-4, atol=1e-5)


def test_flux_needs_an_even_latent_side(family_components):
    odd = torch.zeros(1, 3, 72, 72, dtype=torch.uint8)  # a 9x9 latent: no 2x2 packing
    with pytest.raises(ValueError, match="multiple of 16"):
        lare_maps(odd, [""], [0], family_components("flux"), LareConfig(image_size=72))
