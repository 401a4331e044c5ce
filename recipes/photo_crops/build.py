"""Cut the native-resolution photo crops that ship inside ldmdetect, from a fetched photo corpus.

The demo must stay one pip install with no download, yet its thresholds need reals from many
sources. So a few hundred small crops of each split's photographs ship as package data:

- native crops are cut without resampling; from JPEG photographs losslessly with
  ``jpegtran -crop`` on MCU boundaries, so each crop holds the published file's own DCT
  coefficients and quantisation tables ("JPEG as published"); PNG photographs give PNG crops;
- a few crops come from downscaled copies of the large photographs (how a photo looks after a
  resize on its way to the web); those are resampled, so they are saved as lossless PNG and
  flagged ``"downscaled": factor`` in the manifest;
- crops are spread over many photographs (a cap per photograph) and chosen by a seeded random
  draw over a grid, so rebuilding gives the same files; nearly flat crops are skipped.

Usage::

    ldmdetect data photos --output photos
    python recipes/photo_crops/build.py --corpus photos --output src/ldmdetect/io/photo_crops

Needs ``jpegtran`` (Debian: ``apt-get install libjpeg-turbo-progs``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ldmdetect.io.files import atomic_write_bytes, atomic_write_text
from ldmdetect.io.photo_corpus import SPLITS, PhotoSource, photo_sources

# Crop origins are multiples of the crop size, itself a multiple of 16: on MCU boundaries
# for every chroma subsampling (8 or 16 pixels), so jpegtran cuts exactly, without shifting.
_MCU = 16
_MIN_STD = 2.0  # a crop flatter than this (grey level std) is padding or blown sky: skipped


@dataclass(frozen=True)
class Scale:
    """One kind of crop for a split: its size, the downscale factor of the copy it is cut from
    (1: native), and how many crops each photograph gives."""

    size: int
    factor: int = 1
    fraction: float = 0.0  # crops per photo as a fraction of its grid cells (0: just `cap`) ...
    cap: int = 1  # ... at most this many ...
    minimum: int = 1  # ... and at least this many, where the photo has room
    png_cap: int | None = None  # lower cap for PNG photographs (PNG crops are 5-10x larger)
    min_megapixels: float = 0.0  # only photographs at least this large


PLANS: dict[str, tuple[Scale, ...]] = {
    "test": (
        Scale(128, fraction=1 / 3, cap=24, png_cap=4),
        Scale(128, factor=2, cap=2, min_megapixels=4.0),
        Scale(128, factor=4, cap=2, min_megapixels=4.0),
        Scale(128, factor=8, cap=3, min_megapixels=10.0),
    ),
    "calibration": (
        Scale(128, fraction=2 / 3, cap=20, png_cap=4),
        Scale(128, factor=2, cap=2, min_megapixels=1.5),
    ),
    "train": (
        Scale(128, fraction=1 / 4, cap=10, png_cap=2),
        Scale(256, cap=1, png_cap=0),
        Scale(128, factor=2, cap=1, min_megapixels=1.0),
    ),
}


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _jpeg_crop(source: Path, size: int, x: int, y: int) -> bytes:
    """A lossless jpegtran crop: same DCT coefficients and tables; metadata dropped."""
    command = ["jpegtran", "-crop", f"{size}x{size}+{x}+{y}", "-copy", "none", "-optimize"]
    done = subprocess.run([*command, str(source)], capture_output=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{source}: jpegtran failed: {done.stderr.decode(errors='replace')}")
    return done.stdout


def _png_bytes(image: Image.Image) -> bytes:
    from io import BytesIO

    buffer = BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def _count(scale: Scale, cells: int, is_png: bool) -> int:
    cap = scale.png_cap if (is_png and scale.png_cap is not None) else scale.cap
    if scale.fraction == 0:
        return min(cap, cells)
    return min(cap, cells, max(scale.minimum, int(cells * scale.fraction)))


def _crops_of_photo(
    photo: Path, entry: dict[str, Any], scales: tuple[Scale, ...], seed: int, out: Path
) -> list[dict[str, Any]]:
    is_png = entry["format"] == "PNG"
    with Image.open(photo) as opened:
        pixels = opened.convert("RGB")
    written: list[dict[str, Any]] = []
    for scale in scales:
        if entry["megapixels"] < scale.min_megapixels:
            continue
        image = pixels
        if scale.factor > 1:
            width, height = pixels.width // scale.factor, pixels.height // scale.factor
            image = pixels.resize((width, height), Image.Resampling.LANCZOS)
        grey = np.asarray(image.convert("L"), dtype=np.float32)
        cols, rows = image.width // scale.size, image.height // scale.size
        want = _count(scale, cols * rows, is_png)
        if want <= 0:
            continue
        rng = random.Random(f"{seed}:{entry['source']}:{photo.name}:{scale.size}:{scale.factor}")
        cells = [(c * scale.size, r * scale.size) for r in range(rows) for c in range(cols)]
        rng.shuffle(cells)
        taken = 0
        for x, y in cells:
            if taken >= want:
                break
            if grey[y : y + scale.size, x : x + scale.size].std() < _MIN_STD:
                continue
            assert x % _MCU == 0 and y % _MCU == 0
            native_jpeg = scale.factor == 1 and not is_png
            if native_jpeg:
                data = _jpeg_crop(photo, scale.size, x, y)
            else:
                box = (x, y, x + scale.size, y + scale.size)
                data = _png_bytes(image.crop(box))
            suffix = ".jpg" if native_jpeg else ".png"
            tag = f"_d{scale.factor}" if scale.factor > 1 else ""
            name = f"{photo.stem}_{scale.size}_{x}_{y}{tag}{suffix}"
            target = out / entry["split"] / entry["source"] / name
            atomic_write_bytes(target, data)
            with Image.open(target) as check:
                if check.size != (scale.size, scale.size):
                    raise RuntimeError(f"{target}: cut as {check.size}, wanted {scale.size}")
            record = {
                "file": target.relative_to(out).as_posix(),
                "split": entry["split"],
                "source": entry["source"],
                "licence": entry["licence"],
                "registry": entry["registry"],
                "package": entry["package"],
                "version": entry["version"],
                "member": entry["member"],
                "photo": photo.name,
                "photo_sha256": entry["sha256"],
                "x": x,
                "y": y,
                "width": scale.size,
                "height": scale.size,
                "format": "JPEG" if native_jpeg else "PNG",
                "sha256": _sha256(data),
            }
            if scale.factor > 1:
                record["downscaled"] = scale.factor
            written.append(record)
            taken += 1
    return written


def build(
    corpus: Path,
    out: Path,
    seed: int = 0,
    budget_bytes: int = 10_000_000,
    sources: tuple[PhotoSource, ...] | None = None,
) -> dict[str, Any]:
    """Cut every split's crops into ``out``, replacing its split folders; returns the manifest."""
    if shutil.which("jpegtran") is None:
        sys.exit("jpegtran not found: apt-get install libjpeg-turbo-progs")
    manifest_file = corpus / "manifest.json"
    if not manifest_file.is_file():
        sys.exit(f"{manifest_file}: missing; run `ldmdetect data photos --output {corpus}` first")
    files = json.loads(manifest_file.read_text(encoding="utf-8"))["files"]
    catalogue = sources if sources is not None else photo_sources()
    shipped = {s.name for s in catalogue if s.ship_crops}
    for split in SPLITS:
        shutil.rmtree(out / split, ignore_errors=True)
    crops: list[dict[str, Any]] = []
    for entry in sorted(files, key=lambda e: e["path"]):
        if entry["source"] not in shipped:
            continue
        photo = corpus / entry["path"]
        if _sha256(photo.read_bytes()) != entry["sha256"]:
            sys.exit(f"{photo}: sha256 differs from {manifest_file}; fetch it again")
        crops += _crops_of_photo(photo, entry, PLANS[entry["split"]], seed, out)
    total = sum((out / c["file"]).stat().st_size for c in crops)
    summary = {
        split: {
            "crops": sum(c["split"] == split for c in crops),
            "sources": sorted({c["source"] for c in crops if c["split"] == split}),
            "photos": len({(c["source"], c["photo"]) for c in crops if c["split"] == split}),
        }
        for split in SPLITS
    }
    manifest = {
        "format": 1,
        "about": (
            "Native-resolution crops of real photographs from Debian and PyPI packages; "
            "JPEG crops are lossless jpegtran cuts of the published files; PNG crops come "
            "from PNG photographs or, flagged 'downscaled', from resized copies."
        ),
        "seed": seed,
        "plans": {split: [asdict(s) for s in plan] for split, plan in PLANS.items()},
        "summary": summary,
        "crop_bytes": total,
        "crops": crops,
    }
    # One crop per line: readable in a diff, a tenth of the size of an indented dump.
    lines = ",\n".join(json.dumps(c, ensure_ascii=False) for c in crops)
    head = json.dumps({k: v for k, v in manifest.items() if k != "crops"}, ensure_ascii=False)
    text = head[:-1] + ', "crops": [\n' + lines + "\n]}\n"
    atomic_write_text(out / "manifest.json", text)
    size = total + len(text.encode())
    if size > budget_bytes:
        sys.exit(f"crops take {size / 1e6:.2f} MB, over the {budget_bytes / 1e6:.1f} MB budget")
    return manifest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, required=True, help="folder of `data photos`")
    parser.add_argument("--output", type=Path, default=Path("src/ldmdetect/io/photo_crops"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--budget-mb", type=float, default=10.0)
    args = parser.parse_args()
    manifest = build(args.corpus, args.output, args.seed, int(args.budget_mb * 1e6))
    print(json.dumps({"summary": manifest["summary"], "crop_bytes": manifest["crop_bytes"]}))


if __name__ == "__main__":
    main()
