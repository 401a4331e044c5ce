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
