"""Crop geometry: which square windows of an image a detector looks at.

Detectors see fixed-size crops at native resolution (resizing would blur away the generator's
traces), so boxes are computed from the image size alone: cheap, testable, and the same for a
real image and its reconstruction, which share a size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

Box = tuple[int, int, int, int]  # (left, top, right, bottom), PIL order

CROP_POLICIES: tuple[str, ...] = ("center", "random", "grid")


def _check_fits(width: int, height: int, size: int) -> None:
    if size < 1:
        raise ValueError(f"crop size must be at least 1, got {size}")
    if width < size or height < size:
        raise ValueError(
            f"image {width}x{height} is smaller than the crop size {size}; "
            "call ensure_min_size(image, size) first"
        )


def ensure_min_size(image: Image.Image, size: int) -> Image.Image:
    """Upscale (bicubic, aspect kept) so the short side is at least `size`; else return `image`.

    Upscaling is a last resort for tiny images: it changes the pixel statistics a detector reads,
    so images that are already big enough are returned untouched (the same object).
    """
    if size < 1:
        raise ValueError(f"size must be at least 1, got {size}")
    width, height = image.size
    short = min(width, height)
    if short >= size:
        return image
    return image.resize(_short_side_on(width, height, size), Image.Resampling.BICUBIC)


def _short_side_on(width: int, height: int, size: int) -> tuple[int, int]:
    """The (width, height) with the short side exactly `size`, aspect kept: rounding never
    pushes the long side below it."""
    if width <= height:
        return size, max(size, round(height * size / width))
    return max(size, round(width * size / height)), size


def fit_short_side(image: Image.Image, size: int) -> Image.Image:
    """Resize so the short side is exactly ``size`` (aspect kept), as ADM's ``center_crop_arr``
    does before its center crop: halve with a box filter while the short side is at least
    ``2 * size`` (an area average, no aliasing), then one bicubic step, up or down.

    Unlike the crops above this resamples the image, which blurs a generator's pixel traces;
    it is for methods whose published preprocessing does so (DIRE), so that their maps match
    the paper's.
    """
    if size < 1:
        raise ValueError(f"size must be at least 1, got {size}")
    while min(image.size) >= 2 * size:
        image = image.resize(tuple(side // 2 for side in image.size), Image.Resampling.BOX)
    new_size = _short_side_on(*image.size, size)
    if new_size == image.size:
        return image
    return image.resize(new_size, Image.Resampling.BICUBIC)


def center_box(width: int, height: int, size: int) -> Box:
    """The `size` x `size` box in the middle of the image (rounded towards top-left)."""
    _check_fits(width, height, size)
    left = (width - size) // 2
    top = (height - size) // 2
    return (left, top, left + size, top + size)


def random_boxes(width: int, height: int, size: int, n: int, rng: np.random.Generator) -> list[Box]:
    """`n` boxes at uniform random positions (every position equally likely), drawn from `rng`."""
    _check_fits(width, height, size)
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    lefts = rng.integers(0, width - size + 1, size=n)
    tops = rng.integers(0, height - size + 1, size=n)
    return [
        (int(left), int(top), int(left) + size, int(top) + size)
        for left, top in zip(lefts, tops, strict=True)
    ]


def _spread(free: int, count: int) -> list[int]:
    """`count` offsets spread evenly over [0, free]; a single one sits in the middle."""
    if count == 1:
        return [free // 2]
    return [round(i * free / (count - 1)) for i in range(count)]


def grid_boxes(width: int, height: int, size: int, n: int) -> list[Box]:
    """`n` boxes spread evenly over the image, row by row (deterministic; they may overlap).

    Rows are chosen to follow the image's aspect ratio and the boxes are shared out between
    rows as evenly as possible, so every `n` gives exactly `n` boxes (n=1 is the center box).
    """
    _check_fits(width, height, size)
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if n == 0:
        return []
    free_x, free_y = width - size, height - size
    if free_y == 0:
        rows = 1
    elif free_x == 0:
        rows = n
    else:
        rows = min(n, max(1, round((n * height / width) ** 0.5)))
    boxes: list[Box] = []
    for row, top in enumerate(_spread(free_y, rows)):
        in_row = n // rows + (1 if row < n % rows else 0)
        boxes.extend((left, top, left + size, top + size) for left in _spread(free_x, in_row))
    return boxes


def crop_boxes(
    width: int,
    height: int,
    size: int,
    *,
    policy: str,
    n: int = 1,
    rng: np.random.Generator | None = None,
) -> list[Box]:
    """`n` boxes chosen by `policy` ("center", "random" or "grid").

    Always exactly `n` boxes, so callers can stack results; "center" repeats its one box.
    "random" needs `rng` explicitly, so that every random crop in a run is reproducible.
    """
    if policy == "center":
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        return [center_box(width, height, size)] * n
    if policy == "random":
        if rng is None:
            raise ValueError("crop policy 'random' needs rng=np.random.default_rng(seed)")
        return random_boxes(width, height, size, n, rng)
    if policy == "grid":
        return grid_boxes(width, height, size, n)
    raise ValueError(f"unknown crop policy {policy!r}; valid policies: {', '.join(CROP_POLICIES)}")


def n_try_boxes(width: int, height: int, size: int, tries: int, seed: int = 0) -> list[Box]:
    """Boxes for "N-try" inference: 1 try is the center crop, N tries are N seeded random crops.

    The generator is seeded per call, so the same image size always gets the same boxes: scores
    are reproducible and do not depend on the order in which images are scanned.
    """
    if tries < 1:
        raise ValueError(f"tries must be >= 1, got {tries}")
    if tries == 1:
        return [center_box(width, height, size)]
    return random_boxes(width, height, size, tries, np.random.default_rng(seed))


def crop(image: Image.Image, box: Box) -> Image.Image:
    """The pixels inside `box`; refuses boxes outside the image (PIL would pad them with black)."""
    left, top, right, bottom = box
    width, height = image.size
    if not (0 <= left < right <= width and 0 <= top < bottom <= height):
        raise ValueError(f"box {box} is not inside the {width}x{height} image")
    return image.crop(box)


def group_by_size(sizes: Sequence[tuple[int, int]], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches whose images all share one (width, height).

    Lets whole images (or their reconstructions) be batched without resizing or padding. Groups
    come in order of first appearance, indices keep their order inside a group, and every batch
    holds at most `batch_size` indices.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    groups: dict[tuple[int, int], list[int]] = {}
    for index, size in enumerate(sizes):
        groups.setdefault((int(size[0]), int(size[1])), []).append(index)
    return [
        members[start : start + batch_size]
        for members in groups.values()
        for start in range(0, len(members), batch_size)
    ]


def aligned_views(
    whole: torch.Tensor,
    crop_size: int,
    *,
    step: int = 1,
    tries: int = 1,
    try_seed: int = 0,
    rng: np.random.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """Square ``crop_size`` views of a square uint8 image (3, S, S), at offsets that are
    multiples of ``step`` so that a map on a coarser grid (a latent, stride ``step``) can be
    sliced to match each view exactly.

    ``rng`` given (training): one random view, flipped with probability 1/2. Otherwise the
    centre for one try, or ``tries`` views seeded by ``try_seed``; never flipped. Returns
    ``crops`` (T, 3, c, c), ``offsets`` (T, 2) as (top, left) and ``flips`` (T,).
    """
    steps = (whole.shape[-1] - crop_size) // step
    if rng is not None:
        offsets = [tuple(int(v) * step for v in rng.integers(0, steps + 1, 2))]
    elif tries == 1:
        offsets = [(steps // 2 * step,) * 2]
    else:
        seeded = np.random.default_rng(try_seed)
        offsets = [
            tuple(int(v) * step for v in seeded.integers(0, steps + 1, 2)) for _ in range(tries)
        ]
    flips = [bool(rng is not None and rng.random() < 0.5) for _ in offsets]
    views = []
    for (top, left), flip in zip(offsets, flips, strict=True):
        view = whole[:, top : top + crop_size, left : left + crop_size]
        views.append(view.flip(-1) if flip else view)
    return {
        "crops": torch.stack(views),
        "offsets": torch.tensor(offsets, dtype=torch.long),
        "flips": torch.tensor(flips, dtype=torch.bool),
    }


@dataclass(frozen=True, kw_only=True)
class AlignedViewSampling:
    """How a transform that cuts :func:`aligned_views` from a square image samples them: the
    base of those transforms (LaRE's, the inversions'), so the rule is written once.

    ``tries`` views seeded by ``try_seed`` at inference (the centre for one try); with
    ``train``, one random view, flipped or not, drawn from the loader's rng, which inference
    never reads.
    """

    tries: int = 1
    try_seed: int = 0
    train: bool = False

    def views(
        self, whole: torch.Tensor, crop_size: int, rng: np.random.Generator | None, *, step: int = 1
    ) -> dict[str, torch.Tensor]:
        """:func:`aligned_views` of ``whole`` (offsets multiples of ``step``), sampled so."""
        return aligned_views(
            whole,
            crop_size,
            step=step,
            tries=self.tries,
            try_seed=self.try_seed,
            rng=rng if self.train else None,
        )
