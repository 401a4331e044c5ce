import dataclasses

import numpy as np
import pytest
from PIL import Image

from ldmdetect.io.augment import AugmentConfig, augmented_crop


def test_spec_round_trips_and_keeps_unnamed_defaults():
    assert AugmentConfig.from_spec(AugmentConfig().to_spec()) == AugmentConfig()
    custom = AugmentConfig.from_spec("flip=0, jpeg_quality=70-90, blur_sigma=0.5")
    assert custom == dataclasses.replace(
        AugmentConfig(), flip=0.0, jpeg_quality=(70, 90), blur_sigma=(0.5, 0.5)
    )
    assert AugmentConfig.from_spec(custom.to_spec()) == custom
    assert AugmentConfig.from_spec("") == AugmentConfig()


def test_none_turns_every_augmentation_off():
    off = AugmentConfig.from_spec("none")
    assert off.flip == off.jpeg_prob == off.resize_prob == off.blur_prob == 0.0
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 40, 3), np.uint8))
    out = augmented_crop(image, 40, off, np.random.default_rng(1))
    assert np.array_equal(np.asarray(out), np.asarray(image))


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("flp=1", "KEY one of flip"),
        ("flip", "expected KEY=VALUE"),
        ("flip=2", r"\[0, 1\]"),
        ("flip=yes", "could not convert"),
        ("jpeg_quality=9x", "LOW-HIGH of ints"),
        ("jpeg_quality=90-70", "LOW <= HIGH"),
    ],
)
def test_bad_specs_name_the_key(spec, message):
    with pytest.raises(ValueError, match=message):
        AugmentConfig.from_spec(spec)


def test_jpeg_grid_shift_replays_alike_and_moves_the_grid():
    # Pairs are augmented alike, grid offset included; with the shift on, most draws put the
    # 8x8 grid away from the crop's corner (1 in 64 lands on it by chance).
    x, y = np.meshgrid(np.linspace(0, 255, 64), np.linspace(0, 255, 64))
    image = Image.fromarray(np.stack([x, y, (x + y) / 2], -1).astype(np.uint8))
    shifted = AugmentConfig(
        flip=0, resize_prob=0, blur_prob=0, jpeg_prob=1, jpeg_quality=(5, 5), jpeg_grid_shift=1
    )
    aligned = dataclasses.replace(shifted, jpeg_grid_shift=0.0)

    def phases(config: AugmentConfig, seed: int) -> tuple[int, int]:
        out = np.asarray(augmented_crop(image, 64, config, np.random.default_rng(seed)), float)
        jumps_x = np.abs(np.diff(out, axis=1)).mean(axis=(0, 2))
        jumps_y = np.abs(np.diff(out, axis=0)).mean(axis=(1, 2))
        return (
            (int(np.argmax([jumps_x[c::8].mean() for c in range(8)])) + 1) % 8,
            (int(np.argmax([jumps_y[r::8].mean() for r in range(8)])) + 1) % 8,
        )

    first = augmented_crop(image, 64, shifted, np.random.default_rng(3))
    again = augmented_crop(image, 64, shifted, np.random.default_rng(3))
    assert np.array_equal(np.asarray(first), np.asarray(again))
    assert {phases(aligned, seed) for seed in range(6)} == {(0, 0)}
    assert len({phases(shifted, seed) for seed in range(6)}) > 2
