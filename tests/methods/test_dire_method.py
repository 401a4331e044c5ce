"""The dire method: views into the cached map, the generator's space resolved and recorded,
lossless maps, and the command line from extract to scan on a pixel-space pipeline."""

import copy
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from conftest import TEST_BACKBONE
from ldmdetect import methods
from ldmdetect.cli import app
from ldmdetect.detector import Detector
from ldmdetect.engine.extract import extract_features
from ldmdetect.engine.train import TrainConfig, make_config, train_detector
from ldmdetect.features.cache import FeatureCache
from ldmdetect.generative.components import pipeline_sources
from ldmdetect.generative.tiny_pixel import write_tiny_pixel_pipeline
from ldmdetect.io.crops import center_box, crop, fit_short_side
from ldmdetect.io.images import load_image, pil_to_uint8, save_png
from ldmdetect.io.labeled import read_labeled
from ldmdetect.methods.defaults import MethodDefaults
from ldmdetect.methods.dire.features import DireConfig, dire_maps, quantize_dire

runner = CliRunner()
TINY_FEATURE = {"dire": {"image_size": 32, "steps": 2}}


@pytest.fixture(scope="module")
def pixel_dir(tmp_path_factory):
    return write_tiny_pixel_pipeline(tmp_path_factory.mktemp("tiny-ddpm"), seed=0)


def _config(pipeline, **overrides):
    method = methods.get("dire")
    cfg = TrainConfig(
        method="dire",
        backbone=TEST_BACKBONE,
        input_size=24,
        feature=TINY_FEATURE | overrides,
    )
    return method, make_config(cfg, method, pipeline=pipeline)


def _photo(width=48, height=40, seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def test_defaults_are_the_papers():
    method = methods.get("dire")
    assert method.default_cfg == MethodDefaults(
        backbone="resnet50",
        input_size=224,
        optimizer="adam",
        lr=1e-4,
        weight_decay=0.0,
        grad_clip=0.0,
    )
    feature = method.Settings().to_feature()
    assert feature["dire"] == {"image_size": 256, "steps": 20, "fit_short_side": True}
    assert method.required_components({"space": "pixel"}) == ("unet", "scheduler")
    assert set(method.required_components({})) == set(method.components)
    with pytest.raises(ValueError, match="space"):
        method.required_components({"space": "voxel"})


def test_the_square_is_cut_from_the_image_resized_as_the_official_code_does(pixel_dir):
    photo = _photo(96, 64)  # short side 2 x 32: one box halving to 48x32, then the center
    method, config = _config(pixel_dir)
    expected = pil_to_uint8(crop(fit_short_side(photo, 32), center_box(48, 32, 32)))
    assert method.transform(config)(photo)["image"].equal(expected)
    # fit_short_side=False: the center square at native resolution.
    native_square = {"image_size": 32, "steps": 2, "fit_short_side": False}
    method, config = _config(pixel_dir, dire=native_square)
    native = pil_to_uint8(crop(photo, center_box(96, 64, 32)))
    assert method.transform(config)(photo)["image"].equal(native)
    # A config saved before the field existed keeps the native-resolution square it trained on.
    config = replace(config, feature=config.feature | {"dire": {"image_size": 32, "steps": 2}})
    assert method.transform(config)(photo)["image"].equal(native)


def test_views_are_offsets_into_the_reconstructed_square(pixel_dir):
    method, config = _config(pixel_dir)
    sample = method.transform(config, tries=3)(_photo())
    assert sample["image"].shape == (3, 32, 32) and sample["image"].dtype == torch.uint8
    assert sample["crops"].shape == (3, 3, 24, 24)
    for view, (y, x) in zip(sample["crops"], sample["offsets"].tolist(), strict=True):
        assert view.equal(sample["image"][:, y : y + 24, x : x + 24])
    assert method.transform(config)(_photo(20, 16))["image"].shape == (3, 32, 32)  # upscaled
    train = method.transform(config, train=True)
    samples = [train(_photo(), np.random.default_rng(s)) for s in range(8)]
    assert any(s["flips"].any() for s in samples) and not all(s["flips"].all() for s in samples)


def test_logits_classify_the_dire_map_at_each_view(pixel_dir):
    method, config = _config(pixel_dir)
    model = method.build_model(config).eval()
    prepare = method.prepare(config, train=True)
    samples = [prepare(_photo(seed=s), rng=np.random.default_rng(s)) for s in range(6)]
    batch = method.collate(samples)
    assert batch["flips"].any()
    generator = torch.Generator().manual_seed(0)
    batch["dire"] = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8, generator=generator)
    seen = []
    model.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    with torch.no_grad():
        logits = method.logits(model, batch, config)
    assert logits.shape == (6, 1)
    mean = torch.tensor(config.mean).view(3, 1, 1)
    std = torch.tensor(config.std).view(3, 1, 1)
    for i in range(6):
        (y, x), flip = batch["offsets"][i, 0].tolist(), bool(batch["flips"][i, 0])
        view = batch["dire"][i, :, y : y + 24, x : x + 24]
        view = view.flip(-1) if flip else view
        torch.testing.assert_close(seen[0][i], (view.float() / 255 - mean) / std)


