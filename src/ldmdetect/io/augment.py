"""Training-time augmentation drawn from a random stream, so that it can be replayed.

A method's training transform draws every random choice (resize factor, crop box, flip, blur,
JPEG quality) from the ``rng`` it is given. Two images transformed with two generators seeded
alike get the very same augmentation: that is how an aligned pair (a real crop and its
reconstruction) is augmented identically, leaving only the autoencoder to tell them apart.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import numpy as np
from PIL import Image

from ldmdetect.io.crops import Box, crop, ensure_min_size, random_boxes
from ldmdetect.io.perturb import blur, jpeg, resize


@dataclass(frozen=True)
class AugmentConfig:
    """Probabilities and ranges of each augmentation; every draw comes from the caller's rng."""

    flip: float = 0.5
    # JPEG on half the crops, quality 50..100, its 8x8 grid at a random offset from the crop's
    # corner (jpeg_grid_shift: the share of JPEG draws so shifted), as in a crop of a compressed
    # image. Against 0.3 / 65..100 / grid on the corner this lifted JPEG-75 AUC on an earlier
    # mini LDM's generations (0.987 vs. 0.953, seed 0). On the shipped mini LDM the lighter
    # setting separated clean generations better on average over 5 seeds the benchmark does
    # not report (TPR@1%FPR mean 0.96 vs. 0.93), so the demo's ae trains with that
    # (AEDemo.augment; the benchmark ablates this default).
    jpeg_prob: float = 0.5
    jpeg_quality: tuple[int, int] = (50, 100)
    jpeg_grid_shift: float = 1.0
    resize_prob: float = 0.2
    resize_scale: tuple[float, float] = (0.5, 1.5)
    blur_prob: float = 0.1
    blur_sigma: tuple[float, float] = (0.1, 2.0)

    @classmethod
    def from_spec(cls, spec: str) -> AugmentConfig:
        """``"flip=0.5,jpeg_prob=0.3,jpeg_quality=65-100"`` -> a config (the CLI's ``--augment``).

        Keys are field names; a key left out keeps its default. Probabilities are numbers in
        [0, 1], ranges ``LOW-HIGH`` (or one number for both). ``none`` turns every
        augmentation off. Raises ValueError naming the bad key or value.
        """
        spec = spec.strip()
        defaults = cls()
        if spec.lower() in ("none", "off"):
            return cls(**{f.name: 0.0 for f in fields(cls) if _is_probability(defaults, f.name)})
        known = [f.name for f in fields(cls)]
        values: dict[str, Any] = {}
        for item in filter(None, (part.strip() for part in spec.split(","))):
            key, sep, raw = item.partition("=")
            key = key.strip()
            if not sep or key not in known:
                raise ValueError(
                    f"augment {item!r}: expected KEY=VALUE with KEY one of {', '.join(known)}, "
                    "or 'none'"
                )
            try:
                values[key] = _parse_value(getattr(defaults, key), raw.strip())
            except ValueError as err:
                raise ValueError(f"augment {key}={raw.strip()!r}: {err}") from None
        return cls(**values)

    def to_spec(self) -> str:
        """The string :meth:`from_spec` reads back into this config."""
        parts = []
        for f in fields(self):
            value = getattr(self, f.name)
            text = "-".join(f"{v:g}" for v in value) if isinstance(value, tuple) else f"{value:g}"
            parts.append(f"{f.name}={text}")
        return ",".join(parts)


def _is_probability(config: AugmentConfig, name: str) -> bool:
    return not isinstance(getattr(config, name), tuple)


#: Every augmentation off: a training view is its random crop alone (``--augment none``).
NO_AUGMENTATION = AugmentConfig.from_spec("none")


def _parse_value(default: Any, raw: str) -> Any:
    if not isinstance(default, tuple):
        value = float(raw)
        if not 0.0 <= value <= 1.0:
            raise ValueError("a probability must lie in [0, 1]")
        return value
    kind = type(default[0])  # int for JPEG qualities, float for scales and sigmas
    low, sep, high = raw.partition("-")
    try:
        bounds = (kind(low), kind(high if sep else low))
    except ValueError:
        raise ValueError(f"expected a range LOW-HIGH of {kind.__name__}s") from None
    if bounds[0] > bounds[1] or bounds[0] < 0:
        raise ValueError("expected 0 <= LOW <= HIGH")
    return bounds


def augmented_crop(
    image: Image.Image, size: int, aug: AugmentConfig, rng: np.random.Generator
) -> Image.Image:
    """Random resize -> random ``size`` crop -> flip -> blur -> JPEG (its block grid at a
    random offset from the crop's corner when drawn so), each drawn from ``rng``.

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
        quality = int(rng.integers(aug.jpeg_quality[0], aug.jpeg_quality[1] + 1))
        offset = (0, 0)
        if rng.random() < aug.jpeg_grid_shift:
            dx, dy = rng.integers(0, 8, size=2)
            offset = (int(dx), int(dy))
        image = jpeg(image, quality, grid_offset=offset)
    return image
