import pytest
import torch
from diffusers import AutoencoderKL

from ldmdetect.generative.autoencoder import (
    autoencoder_scale_factor,
    load_autoencoder,
    resolve_autoencoder_source,
)
from ldmdetect.generative.loading import ComponentLoadError, ComponentSource
from ldmdetect.generative.tiny import build_tiny_autoencoder


def test_pipeline_directory_loads_its_vae_subfolder(tiny_pipeline_dir):
    from_pipeline = load_autoencoder(tiny_pipeline_dir, device="cpu")
    from_vae_dir = load_autoencoder(tiny_pipeline_dir / "vae", device="cpu")
    expected = build_tiny_autoencoder(seed=0).state_dict()
    for vae in (from_pipeline, from_vae_dir):
        assert isinstance(vae, AutoencoderKL)
        assert not vae.training
        assert all(not p.requires_grad for p in vae.parameters())
        assert vae.dtype == torch.float32 and vae.device == torch.device("cpu")
        state = vae.state_dict()
        assert all(torch.equal(state[k], expected[k]) for k in expected)


def test_dtype_can_be_overridden(tiny_pipeline_dir):
    vae = load_autoencoder(tiny_pipeline_dir, device="cpu", dtype=torch.bfloat16)
    assert vae.dtype == torch.bfloat16


def test_resolve_autoencoder_source(tiny_pipeline_dir, tmp_path):
    root = str(tiny_pipeline_dir)
    assert resolve_autoencoder_source(root).subfolder == "vae"
    assert resolve_autoencoder_source(tiny_pipeline_dir / "vae").subfolder is None
    explicit = resolve_autoencoder_source(root, subfolder="unet")
    assert explicit == ComponentSource(root, subfolder="unet")
    # A directory with only a vae/ folder still counts as a pipeline.
    (tmp_path / "vae").mkdir()
    assert resolve_autoencoder_source(tmp_path, revision="r1") == ComponentSource(
        str(tmp_path), subfolder="vae", revision="r1"
    )
    # Hub ids are taken literally: pipeline-ness cannot be known offline.
    assert resolve_autoencoder_source("owner/sd").subfolder is None
    with pytest.raises(ValueError, match="not both"):
        resolve_autoencoder_source(ComponentSource(root), subfolder="vae")


def test_component_source_is_accepted(tiny_pipeline_dir):
    vae = load_autoencoder(ComponentSource(str(tiny_pipeline_dir), subfolder="vae"), device="cpu")
    assert isinstance(vae, AutoencoderKL)


def test_hub_id_offline_raises_component_load_error(source_error):
    with pytest.raises(ComponentLoadError) as info:
        load_autoencoder("ldmdetect-tests/no-such-vae", subfolder="vae", device="cpu")
    source_error(info, "ldmdetect-tests/no-such-vae", local=False)


def test_missing_directory_raises_component_load_error(tmp_path, source_error):
    with pytest.raises(ComponentLoadError, match="no such directory") as info:
        load_autoencoder(tmp_path / "no-vae", device="cpu")
    source_error(info, tmp_path / "no-vae", local=True)


def test_scale_factor_matches_the_actual_downsampling():
    vae = build_tiny_autoencoder()
    assert autoencoder_scale_factor(vae) == 8
    latents = vae.encode(torch.zeros(1, 3, 32, 48)).latent_dist.mean
    assert latents.shape[-2:] == (32 // 8, 48 // 8)
