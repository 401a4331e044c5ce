"""The fakeinversion method: aligned views of the image and its cached maps, stacked inputs."""

from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import TEST_BACKBONE
from ldmdetect import methods
from ldmdetect.engine.train import TrainConfig, make_config
from ldmdetect.features.inversion import resize_uint8


def _config(tiny_pipeline_dir, **feature):
    method = methods.get("fakeinversion")
    cfg = TrainConfig(
        method="fakeinversion",
        backbone=TEST_BACKBONE,
        input_size=32,
        feature={"inversion": {"image_size": 64, "steps": 2}, "captioner": "fixed:a photo"}
        | feature,
    )
    return method, make_config(cfg, method, pipeline=tiny_pipeline_dir)


def _photo(width=80, height=70, seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def test_defaults_are_the_papers(tiny_pipeline_dir):
    method = methods.get("fakeinversion")
    assert method.default_cfg.backbone == "resnet50" and method.default_cfg.input_size == 224
    defaults = method.Settings().to_feature()
    assert defaults["inversion"] == {"image_size": 512, "steps": 50, "guidance": 1.0}
    assert defaults["captioner"] == "blip2"
    assert defaults["map_size"] == 224
    assert method.components == ("vae", "unet", "text_encoder", "tokenizer", "scheduler")


def test_transform_center_crops_upscales_and_resizes(tiny_pipeline_dir):
    method, config = _config(tiny_pipeline_dir, map_size=32)
    sample = method.transform(config)(_photo(80, 70))
    assert sample["image"].shape == (3, 64, 64) and sample["image"].dtype == torch.uint8
    assert sample["crops"].shape == (1, 3, 32, 32)
    # The single view is the whole inverted crop at the map size.
    assert sample["crops"][0].equal(resize_uint8(sample["image"][None], 32)[0])
    small = method.transform(config)(_photo(40, 30))  # upscaled before cropping
    assert small["image"].shape == (3, 64, 64)


def test_views_are_aligned_crops_of_a_larger_map(tiny_pipeline_dir):
    method, config = _config(tiny_pipeline_dir, map_size=48)
    photo = _photo()
    whole = resize_uint8(method.transform(config)(photo)["image"][None], 48)[0]
    sample = method.transform(config, tries=3)(photo)
    assert sample["crops"].shape == (3, 3, 32, 32)
    for view, (y, x) in zip(sample["crops"], sample["offsets"].tolist(), strict=True):
        assert view.equal(whole[:, y : y + 32, x : x + 32])
    train = method.transform(config, train=True)
    flipped = [train(photo, np.random.default_rng(s)) for s in range(8)]
    assert any(s["flips"].any() for s in flipped) and not all(s["flips"].all() for s in flipped)
    for s in flipped:
        (y, x), flip = s["offsets"][0].tolist(), bool(s["flips"][0])
        view = whole[:, y : y + 32, x : x + 32]
        assert s["crops"][0].equal(view.flip(-1) if flip else view)


@pytest.mark.parametrize("residual", [False, True])
def test_logits_stack_image_noise_and_reconstruction_at_the_same_view(tiny_pipeline_dir, residual):
    method, config = _config(tiny_pipeline_dir, map_size=48, residual=residual)
    model = method.build_model(config).eval()
    prepare = method.prepare(config, tries=2)
    samples = [prepare(_photo(seed=s)) for s in range(2)]
    batch = method.collate(samples)
    generator = torch.Generator().manual_seed(0)
    batch["noise"] = torch.randint(0, 256, (2, 3, 48, 48), dtype=torch.uint8, generator=generator)
    batch["reconstruction"] = torch.randint(
        0, 256, (2, 3, 48, 48), dtype=torch.uint8, generator=generator
    )
    seen = []
    model.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    with torch.no_grad():
        logits = method.logits(model, batch, config)
    assert logits.shape == (2, 2)
    inputs = seen[0]
    assert inputs.shape == (4, 12 if residual else 9, 32, 32)
    mean = torch.tensor(config.mean).view(3, 1, 1)
    std = torch.tensor(config.std).view(3, 1, 1)
    (y, x) = batch["offsets"][1, 0].tolist()  # image 1, view 0 -> row 2
    row = inputs[2]
    noise = batch["noise"][1, :, y : y + 32, x : x + 32].float() / 255
    recon = batch["reconstruction"][1, :, y : y + 32, x : x + 32].float() / 255
    image = batch["crops"][1, 0].float() / 255
    torch.testing.assert_close(row[0:3], (image - mean) / std)
    torch.testing.assert_close(row[3:6], (noise - mean) / std)
    torch.testing.assert_close(row[6:9], (recon - mean) / std)
    if residual:
        torch.testing.assert_close(row[9:12], (image - recon).abs() / std)
    assert torch.sigmoid(logits).le(1).all()


def test_feature_step_records_its_settings_and_needs_components(tiny_pipeline_dir):
    method, config = _config(tiny_pipeline_dir, map_size=32)
    step = method.build_features(config, device="cpu")
    settings = step.settings()
    assert settings["captioner"] == "fixed:a photo"
    assert settings["inversion"] == {"image_size": 64, "steps": 2, "guidance": 1.0}
    assert settings["map_size"] == 32 and set(settings["components"]) == set(method.components)
    with pytest.raises(ValueError, match="--pipeline"):
        method.build_features(replace(config, components={}), device="cpu")


@pytest.mark.parametrize("family", ["sdxl", "sd3", "flux"])
def test_every_family_gives_noise_and_reconstruction_maps(family, tiny_family_dir):
    method, config = _config(tiny_family_dir(family), map_size=32)
    step = method.build_features(config, device="cpu")
    assert step.components.family == family
    prepare = method.prepare(config)
    batch = method.collate([prepare(_photo(seed=s)) for s in range(2)])
    out = step(batch)
    assert out["noise"].shape == out["reconstruction"].shape == (2, 3, 32, 32)
    assert out["noise"].dtype == torch.uint8


def test_flux_with_guidance_and_a_pixel_model_are_refused_in_one_line(tiny_family_dir, tmp_path):
    from ldmdetect.generative.families import UnsupportedFamily
    from ldmdetect.generative.tiny_pixel import write_tiny_pixel_pipeline

    method, config = _config(
        tiny_family_dir("flux"), inversion={"image_size": 64, "steps": 2, "guidance": 3.0}
    )
    with pytest.raises(UnsupportedFamily) as info:
        method.build_features(config, device="cpu")
    message = str(info.value)
    assert "'fakeinversion'" in message and "flux family" in message and "\n" not in message
    method, config = _config(write_tiny_pixel_pipeline(tmp_path / "ddpm"))
    with pytest.raises(UnsupportedFamily, match="'fakeinversion' cannot run on this generator"):
        method.build_features(config, device="cpu")
