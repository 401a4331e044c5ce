"""Training-time augmentation drawn from a random stream, so that it can be replayed.

A method's training transform draws every random choice (resize factor, crop box, flip, blur,
JPEG quality) from the ``rng`` it is given. Two images transformed with two generators seeded
alike get the very same augmentation: that is how an aligned pair (a real crop and its
reconstruction) is augmented identically, leaving only the autoencoder to tell them apart.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from ldmdetect.io.crops import Box, crop, ensure_min_size, random_boxes
from ldmdetect.io.perturb import blur, jpeg, resize


@dataclass
class AugmentConfig:
    """Probabilities and ranges of each augmentation; every draw comes from the caller's rng."""

    flip: float = 0.5
    jpeg_prob: float = 0.3
    jpeg_quality: tuple[int, int] = (65, 100)
    resize_prob: float = 0.2
    resize_scale: tuple[float, float] = (0.5, 1.5)
    blur_prob: float = 0.1
    blur_sigma: tuple[float, float] = (0.1, 2.0)


def augmented_crop(
    image: Image.Image, size: int, aug: AugmentConfig, rng: np.random.Generator
) -> Image.Image:
    """Random resize -> random ``size`` crop -> flip -> blur -> JPEG, each drawn from ``rng``.

    Two images of one size given generators seeded alike make the same draws, so they get
    the same augmentation.
    """
    if rng.random() < aug.resize_prob:
        image = resize(image, rng.uniform(*aug.resize_scale))
    image = ensure_min_size(image, size)
    box: Box = random_boxes(image.width, image.height, size, 1, rng)[0]
    image = crop(image, box)
    if rng.random() < aug.flip:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if rng.random() < aug.blur_prob:
        image = blur(image, rng.uniform(*aug.blur_sigma))
    if rng.random() < aug.jpeg_prob:
        image = jpeg(image, int(rng.integers(aug.jpeg_quality[0], aug.jpeg_quality[1] + 1)))
    return image
