"""Shared SynRIS fixtures: the real pretrained offline embedder (ImageNet EfficientNet-Lite0)
and a known-answer pool holding JPEG-85, 95%-crop copies of the fakes' sources among
distractor photos, so every fake has exactly one right match."""

import pytest
from PIL import Image

from ldmdetect.features.embeddings import OFFLINE_EMBEDDER, load_embedder
from ldmdetect.io.images import load_image, save_png
from ldmdetect.io.samples import sample_photos

# Fakes' sources; the other bundled photos are distractors. The motorcycle stereo pair (two
# views of one scene) stays on the distractor side: as a source its twin would be a true
# near-duplicate, not a distractor.
SOURCES = ("astronaut", "chelsea", "coffee", "flower", "retina", "rocket")


def _small(path, size=128):
    image = load_image(path)
    image.thumbnail((size, size))
    return image


def _perturbed_copy(image: Image.Image) -> Image.Image:
    """A 95% crop, a little off-centre: what a re-upload of the picture looks like."""
    w, h = image.size
    cw, ch = round(0.95 * w), round(0.95 * h)
    return image.crop((w - cw - 1, 1, w - 1, ch + 1))


@pytest.fixture(scope="session")
def embedder():
    return load_embedder(OFFLINE_EMBEDDER)


@pytest.fixture(scope="session")
def sources() -> tuple[str, ...]:
    """The names of the photos that have a fake and a perturbed copy in ``known``."""
    return SOURCES


@pytest.fixture(scope="session")
def known(tmp_path_factory):
    """fake/<source>.png, pool/copy_<source>.jpg (JPEG 85 of a 95% crop) + distractors."""
    root = tmp_path_factory.mktemp("synris")
    photos = dict(sample_photos())
    assert set(SOURCES) <= set(photos), "bundled photos missing"
    (root / "fake").mkdir()
    (root / "pool").mkdir()
    for name, path in photos.items():
        image = _small(path)
        if name in SOURCES:
            save_png(image, root / "fake" / f"{name}.png")
            _perturbed_copy(image).save(root / "pool" / f"copy_{name}.jpg", quality=85)
        else:
            image.save(root / "pool" / f"other_{name}.jpg", quality=85)
    (root / "pool" / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    (root / "fake" / "truncated.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (root / "fake" / "notes.txt").write_text("not an image")
    return root
