"""Real photographs that ship inside installed packages: the default real data, no download.

Tests, demos and smoke runs need real camera images (a detector's "real" class), and offline
machines cannot fetch any. scikit-image, scikit-learn and matplotlib each bundle a few colour
photographs; this module finds them on disk.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from PIL import Image

from ldmdetect.io.images import load_image, save_png

# Chosen by hand: the colour photographs only. The same folders also hold logos, chessboards,
# scanned text, synthetic test patterns and grayscale images, which would teach a "real" class
# the wrong thing. Note motorcycle_left/right are a stereo pair: near-duplicates, keep them on
# the same side of any train/test split.
_BUNDLED_PHOTOS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    (
        "skimage",
        "data",
        (
            "astronaut.png",
            "chelsea.png",
            "coffee.png",
            "hubble_deep_field.jpg",
            "ihc.png",
            "motorcycle_left.png",
            "motorcycle_right.png",
            "retina.jpg",
            "rocket.jpg",
        ),
    ),
    ("sklearn", "datasets/images", ("china.jpg", "flower.jpg")),
    ("matplotlib", "mpl-data/sample_data", ("grace_hopper.jpg",)),
)

_COLOUR_MODES = frozenset({"RGB", "RGBA", "P", "CMYK", "YCbCr"})


def _package_dir(package: str) -> Path | None:
    # find_spec locates the package's __file__ without importing it (matplotlib and sklearn are
    # slow to import); None when the package is not installed.
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent


def _is_colour(path: Path) -> bool:
    try:
        with Image.open(path) as image:  # header only
            return image.mode in _COLOUR_MODES
    except OSError:
        return False


def sample_photos() -> list[tuple[str, Path]]:
    """(name, path) of the bundled colour photographs that are installed here, sorted by name."""
    photos: dict[str, Path] = {}
    for package, folder, filenames in _BUNDLED_PHOTOS:
        root = _package_dir(package)
        if root is None:
            continue
        for filename in filenames:
            path = root / folder / filename
            if path.is_file() and _is_colour(path):
                photos.setdefault(Path(filename).stem, path)
    return sorted(photos.items())


def write_sample_photos(output_dir: str | os.PathLike) -> list[Path]:
    """Decode each sample photo and save it as `<name>.png` in `output_dir`; returns the paths.

    Lossless PNG so that real images share the container of everything else the pipeline
    writes. Files already present are kept, so calling it again is cheap and changes nothing.
    """
    output = Path(output_dir)
    written = []
    for name, source in sample_photos():
        target = output / f"{name}.png"
        if not target.exists():
            save_png(load_image(source), target)
        written.append(target)
    return written
