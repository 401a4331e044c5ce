"""AEROBLADE's autoencoder sources: a missing folder and an unreachable hub id fail in one line
naming the source (the reconstructions themselves are tested in tests/methods/test_aeroblade.py)."""

import pytest
import torch

from ldmdetect.generative.loading import ComponentLoadError, ComponentSource
from ldmdetect.methods.aeroblade.features import autoencoder_source, load_autoencoders


def test_missing_directory_is_a_clear_error(tmp_path, source_error):
    missing = tmp_path / "no-sd"
    with pytest.raises(ComponentLoadError, match="no such directory") as info:
        autoencoder_source(str(missing))
    source_error(info, missing, local=True)
    with pytest.raises(ComponentLoadError, match="autoencoder config") as info:
        load_autoencoders([ComponentSource(str(missing), subfolder="vae").to_dict()], device="cpu")
    source_error(info, missing, local=True)


def test_folder_that_is_no_autoencoder_is_a_clear_error(tmp_path, source_error):
    with pytest.raises(ComponentLoadError, match="neither an autoencoder folder") as info:
        autoencoder_source(str(tmp_path))
    source_error(info, tmp_path, local=True)


def test_unreachable_hub_id_is_a_clear_error(source_error):
    hub_id = "nobody/no-such-kandinsky"
    source = autoencoder_source(hub_id)
    assert source == ComponentSource(hub_id, subfolder="movq")
    with pytest.raises(ComponentLoadError, match="autoencoder config") as info:
        load_autoencoders([source.to_dict()], device="cpu")
    source_error(info, hub_id, local=False)


def test_a_pipeline_of_any_family_gives_its_16_channel_vae(tiny_family_dir):
    from ldmdetect.methods.aeroblade.features import reconstructions

    directory = tiny_family_dir("sd3")
    source = autoencoder_source(str(directory))
    assert source == ComponentSource(str(directory), subfolder="vae")
    (vae,) = load_autoencoders([source.to_dict()], device="cpu")
    assert vae.config.latent_channels == 16
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    out = reconstructions([vae], images, ["a", "b"])
    assert out.shape == (2, 1, 3, 32, 32) and out.dtype == torch.uint8
