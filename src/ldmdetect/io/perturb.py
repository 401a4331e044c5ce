"""Robustness perturbations, named by short strings such as "jpeg:75" or "resize:0.5+jpeg:75".

Strings, because perturbations travel through CLI flags, configs and report keys; the canonical
`str(Perturbation)` is the key under which robustness results are stored, so parsing and printing
must round-trip exactly. Values are validated when a spec is parsed, not on the first image of a
long sweep.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

PerturbationOp = Callable[[Image.Image, float], Image.Image]

# name -> op: the one table that parsing, validation and application all read. Each op registers
# its value check beside it, so a spec is validated before any image is touched.
PERTURBATIONS: dict[str, PerturbationOp] = {}
_VALIDATORS: dict[str, Callable[[float], float]] = {}


def _register(
    name: str, validate: Callable[[float], float]
) -> Callable[[PerturbationOp], PerturbationOp]:
    def decorator(op: PerturbationOp) -> PerturbationOp:
        PERTURBATIONS[name] = op
        _VALIDATORS[name] = validate
        return op

    return decorator


def _quality(value: float) -> float:
    if not (float(value).is_integer() and 1 <= value <= 100):
        raise ValueError(f"quality must be a whole number from 1 to 100, got {value:g}")
    return float(value)


def _positive(value: float) -> float:
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"factor must be a finite number > 0, got {value:g}")
    return float(value)


def _non_negative(value: float) -> float:
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"sigma must be a finite number >= 0, got {value:g}")
    return float(value)


def _pixels(value: float) -> float:
    if not (float(value).is_integer() and value >= 1):
        raise ValueError(f"size must be a whole number of pixels >= 1, got {value:g}")
    return float(value)


def _reencode(image: Image.Image, format: str, quality: float) -> Image.Image:
    # JPEG and lossy WebP store no alpha or palette; decide the colour conversion here, once.
    source = image if image.mode in ("RGB", "L") else image.convert("RGB")
    buffer = io.BytesIO()
    options = {"lossless": False} if format == "WEBP" else {}
    source.save(buffer, format=format, quality=int(quality), **options)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        decoded.load()
        return decoded.copy()


@_register("jpeg", _quality)
def jpeg(image: Image.Image, quality: int, *, grid_offset: tuple[int, int] = (0, 0)) -> Image.Image:
    """Round-trip through an in-memory JPEG at `quality` (1..100, Pillow's default settings).

    ``grid_offset=(dx, dy)`` (0..7 each) places JPEG's 8x8 block grid ``dx``/``dy`` pixels
    left of/above the image's corner, as if the image were a crop of a larger compressed one:
    the image is padded by reflection on the top and left, compressed, and cropped back. A crop
    taken from a compressed photo meets the grid at a random offset, 63 times in 64 not at its
    own corner.
    """
    dx, dy = grid_offset
    if not (0 <= dx < 8 and 0 <= dy < 8):
        raise ValueError(f"grid_offset must lie in 0..7 on each axis, got {grid_offset}")
    if dx == dy == 0:
        return _reencode(image, "JPEG", _quality(quality))
    source = image if image.mode in ("RGB", "L") else image.convert("RGB")
    pixels = np.asarray(source)
    pad = ((dy, 0), (dx, 0)) + ((0, 0),) * (pixels.ndim - 2)
    padded = Image.fromarray(np.pad(pixels, pad, mode="symmetric"))
    coded = _reencode(padded, "JPEG", _quality(quality))
    return coded.crop((dx, dy, dx + source.width, dy + source.height))


@_register("webp", _quality)
def webp(image: Image.Image, quality: int) -> Image.Image:
    """Round-trip through an in-memory lossy WebP at `quality` (1..100)."""
    return _reencode(image, "WEBP", _quality(quality))


@_register("resize", _positive)
def resize(image: Image.Image, factor: float) -> Image.Image:
    """Scale both sides by `factor` with antialiased bicubic resampling; at least 1x1."""
    factor = _positive(factor)
    width, height = image.size
    new_size = (max(1, round(width * factor)), max(1, round(height * factor)))
    return image.resize(new_size, Image.Resampling.BICUBIC)


@_register("blur", _non_negative)
def blur(image: Image.Image, sigma: float) -> Image.Image:
    """Gaussian blur with standard deviation `sigma` pixels (0 leaves the pixels as they are)."""
    sigma = _non_negative(sigma)
    if sigma == 0:
        return image.copy()
    return image.filter(ImageFilter.GaussianBlur(radius=sigma))


@_register("crop", _pixels)
def center_crop(image: Image.Image, size: int) -> Image.Image:
    """Central `size` x `size` crop; a side shorter than `size` is kept whole, never padded."""
    size = int(_pixels(size))
    width, height = image.size
    crop_width, crop_height = min(width, size), min(height, size)
    left, top = (width - crop_width) // 2, (height - crop_height) // 2
    return image.crop((left, top, left + crop_width, top + crop_height))


def _format_value(value: float) -> str:
    # Whole numbers print without ".0"; others use repr, which round-trips floats exactly.
    return str(int(value)) if float(value).is_integer() else repr(float(value))


@dataclass(frozen=True)
class Perturbation:
    """A chain of perturbation steps applied left to right; no steps means "none"."""

    steps: tuple[tuple[str, float], ...] = ()

    def __post_init__(self) -> None:
        checked = []
        for name, value in self.steps:
            if name not in PERTURBATIONS:
                raise ValueError(
                    f"unknown perturbation {name!r}; known: {', '.join(sorted(PERTURBATIONS))}"
                )
            checked.append((name, _VALIDATORS[name](float(value))))
        object.__setattr__(self, "steps", tuple(checked))

    def __call__(self, image: Image.Image) -> Image.Image:
        for name, value in self.steps:
            image = PERTURBATIONS[name](image, value)
        return image

    def __str__(self) -> str:
        if not self.steps:
            return "none"
        return "+".join(f"{name}:{_format_value(value)}" for name, value in self.steps)


def parse_perturbation(spec: str) -> Perturbation:
    """Parse "kind:value" steps joined by "+" (e.g. "resize:0.5+jpeg:75"); "none" is a no-op."""
    text = spec.strip().lower()
    if text == "none":
        return Perturbation(())
    if not text:
        raise ValueError("empty perturbation spec; use 'none' for no perturbation")
    steps = []
    for part in text.split("+"):
        kind, colon, raw = part.strip().partition(":")
        kind, raw = kind.strip(), raw.strip()
        if kind not in PERTURBATIONS:
            raise ValueError(
                f"perturbation {spec!r}: unknown kind {kind!r}; "
                f"known kinds: {', '.join(sorted(PERTURBATIONS))} (or 'none')"
            )
        if not colon or not raw:
            raise ValueError(f"perturbation {spec!r}: {kind!r} needs a value, like '{kind}:VALUE'")
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(f"perturbation {spec!r}: {raw!r} is not a number") from None
        try:
            steps.append((kind, _VALIDATORS[kind](value)))
        except ValueError as exc:
            raise ValueError(f"perturbation {spec!r}: {kind} {exc}") from None
    return Perturbation(tuple(steps))


def parse_perturbations(specs: Iterable[str]) -> list[Perturbation]:
    """Parse several specs (e.g. a robustness sweep), failing on the first bad one."""
    return [parse_perturbation(spec) for spec in specs]
