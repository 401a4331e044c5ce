"""Safe image decoding: every upload becomes a plain RGB image or a clear `ImageDecodeError`.

Scanning millions of untrusted uploads means one bad file must never stop a run, leak a file
handle, or exhaust memory; and a detector must see the same pixels whatever container the image
came in (orientation, bit depth, palette, alpha are normalised here, once).
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import io
import os
import struct
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from ldmdetect.io.files import atomic_path

_CORE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"})
_CORE_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF")


def _avif_available() -> bool:
    """Pillow decodes AVIF itself (11.3 and later) when it was built with libavif."""
    try:
        from PIL import features

        return bool(features.check_module("avif"))
    except (ImportError, ValueError):
        return False


def _heif_available() -> bool:
    """HEIC/HEIF (what phones save) decodes through the optional ``pillow-heif`` package.

    Only looked up here, not imported: its opener is registered on the first decode
    (``_register_optional_openers``), so importing ldmdetect stays cheap.
    """
    return importlib.util.find_spec("pillow_heif") is not None


_AVIF = _avif_available()
_HEIF = _heif_available()

# Extensions that folder scans pick up: an extension is listed only where a decoder for it is
# installed, so a file that could never be read is reported as skipped instead of failing.
IMAGE_EXTENSIONS: frozenset[str] = (
    _CORE_EXTENSIONS
    | (frozenset({".avif"}) if _AVIF else frozenset())
    | (frozenset({".heic", ".heif"}) if _HEIF else frozenset())
)

# Twice Pillow's default warning threshold, i.e. the size at which Pillow itself gives up.
DEFAULT_MAX_PIXELS: int = 178_956_970

# Only the decoders we need: Pillow can also open formats whose decoders are rarely exercised on
# hostile input (and EPS shells out to Ghostscript). Content decides the format, not the name;
# JPEG covers MPO (multi-picture JPEGs straight from phones and cameras). AVIF and HEIF join
# where their decoders are installed.
DECODE_FORMATS: tuple[str, ...] = (
    *_CORE_FORMATS,
    *(("AVIF",) if _AVIF else ()),
    *(("HEIF",) if _HEIF else ()),
)


@functools.cache
def _register_optional_openers() -> None:
    """Register pillow-heif's opener with Pillow, once per process (DataLoader workers too)."""
    if _HEIF:
        import pillow_heif

        pillow_heif.register_heif_opener()


def sniff_format(header: bytes) -> str | None:
    """The entry of `DECODE_FORMATS` that `load_image` would decode a file starting with
    ``header`` as (its first 16 bytes suffice), or None when no installed decoder claims it.

    Asks each decoder's own Pillow plugin, in the order ``Image.open`` tries them, so that a
    service can refuse other content before decoding anything and never refuses a file that
    ``ldmdetect scan`` scores. The content decides, never a file name or a declared content
    type, which a client sets to anything it likes. Only the header is read: a file that passes
    may still fail to decode. ISO-BMFF files whose brand is the generic ``mif1`` are claimed by
    AVIF first, as ``Image.open`` does, though pillow-heif may be the one that decodes them.
    """
    _register_optional_openers()
    prefix = bytes(header[:16])
    for name in DECODE_FORMATS:
        if name not in Image.OPEN:
            Image.init()  # the plugins not loaded by default (AVIF)
        accept = Image.OPEN[name][1]
        claimed = accept(prefix) if accept is not None else True
        # A string is Pillow's "would be this format, but its decoder is missing".
        if claimed and not isinstance(claimed, str):
            return name
    return None


# "I" is how older Pillow versions (and some TIFFs) present 16-bit samples; 0..65535 is assumed.
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})

# Pillow checks the pixel count against a process-wide limit inside Image.open, before the caller
# can see the size, so its check would pre-empt ours (and its message has no dimensions). We lift
# that global only while Pillow parses a header, or decodes an image we have already approved that
# is over Pillow's threshold; the lock keeps concurrent callers from restoring each other's value.
_PILLOW_LIMIT_LOCK = threading.Lock()


