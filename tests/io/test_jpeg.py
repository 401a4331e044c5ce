import io

import numpy as np
import pytest
from PIL import Image

from ldmdetect.io.jpeg import estimate_quality, read_jpeg_settings, reencode_like
from ldmdetect.io.samples import sample_photos


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    return Image.open(dict(sample_photos())["astronaut"]).convert("RGB").crop((0, 0, 256, 256))


@pytest.mark.parametrize(("quality", "subsampling"), [(30, 2), (50, 1), (85, 2), (95, 0)])
def test_settings_read_back_what_the_encoder_used(tmp_path, photo, quality, subsampling):
    path = tmp_path / "x.jpg"
    photo.save(path, quality=quality, subsampling=subsampling)
    settings = read_jpeg_settings(path)
    assert (settings.quality, settings.subsampling) == (quality, subsampling)
    assert estimate_quality(settings.qtables) == quality


def test_reencoding_with_a_files_own_settings_is_nearly_idempotent(tmp_path, photo):
    path = tmp_path / "x.jpg"
    photo.save(path, quality=60)
    decoded = Image.open(path).convert("RGB")
    settings = read_jpeg_settings(path)
    same = np.asarray(reencode_like(decoded, settings), dtype=float)
    assert np.abs(same - np.asarray(decoded, dtype=float)).mean() < 1.0
    buffer = io.BytesIO()
    decoded.save(buffer, format="JPEG", quality=30)  # other tables: a visible change
    other = np.asarray(Image.open(buffer).convert("RGB"), dtype=float)
    assert np.abs(other - np.asarray(decoded, dtype=float)).mean() > 1.5


def test_other_formats_have_no_jpeg_settings(tmp_path, photo):
    photo.save(tmp_path / "x.png")
    assert read_jpeg_settings(tmp_path / "x.png") is None
