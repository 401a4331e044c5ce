"""The contact sheet: a PNG of sample (fake, matched real) pairs, for checking matches by eye."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ldmdetect.io.files import atomic_path
from ldmdetect.io.images import load_image
from ldmdetect.io.pairs import Pair

__all__ = ["SHEET_FILE", "write_contact_sheet"]

SHEET_FILE = "contact_sheet.png"


def _tile(path: str, size: int):
    from PIL import Image

    try:
        image = load_image(path)
        image.thumbnail((size, size), Image.Resampling.BICUBIC)
    except Exception:  # a file that vanished since: grey tile, the sheet is only a preview
        image = Image.new("RGB", (size, size), (128, 128, 128))
    tile = Image.new("RGB", (size, size), (255, 255, 255))
    tile.paste(image, ((size - image.width) // 2, (size - image.height) // 2))
    return tile


def write_contact_sheet(
    pairs: Sequence[Pair], path: str | os.PathLike, *, count: int = 8, thumb_size: int = 160
) -> Path:
    """A PNG with one row per sample pair: fake | matched real, similarity and names below.

    The sample runs from the most to the least similar pair (evenly spaced), so a glance
    shows both how good the best matches are and how loose the worst ones get.
    """
    from PIL import Image, ImageDraw

    if not pairs:
        raise ValueError("no pairs to draw")
    ranked = sorted(pairs, key=lambda p: -p.similarity if not math.isnan(p.similarity) else 1)
    picks = np.unique(np.linspace(0, len(ranked) - 1, min(count, len(ranked))).round())
    sample = [ranked[int(i)] for i in picks]
    caption, pad = 28, 6
    width = 2 * thumb_size + 3 * pad
    height = len(sample) * (thumb_size + caption + pad) + pad + 18
    sheet = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    draw.text((pad, 3), "fake | matched real (cosine similarity)", fill=(0, 0, 0))
    y = pad + 18
    for pair in sample:
        sheet.paste(_tile(pair.fake, thumb_size), (pad, y))
        sheet.paste(_tile(pair.real, thumb_size), (2 * pad + thumb_size, y))
        names = f"{Path(pair.fake).name[:22]} | {Path(pair.real).name[:22]}"
        draw.text((pad, y + thumb_size + 2), f"similarity {pair.similarity:.3f}", fill=(0, 0, 0))
        draw.text((pad, y + thumb_size + 14), names, fill=(80, 80, 80))
        y += thumb_size + caption + pad
    with atomic_path(path) as tmp:
        sheet.save(tmp, format="PNG")
    return Path(path)
