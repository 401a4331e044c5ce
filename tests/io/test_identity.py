import hashlib

import numpy as np
from PIL import Image, ImageOps

from ldmdetect.io.identity import image_id
from ldmdetect.io.images import load_image


def _noise(width: int = 40, height: int = 30, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8))


def test_id_is_sha256_of_size_and_rgb_rows():
    # Written out from the definition: feature caches on disk are keyed by exactly this, so
    # any change to it would silently orphan every cached feature.
    image = _noise()
    pixels = np.asarray(image)
    expected = hashlib.sha256(b"40x30:" + pixels.tobytes()).hexdigest()[:32]
    assert image_id(image) == expected


def test_same_pixels_share_an_id_other_pixels_do_not():
    image = _noise()
    assert image_id(image) == image_id(image.copy())
    changed = np.asarray(image).copy()
    changed[29, 39, 2] ^= 1  # one bit of one pixel
    assert image_id(Image.fromarray(changed)) != image_id(image)
    # Same bytes, other shape: the size is part of the id.
    assert image_id(Image.fromarray(np.asarray(image).reshape(40, 30, 3))) != image_id(image)


def test_id_is_taken_from_rgb():
    gray = Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8))
    assert image_id(gray) == image_id(gray.convert("RGB"))


def test_decoding_without_copies_keeps_ids(tmp_path):
    # Ids of cached features are of the decoded, upright pixels: load_image's no-copy path and
    # a rotated photo must give what Pillow's own decode-and-transpose gives.
    for orientation in (1, 6):
        exif = Image.Exif()
        exif[0x0112] = orientation
        path = tmp_path / f"o{orientation}.jpg"
        _noise(48, 32).save(path, quality=90, exif=exif.tobytes())
        reference = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
        assert image_id(load_image(path)) == image_id(reference)


def test_a_photo_larger_than_one_memory_block_hashes_its_bytes_in_order():
    # Pillow stores large images in several blocks (16 MB by default); the id streams them and
    # must still hash exactly tobytes(), row after row.
    image = _noise(2100, 2100, seed=1)
    expected = hashlib.sha256(b"2100x2100:" + image.tobytes()).hexdigest()[:32]
    assert image_id(image) == expected
