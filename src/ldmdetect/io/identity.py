"""Content ids: the key under which an image's features are cached and its noise is seeded.

The id hashes the decoded pixels (and size), not the path or the file bytes: the same picture
under another name or with other metadata shares its features, and a perturbed copy (JPEG-75
in a robustness sweep) gets its own.
"""

from __future__ import annotations

import hashlib

from PIL import Image


def image_id(image: Image.Image) -> str:
    """32 hex digits of SHA-256 over the RGB pixels and the size."""
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    digest = hashlib.sha256(f"{rgb.width}x{rgb.height}:".encode())
    digest.update(rgb.tobytes())
    return digest.hexdigest()[:32]
