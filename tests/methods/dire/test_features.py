"""DIRE maps (``dire.features``) through a pixel-space UNet2DModel and through an LDM.

The premise, measured on the shipped trained mini LDM (64 px, its images from 20 sampling
steps at guidance 3 vs. 64 px crops of the two photos it never trained on, 8 + 8 images):
mean DIRE of real / generated images 0.090 / 0.049 at 3 DDIM steps, 0.082 / 0.036 at 5 and
0.069 / 0.026 at 10; every generated image below every real one at each setting. The
autoencoder alone (|x - D(E(x))|) gives 0.056 / 0.0087: in an LDM much of the gap is the
decoder's, and the DDIM walk adds the rest. The test asserts generated < 0.75 x real on
average at 5 steps (measured ratio 0.44) and that the highest generated map is below the
lowest real one.
"""

import numpy as np
import pytest
import torch

from ldmdetect.features.inversion import ddim_invert, ddim_sample
from ldmdetect.features.reconstruction import decode_latents, encode_latents
from ldmdetect.generative.components import pipeline_sources
from ldmdetect.generative.loading import ComponentLoadError
from ldmdetect.generative.tiny_pixel import TINY_PIXEL_IMAGE_SIZE, write_tiny_pixel_pipeline
from ldmdetect.methods.dire.features import (
    DireConfig,
    dire_maps,
    load_dire_components,
    quantize_dire,
    reconstruct,
    unet_space,
)

SIZE = TINY_PIXEL_IMAGE_SIZE
LATENT_NAMES = ("vae", "unet", "text_encoder", "tokenizer", "scheduler")


@pytest.fixture(scope="module")
def pixel_dir(tmp_path_factory):
    return write_tiny_pixel_pipeline(tmp_path_factory.mktemp("tiny-ddpm"), seed=0)


@pytest.fixture(scope="module")
def pixel(pixel_dir):
    return load_dire_components(pipeline_sources(pixel_dir, ["unet", "scheduler"]), device="cpu")


@pytest.fixture(scope="module")
def latent(tiny_pipeline_dir):
    return load_dire_components(pipeline_sources(tiny_pipeline_dir, LATENT_NAMES), device="cpu")


def _images(n: int, size: int = SIZE, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=generator)


def test_pixel_pipeline_loads_through_the_real_loader(pixel_dir, pixel, tiny_pipeline_dir):
    from diffusers import UNet2DModel

    assert isinstance(pixel.unet, UNet2DModel) and pixel.vae is None
    assert set(pixel.sources) == {"unet", "scheduler"}
    assert pixel.sources["unet"]["id"] == str(pixel_dir)
    assert unet_space(pipeline_sources(pixel_dir, ["unet"])["unet"]) == "pixel"
    assert unet_space(pipeline_sources(tiny_pipeline_dir, ["unet"])["unet"]) == "latent"
    with pytest.raises(ComponentLoadError, match="AutoencoderKL"):
        unet_space({"id": str(tiny_pipeline_dir), "subfolder": "vae", "revision": None})
    with pytest.raises(ValueError, match="scheduler"):
        load_dire_components(pipeline_sources(pixel_dir, ["unet"]), device="cpu")


def test_pixel_dire_is_the_shared_ddim_round_trip(pixel):
    images = _images(3)
    config = DireConfig(image_size=SIZE, steps=3)
    maps = dire_maps(images, pixel, config)
    assert maps.shape == (3, 3, SIZE, SIZE) and maps.dtype == torch.float32
    assert maps.min() >= 0 and maps.max() <= 1
    # The map is |x - x'|, x' the DDIM inversion then sampling of x in [-1, 1].
    x = images.float() / 127.5 - 1
    config_ = pixel.scheduler.config
    zt = ddim_invert(x, None, pixel.unet, config_, steps=3)
    again = ddim_sample(zt, None, pixel.unet, config_, steps=3)
    expected = (images.float() / 255 - ((again + 1) / 2).clamp(0, 1)).abs()
    torch.testing.assert_close(maps, expected, atol=1e-5, rtol=0)
    # Deterministic, batch-independent, and the steps matter.
    torch.testing.assert_close(dire_maps(images[1:2], pixel, config), maps[1:2], atol=1e-4, rtol=0)
    fewer = dire_maps(images, pixel, DireConfig(image_size=SIZE, steps=2))
    assert not torch.allclose(fewer, maps, atol=1e-3)


def test_learned_variance_unet_uses_its_noise_channels(tmp_path):
    """ADM's learn_sigma UNets output noise and variance; DDIM walks with the noise half."""
    path = write_tiny_pixel_pipeline(tmp_path, seed=1, learn_sigma=True)
    components = load_dire_components(pipeline_sources(path, ["unet", "scheduler"]), device="cpu")
    assert components.unet.config.out_channels == 6
    x = _images(2).float() / 127.5 - 1
    zt = ddim_invert(x, None, components.unet, components.scheduler.config, steps=2)
    assert zt.shape == x.shape

    class NoiseHalf(torch.nn.Module):
        def __init__(self, unet):
            super().__init__()
            self.unet = unet

        @property
        def dtype(self):
            return self.unet.dtype

        def forward(self, sample, timestep):
            out = self.unet(sample, timestep).sample
            return type("Out", (), {"sample": out[:, :3]})

    by_hand = ddim_invert(x, None, NoiseHalf(components.unet), components.scheduler.config, steps=2)
    torch.testing.assert_close(zt, by_hand)


