import json

import numpy as np
import pytest
import torch
from PIL import Image

from ldmdetect.config import DetectorConfig
from ldmdetect.engine.reconstruct import read_aligned_dataset
from ldmdetect.engine.train import (
    AugmentConfig,
    TrainConfig,
    augment_pair,
    split_by_source,
    train_detector,
)


def test_split_keeps_every_source_on_one_side(aligned_dir):
    pairs = read_aligned_dataset(aligned_dir)
    train, val = split_by_source(pairs, 0.34, seed=0)
    assert train and val and len(train) + len(val) == len(pairs)
    assert not {p.source for p in train} & {p.source for p in val}
    assert split_by_source(pairs, 0.34, seed=0) == (train, val)


def test_pair_augmentation_is_identical_for_both_members():
    rng_image = np.random.default_rng(0).integers(0, 256, (80, 90, 3), dtype=np.uint8)
    image = Image.fromarray(rng_image)
    always = AugmentConfig(flip=1, jpeg_prob=1, resize_prob=1, blur_prob=1)
    for seed in range(5):
        out = augment_pair(image, image.copy(), 48, always, np.random.default_rng(seed))
        assert out.shape == (2, 3, 48, 48) and out.dtype == torch.uint8
        assert torch.equal(out[0], out[1])


def test_pair_augmentation_changes_pixels_and_is_seeded():
    image = Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64, 3), np.uint8))
    always = AugmentConfig(flip=1, jpeg_prob=1, resize_prob=0, blur_prob=0)
    a = augment_pair(image, image, 64, always, np.random.default_rng(3))
    b = augment_pair(image, image, 64, always, np.random.default_rng(3))
    assert torch.equal(a, b)
    plain = augment_pair(image, image, 64, None, np.random.default_rng(3))
    assert not torch.equal(a, plain)


def test_trained_detector_directory(detector_dir):
    config = DetectorConfig.load(detector_dir)
    assert (detector_dir / "model.safetensors").is_file()
    assert config.method == "ae" and config.input_size == 64
    assert set(config.thresholds) == {"0.5", "fpr_0.001", "fpr_0.01", "fpr_0.05"}
    assert config.generator["subfolder"] == "vae"
    assert config.training["pairs"]["val"] > 0
    history = config.training["history"]
    assert len(history) == 10 and all(np.isfinite(h["train_loss"]) for h in history)
    json.dumps(config.to_dict())


def test_detector_learns_the_autoencoder_trace(detector_dir):
    # The tiny random autoencoder leaves a blatant trace; held-out sources must separate.
    history = DetectorConfig.load(detector_dir).training["history"]
    assert history[-1]["val_auc"] > 0.9


def test_training_is_deterministic_with_a_seed(tmp_path, aligned_dir):
    cfg = TrainConfig(
        backbone="mobilenetv3_small_050",
        epochs=1,
        batch_size=8,
        val_fraction=0.34,
        device="cpu",
        seed=3,
    )
    a = train_detector([aligned_dir], tmp_path / "a", cfg)
    b = train_detector([aligned_dir], tmp_path / "b", cfg)
    for (name, p), q in zip(
        a.model.state_dict().items(), b.model.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(p, q, msg=name)


def test_empty_dataset_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="manifest"):
        train_detector([tmp_path], tmp_path / "out")
