"""A JPEG's own compression settings, read from its header, and re-encoding with them.

Frequency alignment (Dual Data Alignment, NeurIPS 2025): a photo published as JPEG lost its
high frequencies to quantisation, while its reconstruction through an autoencoder has them
back, so "has high frequencies" becomes a shortcut a detector learns instead of the
autoencoder's trace, and it then flags sharp real photos. Encoding the reconstruction with the
real's own quantisation tables and chroma subsampling removes that difference: the pair then
differs only by the autoencoder.
"""

from __future__ import annotations

import functools
import io
import os
from dataclasses import dataclass

import numpy as np
from PIL import Image, JpegImagePlugin

__all__ = ["JpegSettings", "estimate_quality", "read_jpeg_settings", "reencode_like"]


@dataclass(frozen=True)
class JpegSettings:
    """What a JPEG was compressed with: its quantisation tables, its chroma subsampling
    (Pillow's code: 0 = 4:4:4, 1 = 4:2:2, 2 = 4:2:0) and the libjpeg quality nearest them."""

    qtables: tuple[tuple[int, ...], ...]
    subsampling: int
    quality: int


def read_jpeg_settings(path: str | os.PathLike) -> JpegSettings | None:
    """The settings of the JPEG at ``path`` (header only), or None for any other format."""
    with Image.open(path) as image:
        if image.format not in ("JPEG", "MPO") or not getattr(image, "quantization", None):
            return None
        tables = tuple(
            tuple(int(v) for v in image.quantization[k]) for k in sorted(image.quantization)
        )
        sampling = JpegImagePlugin.get_sampling(image)
    return JpegSettings(tables, max(sampling, 0), estimate_quality(tables))


@functools.cache
def _libjpeg_tables() -> np.ndarray:
    """The luminance table libjpeg (through Pillow) writes at each quality 1..100, (100, 64)."""
    tile = Image.new("RGB", (8, 8))
    tables = []
    for quality in range(1, 101):
        buffer = io.BytesIO()
        tile.save(buffer, format="JPEG", quality=quality)
        with Image.open(buffer) as coded:
            tables.append(coded.quantization[0])
    return np.asarray(tables, dtype=np.float64)


def estimate_quality(qtables: tuple[tuple[int, ...], ...]) -> int:
    """The libjpeg quality (1..100) whose luminance table is nearest the given one.

    Exact for files written by libjpeg-based encoders (most software and many phones); for
    cameras with their own tables it is the nearest standard quality, a summary for people
    and manifests, while :func:`reencode_like` always uses the tables themselves.
    """
    luminance = np.asarray(qtables[0], dtype=np.float64)
    distance = np.abs(np.log(_libjpeg_tables()) - np.log(luminance)).sum(axis=1)
    return int(np.argmin(distance)) + 1


def reencode_like(image: Image.Image, settings: JpegSettings) -> Image.Image:
    """``image`` through an in-memory JPEG with ``settings``' tables and subsampling. The
    block grid starts at the image's corner, so a crop cut on the source's 16-pixel grid is
    re-encoded on the grid its real partner was coded on."""
    buffer = io.BytesIO()
    image.convert("RGB").save(
        buffer,
        format="JPEG",
        qtables=[list(t) for t in settings.qtables],
        subsampling=settings.subsampling,
    )
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return decoded.convert("RGB")
