"""Content ids: the key under which an image's features are cached and its noise is seeded.

The id hashes the decoded pixels (and size), not the path or the file bytes: the same picture
under another name or with other metadata shares its features, and a perturbed copy (JPEG-75
in a robustness sweep) gets its own.
"""

from __future__ import annotations

import hashlib

from PIL import Image

# Bytes per chunk handed from the encoder to the hash: small enough to stay in cache. Pillow's
# raw encoder needs room for one row of up to 4 bytes per pixel (as ``tobytes`` allows).
_CHUNK = 1 << 16


def image_id(image: Image.Image) -> str:
    """32 hex digits of SHA-256 over the size and the RGB pixels (the bytes of ``tobytes()``).

    The bytes are streamed from Pillow's raw encoder into the hash, chunk by chunk, instead of
    being gathered first: ``tobytes()`` on a 12 Mpx photo builds a 36 MB copy and takes twice
    as long as hashing it.
    """
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    digest = hashlib.sha256(f"{rgb.width}x{rgb.height}:".encode())
    rgb.load()
    if rgb.width and rgb.height:
        # The encoder ``tobytes`` itself uses (Pillow has no public streaming form of it).
        encoder = Image._getencoder("RGB", "raw", "RGB")
        try:
            encoder.setimage(rgb.im, (0, 0, rgb.width, rgb.height))
            status = 0
            while not status:
                _, status, chunk = encoder.encode(max(_CHUNK, rgb.width * 4))
                digest.update(chunk)
        finally:
            encoder.cleanup()
        if status < 0:
            raise RuntimeError(f"Pillow's raw encoder failed ({status}) on a {rgb.size} image")
    return digest.hexdigest()[:32]