class ImageDecodeError(ValueError):
    """An image that cannot be used, with the file it came from and a short human reason."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path = os.fsdecode(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self) -> tuple[type[ImageDecodeError], tuple[str, str]]:
        # Errors cross process boundaries (DataLoader workers, Ray); rebuild from both fields.
        return type(self), (self.path, self.reason)


@contextlib.contextmanager
def _pillow_limit_lifted() -> Iterator[None]:
    with _PILLOW_LIMIT_LOCK:
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def _describe_decode_failure(exc: BaseException) -> str:
    message = str(exc)
    if isinstance(exc, EOFError) or "truncated" in message.lower():
        return "truncated image data"
    return f"corrupt image data ({message})" if message else "corrupt image data"


def _to_rgb(image: Image.Image) -> Image.Image:
    """Normalise any decoded mode to 8-bit RGB; an RGB image is returned as it is (no copy)."""
    if image.mode in _SIXTEEN_BIT_MODES:
        # Pillow's own I;16 -> L conversion clips at 255 instead of scaling, which turns most of a
        # 16-bit image white. Scale 0..65535 to 0..255 with rounding.
        wide = np.asarray(image, dtype=np.int64)
        narrow = ((np.clip(wide, 0, 65535) * 255 + 32767) // 65535).astype(np.uint8)
        image = Image.fromarray(narrow)
    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info
    if has_alpha:
        # Fully transparent pixels carry arbitrary colours (often black, sometimes leftovers from
        # an editor), so dropping alpha would show them; white is what a viewer shows by default.
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    # convert() to the same mode copies every pixel (36 MB for a 12 Mpx photo).
    return image if image.mode == "RGB" else image.convert("RGB")


# EXIF orientations 2-8 flip and/or rotate; 1 is upright, and other values mean nothing.
_TURNED_ORIENTATIONS = frozenset(range(2, 9))


def _upright(image: Image.Image) -> Image.Image:
    """``image`` as a viewer shows it: transposed where its EXIF orientation asks, else the
    same object. ``ImageOps.exif_transpose`` copies every pixel even when there is nothing
    to turn, so it is called only when there is."""
    try:
        orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
        if orientation not in _TURNED_ORIENTATIONS:
            return image
        return ImageOps.exif_transpose(image)
    except Exception:
        # Broken EXIF is common in the wild and says nothing about the pixels; keep them as
        # stored rather than refusing an otherwise good image.
        return image


def _decode(stream: BinaryIO, label: str, max_pixels: int | None) -> Image.Image:
    _register_optional_openers()
    try:
        with _pillow_limit_lifted():
            opened = Image.open(stream, formats=DECODE_FORMATS)
    except UnidentifiedImageError:
        raise ImageDecodeError(label, "not a recognised image format") from None
    except Image.DecompressionBombError as exc:  # only if another thread changed the limit
        raise ImageDecodeError(label, f"image is over Pillow's pixel limit ({exc})") from None
    except (OSError, SyntaxError, ValueError, EOFError, struct.error) as exc:
        raise ImageDecodeError(label, _describe_decode_failure(exc)) from None

    with opened:
        width, height = opened.size
        pixels = width * height
        if max_pixels is not None and pixels > max_pixels:
            raise ImageDecodeError(
                label,
                f"image is {width}x{height} = {pixels} pixels, over the limit of {max_pixels}"
                " (raise max_pixels to allow it)",
            )
        pillow_limit = Image.MAX_IMAGE_PIXELS
        needs_lift = pillow_limit is not None and pixels > pillow_limit
        try:
            with _pillow_limit_lifted() if needs_lift else contextlib.nullcontext():
                opened.load()  # first frame only, for GIF and multi-page TIFF
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageDecodeError(label, f"image is over Pillow's pixel limit ({exc})") from None
        except (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error) as exc:
            raise ImageDecodeError(label, _describe_decode_failure(exc)) from None

        oriented = _upright(opened)  # read from the file object: TIFF keeps its tags there
        if oriented is opened:
            # A plain image on the decoded pixels, not a copy of them, detached from the file
            # about to close: what callers got when this was a copy (no seek, no format).
            oriented = opened._new(opened.im)
        try:
            return _to_rgb(oriented)
        except (OSError, ValueError) as exc:
            raise ImageDecodeError(label, f"cannot convert mode {oriented.mode} to RGB") from exc


def load_image(
    source: str | os.PathLike | bytes | BinaryIO,
    *,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    name: str | None = None,
) -> Image.Image:
    """Decode `source` into a fully loaded RGB image, upright, alpha composited over white.

    The pixel count is checked from the header, before any pixel data is decoded, so a small
    file that expands into gigabytes is refused cheaply. Every failure is an `ImageDecodeError`
    naming the file (or `name`, default "<bytes>", for bytes and streams). Streams are read from
    their current position to the end and left open.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        label = name or "<bytes>"
        data = bytes(source)
        if not data:
            raise ImageDecodeError(label, "empty file")
        return _decode(io.BytesIO(data), label, max_pixels)

    if isinstance(source, (str, os.PathLike)):
        label = os.fsdecode(source)
        try:
            with open(source, "rb") as handle:
                if os.fstat(handle.fileno()).st_size == 0:
                    raise ImageDecodeError(label, "empty file")
                return _decode(handle, label, max_pixels)
        except FileNotFoundError:
            raise ImageDecodeError(label, "file not found") from None
        except IsADirectoryError:
            raise ImageDecodeError(label, "is a directory, not a file") from None
        except PermissionError:
            raise ImageDecodeError(label, "permission denied") from None

    label = name or (source.name if isinstance(getattr(source, "name", None), str) else "<bytes>")
    # Pillow seeks to 0 of whatever it is given; copy from the current position so that a stream
    # holding several things (or a socket) is read as the caller expects.
    data = source.read()
    if not data:
        raise ImageDecodeError(label, "empty file")
    return _decode(io.BytesIO(data), label, max_pixels)