def test_latent_dire_walks_the_posterior_mean_with_the_empty_prompt(latent):
    images = _images(2, size=64)
    config = DireConfig(image_size=64, steps=2)
    prompts: list[list[str]] = []
    original = latent.condition

    def recording(batch):
        prompts.append(list(batch))
        return original(batch)

    latent.condition = recording
    try:
        maps = dire_maps(images, latent, config)
    finally:
        del latent.condition
    assert prompts and all(batch == ["", ""] for batch in prompts)
    assert maps.shape == (2, 3, 64, 64) and maps.min() >= 0 and maps.max() <= 1
    z0 = encode_latents(latent.vae, images.float() / 255, sample=False)
    embeddings = latent.encode_prompts(["", ""])
    zt = ddim_invert(z0, embeddings, latent.unet, latent.scheduler.config, steps=2)
    z0_again = ddim_sample(zt, embeddings, latent.unet, latent.scheduler.config, steps=2)
    expected = (images.float() / 255 - decode_latents(latent.vae, z0_again)).abs()
    torch.testing.assert_close(maps, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(dire_maps(images[:1], latent, config), maps[:1], atol=1e-4, rtol=0)


def test_input_checks(pixel, latent):
    with pytest.raises(ValueError, match=f"{SIZE}x{SIZE}"):
        reconstruct(_images(1, size=16), pixel, DireConfig(image_size=SIZE, steps=1))
    with pytest.raises(ValueError, match="multiple"):
        reconstruct(_images(1, size=60), latent, DireConfig(image_size=60, steps=1))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        reconstruct(torch.full((1, 3, SIZE, SIZE), 2.0), pixel, DireConfig(SIZE, 1))
    with pytest.raises(ValueError, match="steps"):
        DireConfig(steps=0)
    with pytest.raises(ValueError, match="guidance"):
        ddim_invert(torch.zeros(1, 3, 8, 8), None, pixel.unet, pixel.scheduler.config, guidance=2)
    assert reconstruct(_images(0), pixel, DireConfig(SIZE, 1)).shape == (0, 3, SIZE, SIZE)


def test_quantize_dire_is_one_fixed_rounded_scale():
    maps = torch.tensor([0.0, 0.5 / 255, 1.49 / 255, 1.51 / 255, 0.5, 1.0, 1.2]).view(1, 1, 1, 7)
    out = quantize_dire(maps)
    assert out.dtype == torch.uint8
    assert out.flatten().tolist() == [0, 0, 1, 2, 128, 255, 255]


def test_generated_images_have_lower_dire_than_real_photos_on_the_mini_ldm():
    """DIRE's premise on the shipped trained LDM (numbers in the module docstring)."""
    from ldmdetect.generative.mini import CAPTIONS, mini_ldm_dir, mini_ldm_heldout_subjects
    from ldmdetect.generative.sampling import generate_images, load_pipeline
    from ldmdetect.io.crops import crop, crop_boxes
    from ldmdetect.io.images import load_image, pil_to_uint8
    from ldmdetect.io.samples import sample_photos

    n = 4
    prompts = list(CAPTIONS.values())[:n]
    pipe = load_pipeline(mini_ldm_dir(), device="cpu")
    fakes = generate_images(
        pipe, prompts, list(range(100, 100 + n)), size=64, steps=20, guidance_scale=3.0
    )
    fake = torch.stack([pil_to_uint8(image) for image in fakes])
    heldout = {s.split("_")[0] for s in mini_ldm_heldout_subjects()}
    reals = []
    for name, path in sample_photos():
        if name.split("_")[0] in heldout:
            image = load_image(path)
            image.thumbnail((128, 128))
            boxes = crop_boxes(
                image.width,
                image.height,
                64,
                policy="random",
                n=2,
                rng=np.random.default_rng(0),
            )
            reals += [pil_to_uint8(crop(image, box)) for box in boxes]
    real = torch.stack(reals)
    assert len(real) == n
    components = load_dire_components(pipeline_sources(mini_ldm_dir(), LATENT_NAMES), device="cpu")
    config = DireConfig(image_size=64, steps=5)
    real_dire = dire_maps(real, components, config).flatten(1).mean(1)
    fake_dire = dire_maps(fake, components, config).flatten(1).mean(1)
    assert fake_dire.mean() < 0.75 * real_dire.mean(), (fake_dire, real_dire)
    assert fake_dire.max() < real_dire.min(), (fake_dire, real_dire)