def test_space_is_resolved_from_the_unet_and_recorded(pixel_dir, tiny_pipeline_dir):
    # Resolved once, when the config is made; building the features writes nothing into it.
    method, config = _config(pixel_dir)
    assert config.feature["space"] == "pixel"
    assert set(config.components) == {"unet", "scheduler"}
    before = copy.deepcopy(config)
    step = method.build_features(config, device="cpu")
    assert config == before
    assert step.settings()["space"] == "pixel" and set(step.sources) == {"unet", "scheduler"}
    # A --pipeline override names every component; the pixel space takes what it needs.
    override = pipeline_sources(pixel_dir, method.components)
    assert set(method.build_features(config, device="cpu", components=override).sources) == {
        "unet",
        "scheduler",
    }
    method, config = _config(tiny_pipeline_dir)
    assert config.feature["space"] == "latent" and set(config.components) == set(method.components)
    # A config with the space left to "auto" (made by hand) is resolved without being written.
    config = replace(config, feature=config.feature | {"space": "auto"})
    assert method.build_features(config, device="cpu").space == "latent"
    assert config.feature["space"] == "auto"
    with pytest.raises(ValueError, match="--pipeline"):
        method.build_features(replace(config, components={}), device="cpu")


def test_cached_maps_are_the_exact_uint8_maps(pixel_dir, tmp_path):
    method, config = _config(pixel_dir)
    step = method.build_features(config, device="cpu")
    prepare = method.prepare(config)
    batch = method.collate([prepare(_photo(seed=s)) for s in range(3)])
    with FeatureCache(tmp_path / "cache", settings=step.settings()) as cache:
        computed = step.add_to(batch, cache)["dire"]
    expected = quantize_dire(dire_maps(batch["image"], step.components, DireConfig(32, 2)))
    assert computed.dtype == torch.uint8 and computed.equal(expected)
    assert computed.float().std() > 0  # a real map, not a constant
    # Reopened from disk by a step that never loads the generator: bit-exact.
    fresh = method.build_features(config, device="cpu")
    reread = fresh.add_to(batch, FeatureCache(tmp_path / "cache", settings=fresh.settings()))
    assert fresh._components is None
    assert reread["dire"].dtype == torch.uint8 and reread["dire"].equal(computed)


def test_pixel_pipeline_end_to_end(pixel_dir, aligned_dir, tmp_path):
    out = tmp_path / "detector"
    cache = tmp_path / "features"
    summary = extract_features(
        "dire", [aligned_dir / "real"], cache, pipeline=pixel_dir, feature=TINY_FEATURE
    )
    assert summary.computed == summary.images > 0 and not summary.errors
    assert json.loads((cache / "cache.json").read_text())["settings"]["space"] == "pixel"
    cfg = TrainConfig(
        method="dire",
        backbone=TEST_BACKBONE,
        input_size=24,
        epochs=1,
        batch_size=8,
        val_fraction=0.34,
        device="cpu",
        feature=TINY_FEATURE,
    )
    examples = read_labeled([aligned_dir / "real"], [aligned_dir / "reconstructed"])
    trained = train_detector([], out, cfg, examples=examples, pipeline=pixel_dir)
    saved = json.loads((out / "config.json").read_text())
    assert saved["feature"]["space"] == "pixel"
    assert set(saved["components"]) == {"unet", "scheduler"}
    detector = Detector.from_pretrained(out, device="cpu")
    image = load_image(sorted((aligned_dir / "real").glob("*.png"))[0])
    score = detector.decision_function(image)
    assert 0 <= score[0] <= 1
    np.testing.assert_allclose(trained.decision_function(image), score, rtol=1e-5, atol=1e-6)


def test_command_line_extract_train_scan(pixel_dir, aligned_dir, calibration_dir, tmp_path):
    real = tmp_path / "real"
    fake = tmp_path / "fake"
    for folder, source in ((real, "real"), (fake, "reconstructed")):
        folder.mkdir()
        for f in sorted((aligned_dir / source).glob("*.png"))[:6]:
            save_png(load_image(f), folder / f.name)
    feature = ["--feature", "dire.image_size=32", "--feature", "dire.steps=2"]
    cache = tmp_path / "cache"
    result = runner.invoke(
        app,
        [
            *("extract", str(real), str(fake), "--method", "dire", "--pipeline", str(pixel_dir)),
            *("--output", str(cache), "--device", "cpu", "--workers", "0", *feature),
        ],
    )
    assert result.exit_code == 0, result.output
    assert len(FeatureCache(cache)) == 12
    det = tmp_path / "det"
    result = runner.invoke(
        app,
        [
            *("train", "--output", str(det), "--method", "dire", "--real", str(real)),
            *("--fake", str(fake), "--pipeline", str(pixel_dir), "--backbone", TEST_BACKBONE),
            *("--input-size", "24", "--epochs", "1", "--device", "cpu", "--workers", "0"),
            *("--features", str(cache), *feature),
            *("--calibration-real", str(calibration_dir)),
        ],
    )
    assert result.exit_code == 0, result.output
    rows = tmp_path / "scan.csv"
    result = runner.invoke(
        app, ["scan", str(real), "--detector", str(det), "--output", str(rows), "--device", "cpu"]
    )
    assert result.exit_code == 0, result.output
    assert Path(rows).read_text().count("\n") == 7  # header + 6 images


@pytest.mark.parametrize("family", ["sdxl", "sd3", "flux"])
def test_latent_dire_through_every_family(family, tiny_family_dir):
    method, config = _config(tiny_family_dir(family), dire={"image_size": 64, "steps": 2})
    step = method.build_features(config, device="cpu")
    assert config.feature["space"] == "latent"
    denoiser = "unet" if family == "sdxl" else "transformer"
    assert {"vae", denoiser, "text_encoder_2", "scheduler"} <= set(config.components)
    batch = method.collate([method.prepare(config)(_photo(80, 72, seed=s)) for s in range(2)])
    maps = step(batch)["dire"]
    assert maps.shape == (2, 3, 64, 64) and maps.dtype == torch.uint8 and maps.any()
