"""lare2's own pieces: crop/map alignment, the unguided ablation, every generator family."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from ldmdetect.cli import app
from ldmdetect.detector import Detector
from ldmdetect.engine.train import TrainConfig, train_detector
from ldmdetect.features.cache import FeatureCache
from ldmdetect.io.images import load_image as read_image
from ldmdetect.io.images import save_png
from ldmdetect.io.labeled import read_labeled
from ldmdetect.methods.lare2 import LareTransform


def _image(size: int) -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))


def test_crops_are_slices_of_the_resized_image_at_latent_grid_offsets():
    transform = LareTransform(lare_size=64, crop=40, factor=8, tries=5, try_seed=3)
    sample = transform(_image(64))
    assert sample["crops"].shape == (5, 3, 40, 40)
    for crop, (y, x) in zip(sample["crops"], sample["offsets"].tolist(), strict=True):
        assert y % 8 == 0 and x % 8 == 0 and 0 <= y <= 24 and 0 <= x <= 24
        assert torch.equal(crop, sample["image"][:, y : y + 40, x : x + 40])
    assert not sample["flips"].any()
    # one try = the centre, rounded down onto the latent grid
    assert LareTransform(64, 40, 8)(_image(64))["offsets"].tolist() == [[8, 8]]


def test_training_views_flip_the_crop_and_are_seeded():
    transform = LareTransform(lare_size=64, crop=40, factor=8, train=True)
    samples = [transform(_image(64), np.random.default_rng(s)) for s in range(20)]
    assert any(s["flips"][0] for s in samples) and not all(s["flips"][0] for s in samples)
    for s in samples:
        (y, x), flip = s["offsets"][0].tolist(), bool(s["flips"][0])
        view = s["image"][:, y : y + 40, x : x + 40]
        assert torch.equal(s["crops"][0], view.flip(-1) if flip else view)
    again = transform(_image(64), np.random.default_rng(7))
    assert torch.equal(again["crops"], samples[7]["crops"])


def test_unguided_ablation_needs_no_generator(aligned_dir, tmp_path):
    examples = read_labeled([aligned_dir / "real"], [aligned_dir / "reconstructed"])
    cfg = TrainConfig(
        method="lare2",
        backbone="timm:mobilenetv3_small_050",
        input_size=48,
        epochs=1,
        batch_size=8,
        val_fraction=0.34,
        device="cpu",
        feature={"guidance": "none", "lare": {"image_size": 64}},
    )
    detector = train_detector([], tmp_path / "d", cfg, examples=examples)
    assert detector.config.components == {} and detector.features is None
    assert 0.0 <= float(detector.decision_function(read_image(examples[0].path))[0]) <= 1.0
    cfg.feature = {"guidance": "x"}
    with pytest.raises(ValueError, match="guidance"):
        train_detector([], tmp_path / "e", cfg, examples=examples)


def test_evidence_map_covers_the_image(aligned_dir, tiny_pipeline_dir, tmp_path):
    examples = read_labeled([aligned_dir / "real"], [aligned_dir / "reconstructed"])
    cfg = TrainConfig(
        method="lare2",
        backbone="timm:mobilenetv3_small_050",
        input_size=48,
        epochs=0,
        val_fraction=0.34,
        device="cpu",
        feature={"lare": {"image_size": 64, "ensemble": 2}},
    )
    detector = train_detector(
        [], tmp_path / "d", cfg, examples=examples, pipeline=tiny_pipeline_dir
    )
    image = read_image(examples[0].path)
    evidence = detector.evidence_map(image)
    assert evidence.shape == (image.height, image.width)
    assert evidence.min() >= 0.0 and evidence.max() <= 1.0 and evidence.max() > evidence.min()
    # the map comes through the explain hook, over the whole resized image (no view box)
    (explained,) = detector.explain(image)
    assert detector.explains and explained.box is None
    assert explained.evidence.ndim == 2  # the LaRE map's grid, resized to the image above
    assert explained.evidence.max() == pytest.approx(1.0)


@pytest.mark.parametrize(("family", "channels"), [("sdxl", 4), ("sd3", 16), ("flux", 16)])
def test_trains_and_scans_on_every_family(family, channels, aligned_dir, tiny_family_dir, tmp_path):
    examples = read_labeled([aligned_dir / "real"], [aligned_dir / "reconstructed"])[::3]
    cfg = TrainConfig(
        method="lare2",
        backbone="timm:mobilenetv3_small_050",
        input_size=48,
        epochs=1,
        batch_size=8,
        val_fraction=0.34,
        device="cpu",
        feature={"lare": {"image_size": 64, "ensemble": 1}},
    )
    directory = tiny_family_dir(family)
    train_detector([], tmp_path / "d", cfg, examples=examples, pipeline=directory)
    detector = Detector.from_pretrained(tmp_path / "d", device="cpu")
    assert detector.config.feature["latent_channels"] == channels
    denoiser = "unet" if family == "sdxl" else "transformer"
    assert {"vae", denoiser, "text_encoder_2", "scheduler"} <= set(detector.config.components)
    image = read_image(examples[0].path)
    assert 0.0 <= float(detector.decision_function(image)[0]) <= 1.0
    assert detector.features.components.family == family


def test_command_line_extract_train_scan_on_sd3(
    aligned_dir, tiny_family_dir, calibration_dir, tmp_path
):
    runner = CliRunner()
    real, fake = tmp_path / "real", tmp_path / "fake"
    for folder, source in ((real, "real"), (fake, "reconstructed")):
        folder.mkdir()
        for f in sorted((aligned_dir / source).glob("*.png"))[:4]:
            save_png(read_image(f), folder / f.name)
    pipeline = str(tiny_family_dir("sd3"))
    feature = ["--feature", "lare.image_size=64", "--feature", "lare.ensemble=1"]
    common = ["--device", "cpu", "--workers", "0"]
    cache = tmp_path / "cache"
    result = runner.invoke(
        app,
        [
            *("extract", str(real), str(fake), "--method", "lare2", "--pipeline", pipeline),
            *("--output", str(cache), *common, *feature),
        ],
    )
    assert result.exit_code == 0, result.output
    assert len(FeatureCache(cache)) == 8
    det = tmp_path / "det"
    result = runner.invoke(
        app,
        [
            *("train", "--output", str(det), "--method", "lare2", "--real", str(real)),
            *(
                "--fake",
                str(fake),
                "--pipeline",
                pipeline,
                "--backbone",
                "timm:mobilenetv3_small_050",
            ),
            *("--input-size", "48", "--epochs", "1", *common, "--features", str(cache), *feature),
            *("--calibration-real", str(calibration_dir)),
        ],
    )
    assert result.exit_code == 0, result.output
    rows = tmp_path / "scan.csv"
    result = runner.invoke(
        app, ["scan", str(real), "--detector", str(det), "--output", str(rows), "--device", "cpu"]
    )
    assert result.exit_code == 0, result.output
    assert Path(rows).read_text().count("\n") == 5  # header + 4 images
