"""Fixtures for the service tests: a real photo and the trained tiny detector, loaded once."""

import pytest
from serve_helpers import encode

from ldmdetect.detector import Detector
from ldmdetect.io.images import load_image
from ldmdetect.io.samples import sample_photos


@pytest.fixture(scope="session")
def photo_jpeg() -> bytes:
    """A real photo from the bundled samples, as a small JPEG."""
    _, path = next((n, p) for n, p in sample_photos() if p.suffix == ".jpg")
    image = load_image(path)
    image.thumbnail((192, 192))
    return encode(image, "JPEG", quality=92)


@pytest.fixture(scope="session")
def detector(detector_dir) -> Detector:
    return Detector.from_pretrained(detector_dir, device="cpu")
