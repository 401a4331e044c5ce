"""Session fixtures shared by the engine, detector and CLI tests: real photos -> aligned
dataset (through the tiny SD autoencoder) -> a trained tiny detector. Built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest
from ldmdetect.io.images import load_image, save_png
from ldmdetect.io.samples import sample_photos

from ldmdetect.engine.reconstruct import ReconstructConfig, build_aligned_dataset
from ldmdetect.engine.train import TrainConfig, train_detector

TEST_BACKBONE = "mobilenetv3_small_050"  # small timm CNN: fast on 2 CPU cores


@pytest.fixture(scope="session")
def photo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six real photos from the packages' sample data, downsized for speed."""
    out = tmp_path_factory.mktemp("photos")
    for name, path in sample_photos()[:6]:
        image = load_image(path)
        image.thumbnail((160, 160))
        save_png(image, out / f"{name}.png")
    return out


@pytest.fixture(scope="session")
def aligned_dir(tmp_path_factory, tiny_pipeline_dir: Path, photo_dir: Path) -> Path:
    out = tmp_path_factory.mktemp("aligned")
    build_aligned_dataset(
        [photo_dir],
        out,
        autoencoder=tiny_pipeline_dir,
        config=ReconstructConfig(crop_size=64, crops_per_image=4, seed=0),
        device="cpu",
    )
    return out


@pytest.fixture(scope="session")
def detector_dir(tmp_path_factory, aligned_dir: Path) -> Path:
    out = tmp_path_factory.mktemp("detector")
    train_detector(
        [aligned_dir],
        out,
        TrainConfig(
            backbone=TEST_BACKBONE,
            epochs=2,
            batch_size=8,
            lr=1e-3,
            val_fraction=0.34,
            device="cpu",
            seed=0,
        ),
    )
    return out
