import pytest
import torch
from skimage import data

from ldmdetect.features.reconstruction import (
    decode_latents,
    encode_latents,
    reconstruct,
    scale_latents,
    unscale_latents,
)
from ldmdetect.generative.autoencoder import load_autoencoder
from ldmdetect.generative.tiny import build_tiny_autoencoder


@pytest.fixture(scope="module")
def vae(tiny_pipeline_dir):
    return load_autoencoder(tiny_pipeline_dir, device="cpu")


@pytest.fixture(scope="module")
def photos():
    """Two real 64x64 photo crops, (2, 3, 64, 64) float in [0, 1]."""
    astronaut = torch.from_numpy(data.astronaut()).permute(2, 0, 1).float() / 255
    return torch.stack([astronaut[:, 40:104, 200:264], astronaut[:, 300:364, 100:164]])


def _posterior_mean(vae, images):
    return vae.encode(images * 2 - 1).latent_dist.mean * vae.config.scaling_factor


def test_reconstruct_keeps_shape_dtype_device_and_range(vae, photos):
    out = reconstruct(vae, photos, generator=torch.Generator().manual_seed(0))
    assert out.shape == photos.shape
    assert out.dtype == torch.float32 and out.device == photos.device
    assert out.min() >= 0 and out.max() <= 1
    assert not torch.equal(out, photos)


def test_mean_latents_are_the_scaled_posterior_mean(vae, photos):
    latents = encode_latents(vae, photos, sample=False)
    assert latents.shape == (2, 4, 8, 8) and latents.dtype == torch.float32
    with torch.no_grad():
        torch.testing.assert_close(latents, _posterior_mean(vae, photos))
    torch.testing.assert_close(encode_latents(vae, photos, sample=False), latents, rtol=0, atol=0)


def test_sampling_is_random_unless_seeded(vae, photos):
    mean = encode_latents(vae, photos, sample=False)
    draw = encode_latents(vae, photos)
    assert not torch.allclose(draw, mean)
    assert not torch.allclose(draw, encode_latents(vae, photos))
    seeded = encode_latents(vae, photos, generator=torch.Generator().manual_seed(7))
    again = encode_latents(vae, photos, generator=torch.Generator().manual_seed(7))
    assert torch.equal(seeded, again)
    first = reconstruct(vae, photos, generator=torch.Generator().manual_seed(7))
    assert torch.equal(first, reconstruct(vae, photos, generator=torch.Generator().manual_seed(7)))


def test_decode_inverts_the_scaling_of_encode(vae, photos):
    latents = encode_latents(vae, photos, sample=False)
    manual = ((vae.decode(latents / vae.config.scaling_factor).sample + 1) / 2).clamp(0, 1)
    decoded = decode_latents(vae, latents)
    torch.testing.assert_close(decoded, manual.detach())
    torch.testing.assert_close(decoded, reconstruct(vae, photos, sample=False))


def test_shift_factor_is_applied_and_undone():
    vae = build_tiny_autoencoder()
    vae.register_to_config(shift_factor=0.5)
    images = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    latents = encode_latents(vae, images, sample=False)
    with torch.no_grad():
        mean = vae.encode(images * 2 - 1).latent_dist.mean
        expected = ((vae.decode(mean).sample + 1) / 2).clamp(0, 1)
    torch.testing.assert_close(latents, (mean - 0.5) * vae.config.scaling_factor)
    torch.testing.assert_close(decode_latents(vae, latents), expected)


@pytest.mark.parametrize(("shift", "expected_shift"), [(None, 0.0), (0.0, 0.0), (0.1159, 0.1159)])
def test_scale_latents_is_shift_then_scale_and_unscale_inverts_it(shift, expected_shift):
    vae = build_tiny_autoencoder()
    vae.register_to_config(scaling_factor=0.3611, shift_factor=shift)  # FLUX's pair, and SD's
    z = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    scaled = scale_latents(vae, z)
    torch.testing.assert_close(scaled, (z - expected_shift) * 0.3611, rtol=0, atol=0)
    torch.testing.assert_close(unscale_latents(vae, scaled), z)
    assert scale_latents(vae, z.bfloat16()).dtype == torch.bfloat16  # the caller's precision


def test_low_precision_vae_takes_and_returns_float32(tiny_pipeline_dir, photos):
    vae = load_autoencoder(tiny_pipeline_dir, device="cpu", dtype=torch.bfloat16)
    latents = encode_latents(vae, photos, sample=False)
    out = reconstruct(vae, photos, sample=False)
    assert latents.dtype == out.dtype == torch.float32
    assert out.shape == photos.shape


@pytest.mark.parametrize("size", [(60, 64), (64, 36)])
def test_sizes_not_a_multiple_of_the_scale_factor_raise(vae, size):
    with pytest.raises(ValueError, match="multiple of the autoencoder's downsampling factor 8"):
        reconstruct(vae, torch.rand(1, 3, *size))


def test_inputs_outside_the_contract_raise(vae, photos):
    with pytest.raises(TypeError, match="float images"):
        reconstruct(vae, (photos * 255).to(torch.uint8))
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        encode_latents(vae, photos * 2 - 1)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        encode_latents(vae, photos[:, :1])
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        encode_latents(vae, photos[0])


def test_non_finite_decodes_raise():
    vae = build_tiny_autoencoder()
    with torch.no_grad():
        vae.decoder.conv_out.bias.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="non-finite"):
        decode_latents(vae, torch.zeros(1, 4, 8, 8))
    # A caller that checks itself (inversion, which knows the UNet walked the latents) gets
    # the values back.
    assert decode_latents(vae, torch.zeros(1, 4, 8, 8), check_finite=False).isnan().all()


@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_a_flow_familys_16_channel_autoencoder_scales_as_its_pipeline(family, tiny_family_dir):
    from diffusers import FluxPipeline, StableDiffusion3Pipeline

    vae = load_autoencoder(tiny_family_dir(family), device="cpu")
    shift, scaling = vae.config.shift_factor, vae.config.scaling_factor
    assert vae.config.latent_channels == 16 and shift not in (None, 0)
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    latents = encode_latents(vae, images, sample=False)
    assert latents.shape == (2, 16, 8, 8)
    with torch.no_grad():
        mean = vae.encode(images * 2 - 1).latent_dist.mean
        torch.testing.assert_close(latents, (mean - shift) * scaling)
        # What the pipeline does to its sampled latents before decoding (output_type="pil").
        cls = StableDiffusion3Pipeline if family == "sd3" else FluxPipeline
        pipe = cls.from_pretrained(tiny_family_dir(family))
        processed = pipe.image_processor.postprocess(
            pipe.vae.decode(latents / scaling + shift).sample, output_type="pt"
        )
    torch.testing.assert_close(decode_latents(vae, latents), processed)
    assert reconstruct(vae, images, sample=False).shape == images.shape
