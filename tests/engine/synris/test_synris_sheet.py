"""The contact sheet: one row per sampled pair, most to least similar, a vanished file grey."""

import math

import numpy as np
import pytest
from PIL import Image

from ldmdetect.engine.synris import Pair, write_contact_sheet


def test_contact_sheet_rows_and_a_grey_tile_for_a_vanished_file(synris_known, tmp_path):
    fake, pool = synris_known / "fake", synris_known / "pool"
    pairs = [
        Pair(str(fake / "coffee.png"), str(pool / "copy_coffee.jpg"), 0.9),
        Pair(str(fake / "flower.png"), str(tmp_path / "gone.jpg"), 0.2),
        Pair(str(fake / "rocket.png"), str(pool / "copy_rocket.jpg"), math.nan),
    ]
    path = write_contact_sheet(pairs, tmp_path / "sheet.png", count=3, thumb_size=64)
    with Image.open(path) as sheet:
        assert sheet.format == "PNG" and sheet.width == 2 * 64 + 18
        assert (sheet.height - 6 - 18) // (64 + 28 + 6) == 3  # one row per pair
        pixels = np.asarray(sheet.convert("RGB"))

    def real_tile(row: int) -> np.ndarray:
        top = 24 + row * (64 + 28 + 6)
        return pixels[top : top + 64, 2 * 6 + 64 : 2 * 6 + 128]

    # Rows run from the most similar pair down, NaN last: coffee, the vanished file, rocket.
    assert real_tile(0).std() > 10  # a photo
    assert (real_tile(1) == 128).all()  # the vanished real: a flat grey tile, not a failure
    assert real_tile(2).std() > 10
    # With fewer rows than pairs the sample keeps both ends: the best and the worst.
    path = write_contact_sheet(pairs, tmp_path / "two.png", count=2, thumb_size=64)
    with Image.open(path) as sheet:
        assert (sheet.height - 6 - 18) // (64 + 28 + 6) == 2


def test_contact_sheet_needs_pairs(tmp_path):
    with pytest.raises(ValueError, match="no pairs"):
        write_contact_sheet([], tmp_path / "sheet.png")