def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    """Float32 CHW tensor in [0, 1] from an 8-bit L, RGB or RGBA image."""
    if image.mode not in ("L", "RGB", "RGBA"):
        raise ValueError(
            f"pil_to_tensor needs an 8-bit L, RGB or RGBA image, got mode {image.mode}"
            " (load_image returns RGB)"
        )
    array = np.array(image, dtype=np.uint8, copy=True)  # writable, so torch shares it safely
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(array).permute(2, 0, 1).contiguous().to(torch.float32).div_(255.0)


def tensor_to_pil(tensor: torch.Tensor) -> Image.Image:
    """RGB uint8 image from a CHW float tensor in [0, 1] (1 or 3 channels; rounded, clamped)."""
    if tensor.ndim != 3 or tensor.shape[0] not in (1, 3):
        raise ValueError(f"expected a CHW tensor with 1 or 3 channels, got {tuple(tensor.shape)}")
    values = tensor.detach().to("cpu", torch.float32)
    if torch.isnan(values).any():
        raise ValueError("tensor contains NaN; cannot turn it into pixels")
    if values.shape[0] == 1:
        values = values.expand(3, -1, -1)
    return uint8_to_pil(values.clamp(0.0, 1.0).mul(255.0).round().to(torch.uint8))


ImageInput = str | os.PathLike | Image.Image | torch.Tensor


def as_pil(image: ImageInput) -> Image.Image:
    """An RGB PIL image from a file path (safely decoded), a PIL image or a CHW [0, 1] tensor:
    the inputs ``Detector.predict`` and friends accept. An RGB image is returned as it is:
    nothing downstream draws on it, and a copy of a phone photo is 36 MB."""
    if isinstance(image, Image.Image):
        return image if image.mode == "RGB" else image.convert("RGB")
    if isinstance(image, torch.Tensor):
        return tensor_to_pil(image)
    return load_image(image)


def pil_to_uint8(image: Image.Image) -> torch.Tensor:
    """RGB PIL image -> uint8 CHW tensor (kept uint8 until the device: 4x less to move)."""
    array = np.array(image.convert("RGB"), dtype=np.uint8, copy=True)
    return torch.from_numpy(array).permute(2, 0, 1)


def uint8_to_pil(tensor: torch.Tensor) -> Image.Image:
    """uint8 CHW RGB tensor -> PIL image (exact inverse of ``pil_to_uint8``)."""
    return Image.fromarray(tensor.permute(1, 2, 0).contiguous().numpy(), mode="RGB")


def as_unit_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 images, or float images in [0, 1], as float32 in [0, 1] (values checked).

    What the generator-based features take: a batch straight from the loader (uint8) or one
    already scaled; a float batch in another range ([-1, 1], 0..255) is refused rather than
    silently turned into different features.
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(images.shape)}")
    if images.dtype == torch.uint8:
        return images.float() / 255.0
    if not images.is_floating_point():
        raise TypeError(f"expected uint8 or float images, got {images.dtype}")
    images = images.float()
    if images.numel():
        lo, hi = images.aminmax()
        if lo < -1e-3 or hi > 1 + 1e-3:
            raise ValueError(
                f"expected float images in [0, 1], got [{lo.item():.3g}, {hi.item():.3g}]"
            )
    return images


def save_png(image: Image.Image | torch.Tensor, path: str | os.PathLike) -> Path:
    """Write a lossless PNG atomically, creating parent folders; returns the path.

    Atomic (`ldmdetect.io.files.atomic_path`) so that an interrupted run never leaves a
    half-written image that a resumed run would take as done. The temporary name starts with a
    dot, so `find_images` skips any that a crash leaves behind.
    """
    if isinstance(image, torch.Tensor):
        image = tensor_to_pil(image)
    target = Path(path)
    with atomic_path(target) as tmp:
        image.save(tmp, format="PNG")
    return target
