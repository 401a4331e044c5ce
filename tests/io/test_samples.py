import os

import numpy as np
import pytest
from PIL import Image

from ldmdetect.io import samples
from ldmdetect.io.images import load_image
from ldmdetect.io.samples import sample_photos, write_sample_photos


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    output = tmp_path_factory.mktemp("samples")
    return output, write_sample_photos(output)


def test_sample_photos_are_colour_photographs_sorted_by_name():
    photos = sample_photos()
    names = [name for name, _ in photos]
    assert names == sorted(names)
    # The installed test environment has all three packages.
    assert {"astronaut", "chelsea", "coffee", "china", "flower", "grace_hopper"} <= set(names)
    assert not {"camera", "logo", "chessboard_RGB", "text", "page", "color", "horse"} & set(names)
    for _, path in photos:
        assert path.is_file()
        with Image.open(path) as image:
            assert image.mode == "RGB"


def test_write_sample_photos_saves_lossless_rgb_pngs(written):
    output, paths = written
    photos = sample_photos()
    assert [path.name for path in paths] == [f"{name}.png" for name, _ in photos]
    assert sorted(os.listdir(output)) == sorted(path.name for path in paths)
    for path in paths:
        with Image.open(path) as image:
            assert image.format == "PNG" and image.mode == "RGB"
    source = dict(photos)["chelsea"]
    assert np.array_equal(
        np.asarray(load_image(output / "chelsea.png")), np.asarray(load_image(source))
    )


def test_write_sample_photos_is_idempotent(written):
    output, paths = written
    before = {path: path.stat().st_mtime_ns for path in paths}
    assert write_sample_photos(output) == paths
    assert {path: path.stat().st_mtime_ns for path in paths} == before


def test_missing_packages_files_and_grayscale_images_are_skipped(monkeypatch):
    monkeypatch.setattr(
        samples,
        "_BUNDLED_PHOTOS",
        (
            ("ldmdetect_no_such_package", "data", ("a.png",)),
            ("skimage", "data", ("camera.png", "no_such_file.png", "astronaut.png")),
        ),
    )
    assert [name for name, _ in sample_photos()] == ["astronaut"]  # camera.png is grayscale
