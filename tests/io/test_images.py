import io
import os
import pickle
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ldmdetect.io.images import (
    DECODE_FORMATS,
    DEFAULT_MAX_PIXELS,
    IMAGE_EXTENSIONS,
    ImageDecodeError,
    as_pil,
    as_unit_float,
    load_image,
    pil_to_tensor,
    save_png,
    sniff_format,
    tensor_to_pil,
)

RED, BLUE, WHITE = (255, 0, 0), (0, 0, 255), (255, 255, 255)


def _png_bytes(width: int, height: int, color_type: int, rows: bytes | None) -> bytes:
    """A 16-bit PNG written by hand: Pillow cannot write 16-bit RGB, and a header-only PNG
    (rows=None) claims any size without pixel data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 16, color_type, 0, 0, 0)
    body = chunk(b"IHDR", header)
    if rows is not None:
        body += chunk(b"IDAT", zlib.compress(rows))
    return b"\x89PNG\r\n\x1a\n" + body + chunk(b"IEND", b"")


def _gradient(width: int = 32, height: int = 24) -> Image.Image:
    x = np.linspace(0, 255, width, dtype=np.uint8)
    y = np.linspace(0, 255, height, dtype=np.uint8)
    array = np.stack(np.broadcast_arrays(x[None, :], y[:, None], 255 - x[None, :]), axis=-1)
    return Image.fromarray(np.ascontiguousarray(array))


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.parametrize(
    ("fmt", "suffix", "options"),
    [
        ("PNG", ".png", {}),
        ("BMP", ".bmp", {}),
        ("TIFF", ".tif", {}),
        ("WEBP", ".webp", {"lossless": True}),
    ],
)
def test_lossless_formats_decode_to_identical_rgb(tmp_path, fmt, suffix, options):
    original = _gradient()
    path = tmp_path / f"image{suffix}"
    original.save(path, fmt, **options)
    loaded = load_image(path)
    assert loaded.mode == "RGB"
    assert np.array_equal(np.asarray(loaded), np.asarray(original))


def test_jpeg_decodes_close_to_original(tmp_path):
    original = _gradient()
    path = tmp_path / "image.jpg"
    original.save(path, quality=95)
    loaded = load_image(path)
    difference = np.abs(np.asarray(loaded, float) - np.asarray(original, float))
    assert loaded.mode == "RGB" and loaded.size == original.size
    assert difference.mean() < 3


def test_sixteen_bit_grayscale_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 257 * 128, 65535, 300]], dtype=np.uint16)
    path = tmp_path / "gray16.png"
    Image.fromarray(values).save(path)
    assert Image.open(path).mode.startswith("I")  # really stored as 16-bit
    loaded = np.asarray(load_image(path))
    assert loaded[0, :, 0].tolist() == [0, 128, 255, 1]
    assert (loaded == loaded[..., :1]).all()  # gray stays gray


def test_sixteen_bit_rgb_is_scaled(tmp_path):
    pixels = np.array([[[65535, 0, 257 * 100], [0, 65535, 0]]], dtype=">u2")
    rows = b"".join(b"\x00" + row.tobytes() for row in pixels)  # filter type 0 per row
    path = tmp_path / "rgb16.png"
    path.write_bytes(_png_bytes(2, 1, color_type=2, rows=rows))
    assert np.asarray(load_image(path)).tolist() == [[[255, 0, 100], [0, 255, 0]]]


def test_palette_with_transparency_composites_over_white(tmp_path):
    palette_image = Image.new("P", (2, 1))
    palette_image.putpalette([*RED, *BLUE])  # index 0 is red but transparent
    palette_image.putpixel((1, 0), 1)
    path = tmp_path / "palette.png"
    palette_image.save(path, transparency=0)
    loaded = load_image(path)
    assert [loaded.getpixel((0, 0)), loaded.getpixel((1, 0))] == [WHITE, BLUE]


def test_plain_palette_image_becomes_rgb(tmp_path):
    palette_image = Image.new("P", (1, 1))
    palette_image.putpalette([*BLUE])
    path = tmp_path / "palette.gif"
    palette_image.save(path)
    assert load_image(path).getpixel((0, 0)) == BLUE


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_alpha_is_composited_over_white(tmp_path, mode):
    # A fully transparent black pixel, an opaque dark one and a half-transparent one.
    pixels = np.array([[[0, 0], [50, 255], [0, 128]]], dtype=np.uint8)
    gray_alpha = Image.fromarray(pixels, mode="LA")
    image = gray_alpha if mode == "LA" else gray_alpha.convert("RGBA")
    path = tmp_path / "alpha.png"
    image.save(path)
    loaded = np.asarray(load_image(path))[0, :, 0].tolist()
    assert loaded[0] == 255
    assert loaded[1] == 50
    assert abs(loaded[2] - 127) <= 1


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    path = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(path, quality=95)
    assert Image.open(path).mode == "CMYK"
    pixel = np.array(load_image(path).getpixel((8, 8)))
    assert np.abs(pixel - np.array(RED)).max() <= 3


def test_exif_orientation_is_applied(tmp_path):
    # Wide image, red left half and blue right half, tagged "rotate 90 degrees clockwise".
    image = Image.new("RGB", (40, 20), RED)
    image.paste(BLUE, (20, 0, 40, 20))
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "rotated.jpg"
    image.save(path, quality=95, exif=exif.tobytes())
    loaded = load_image(path)
    assert loaded.size == (20, 40)
    top, bottom = np.array(loaded.getpixel((10, 5))), np.array(loaded.getpixel((10, 35)))
    assert np.abs(top - RED).max() < 10 and np.abs(bottom - BLUE).max() < 10


# What each EXIF orientation asks a viewer to do to the stored pixels, written out in numpy
# (rows, columns) terms from the EXIF 2.3 table, independently of Pillow's transpose names.
_VIEWER = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],  # mirror left-right
    3: lambda a: a[::-1, ::-1],  # rotate 180
    4: lambda a: a[::-1, :],  # mirror top-bottom
    5: lambda a: a.transpose(1, 0, 2),  # mirror along the main diagonal
    6: lambda a: np.rot90(a, k=-1),  # rotate 90 clockwise
    7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),  # mirror along the anti-diagonal
    8: lambda a: np.rot90(a, k=1),  # rotate 90 counter-clockwise
}


def _blocks(columns: int = 3, rows: int = 2, side: int = 16) -> np.ndarray:
    """Stored pixels: a grid of flat, distinct colours (flat so JPEG keeps them)."""
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255), (255, 0, 255)]
    grid = np.array(colours[: columns * rows], dtype=np.uint8).reshape(rows, columns, 3)
    return grid.repeat(side, axis=0).repeat(side, axis=1)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_is_shown_as_a_viewer_shows_it(tmp_path, orientation):
    stored = _blocks()
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / f"o{orientation}.jpg"
    Image.fromarray(stored).save(path, quality=95, exif=exif.tobytes())
    expected = _VIEWER[orientation](stored)
    loaded = np.asarray(load_image(path)).astype(int)
    assert loaded.shape == expected.shape
    # Block centres only: JPEG blurs the edges between colours.
    centres = np.s_[8::16, 8::16]
    assert np.abs(loaded[centres] - expected[centres]).max() < 12
    if orientation != 1:  # the tag is spent: metadata saved with the image cannot turn it twice
        assert 0x0112 not in load_image(path).getexif()


def test_unknown_orientation_keeps_the_stored_pixels(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 9  # not in the EXIF table: says nothing about how to show the pixels
    path = tmp_path / "o9.png"
    Image.fromarray(_blocks()).save(path, exif=exif.tobytes())
    assert np.array_equal(np.asarray(load_image(path)), _blocks())


def _images_allocated(fn) -> int:
    """How many images Pillow allocates while ``fn`` runs: a copy is one more."""
    before = Image.core.get_stats()["new_count"]
    fn()
    return Image.core.get_stats()["new_count"] - before


@pytest.mark.parametrize(("orientation", "turns"), [(None, 0), (1, 0), (6, 1)])
def test_upright_rgb_is_decoded_once_and_not_copied(tmp_path, orientation, turns):
    # 12 Mpx phone photos are 36 MB of pixels each; every copy of them costs as much time as a
    # good part of the decode. Only a needed rotation may allocate beyond the decode itself.
    path = tmp_path / "photo.jpg"
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    _gradient(64, 48).save(path, quality=90, exif=exif.tobytes())

    def decode_only():
        with open(path, "rb") as handle:
            Image.open(handle).load()

    load_image(path)  # first use registers plugins
    assert _images_allocated(lambda: load_image(path)) == _images_allocated(decode_only) + turns


def test_loaded_image_is_detached_from_its_file(tmp_path):
    # No copy is made, but callers still get a plain image: no file to seek, no format.
    path = tmp_path / "photo.jpg"
    _gradient().save(path, quality=90)
    loaded = load_image(path)
    assert type(loaded) is Image.Image
    assert loaded.format is None
    assert np.array_equal(np.asarray(loaded), np.asarray(Image.open(path).convert("RGB")))


def test_as_pil_passes_rgb_images_through_and_converts_the_rest():
    rgb = _gradient()
    assert as_pil(rgb) is rgb
    gray = rgb.convert("L")
    assert as_pil(gray).mode == "RGB"
    assert np.array_equal(np.asarray(as_pil(gray))[..., 0], np.asarray(gray))


def test_tiff_orientation_is_applied(tmp_path):
    path = tmp_path / "rotated.tif"
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(_blocks()).save(path, exif=exif.tobytes())
    assert np.array_equal(np.asarray(load_image(path)), _VIEWER[6](_blocks()))


def test_gif_first_frame_is_used(tmp_path):
    path = tmp_path / "animated.gif"
    first, second = Image.new("RGB", (8, 8), RED), Image.new("RGB", (8, 8), BLUE)
    first.save(path, save_all=True, append_images=[second])
    assert Image.open(path).n_frames == 2
    assert load_image(path).getpixel((4, 4)) == RED


def test_content_decides_format_not_extension(tmp_path):
    path = tmp_path / "actually_png.jpg"
    _gradient().save(path, "PNG")
    assert np.array_equal(np.asarray(load_image(path)), np.asarray(_gradient()))


def test_bytes_and_stream_sources(tmp_path):
    buffer = io.BytesIO()
    _gradient().save(buffer, "PNG")
    data = buffer.getvalue()
    expected = np.asarray(_gradient())
    assert np.array_equal(np.asarray(load_image(data)), expected)
    stream = io.BytesIO(data)
    assert np.array_equal(np.asarray(load_image(stream)), expected)
    assert not stream.closed  # the caller's stream stays theirs


def _truncated(tmp_path: Path, fmt: str) -> Path:
    buffer = io.BytesIO()
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(buffer, fmt)
    path = tmp_path / f"cut.{fmt.lower()}"
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    return path


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_file(tmp_path, fmt):
    path = _truncated(tmp_path, fmt)
    with pytest.raises(ImageDecodeError) as caught:
        load_image(path)
    assert caught.value.reason == "truncated image data"
    assert caught.value.path == str(path)
    assert str(caught.value) == f"{path}: truncated image data"


def _error(source, **kwargs) -> ImageDecodeError:
    with pytest.raises(ImageDecodeError) as caught:
        load_image(source, **kwargs)
    return caught.value


@pytest.mark.parametrize(
    ("content", "reason"),
    [(b"", "empty file"), (b"just some text\n", "not a recognised image format")],
)
def test_unusable_files(tmp_path, content, reason):
    path = tmp_path / "bad.jpg"
    path.write_bytes(content)
    assert str(_error(path)) == f"{path}: {reason}"


def test_missing_file_and_directory(tmp_path):
    assert str(_error(tmp_path / "nope.png")) == f"{tmp_path / 'nope.png'}: file not found"
    assert str(_error(tmp_path)) == f"{tmp_path}: is a directory, not a file"


def test_bytes_and_stream_errors_use_the_given_name(tmp_path):
    assert str(_error(b"")) == "<bytes>: empty file"
    assert str(_error(b"hello", name="upload-17")) == "upload-17: not a recognised image format"
    assert str(_error(io.BytesIO(), name="upload-18")) == "upload-18: empty file"
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with open(text, "rb") as handle:  # an open file names itself
        assert _error(handle).path == str(text)


def test_pixel_limit_message(tmp_path):
    path = tmp_path / "small.png"
    _gradient(20, 20).save(path)
    with pytest.raises(ImageDecodeError) as caught:
        load_image(path, max_pixels=399)
    assert str(caught.value) == (
        f"{path}: image is 20x20 = 400 pixels, over the limit of 399 (raise max_pixels to allow it)"
    )
    assert load_image(path, max_pixels=400).size == (20, 20)


def test_pixel_limit_is_checked_from_the_header_before_decoding():
    # 20000x20000 with no pixel data at all: only a header check can give this reason.
    bomb = _png_bytes(20000, 20000, color_type=0, rows=None)
    with pytest.raises(ImageDecodeError) as caught:
        load_image(bomb, name="bomb.png")
    assert caught.value.reason == (
        f"image is 20000x20000 = 400000000 pixels, over the limit of {DEFAULT_MAX_PIXELS}"
        " (raise max_pixels to allow it)"
    )


def test_pillow_bomb_warning_never_leaks_and_max_pixels_none_disables_the_limit():
    # 12000^2 is over Pillow's warning threshold but within ours; 20000^2 is over Pillow's hard
    # limit. Neither has pixel data, so both must get as far as decoding and fail there.
    pillow_limit = Image.MAX_IMAGE_PIXELS
    for side, max_pixels in [(12000, DEFAULT_MAX_PIXELS), (20000, None)]:
        header_only = _png_bytes(side, side, color_type=0, rows=None)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with pytest.raises(ImageDecodeError) as caught:
                load_image(header_only, max_pixels=max_pixels)
        assert caught.value.reason.startswith("corrupt image data")
    assert pillow_limit == Image.MAX_IMAGE_PIXELS  # Pillow's global is restored


def test_no_file_handles_leak(tmp_path):
    good = tmp_path / "good.png"
    _gradient().save(good)
    bad = _truncated(tmp_path, "PNG")
    before = _open_fds()
    for _ in range(5):
        load_image(good)
        with pytest.raises(ImageDecodeError):
            load_image(bad)
    assert _open_fds() == before


def test_decode_error_survives_pickling():
    error = ImageDecodeError(Path("/data/x.png"), "empty file")
    restored = pickle.loads(pickle.dumps(error))
    assert (restored.path, restored.reason, str(restored)) == (
        "/data/x.png",
        "empty file",
        str(error),
    )
    assert isinstance(restored, ValueError)


def test_image_extensions_are_lowercase_with_dot():
    core = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"}
    assert core <= IMAGE_EXTENSIONS
    assert IMAGE_EXTENSIONS - core <= {".avif", ".heic", ".heif"}
    assert all(e == e.lower() and e.startswith(".") for e in IMAGE_EXTENSIONS)


def _encoded(fmt: str) -> bytes:
    """A small image in ``fmt`` (HEIF through pillow-heif, which Pillow cannot write)."""
    buffer = io.BytesIO()
    if fmt == "HEIF":
        import pillow_heif

        pillow_heif.from_pillow(_gradient()).save(buffer)
    else:
        _gradient().save(buffer, fmt)
    return buffer.getvalue()


@pytest.mark.parametrize("fmt", DECODE_FORMATS)
def test_sniff_format_names_every_decodable_format_from_its_header(fmt):
    data = _encoded(fmt)
    assert sniff_format(data[:16]) == fmt
    assert load_image(data).size == (32, 24)


@pytest.mark.parametrize(
    "header",
    [
        b"",
        b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n",
        b"<!doctype html>",
        b"\x00\x00\x01\x00\x01\x00\x10\x10",  # ICO: Pillow reads it, the allow-list does not
        b"RIFF\x00\x00\x00\x00WAVEfmt ",  # RIFF, but not WebP
        b"\x00\x00\x00\x18ftypmp42isom",  # ISO-BMFF, but a video
    ],
)
def test_sniff_format_refuses_what_load_image_refuses(header):
    assert sniff_format(header) is None


def test_as_unit_float_takes_uint8_or_unit_floats_and_refuses_other_ranges():
    pixels = torch.tensor([0, 51, 255], dtype=torch.uint8).view(1, 3, 1, 1).expand(2, 3, 4, 4)
    unit = as_unit_float(pixels)
    assert unit.dtype == torch.float32 and torch.equal(unit[0, :, 0, 0], torch.tensor([0, 0.2, 1]))
    torch.testing.assert_close(as_unit_float(unit.double()), unit, rtol=0, atol=0)
    assert as_unit_float(torch.empty(0, 3, 8, 8)).shape == (0, 3, 8, 8)
    with pytest.raises(ValueError, match=r"in \[0, 1\], got \[-1, 1\]"):
        as_unit_float(unit * 2 - 1)
    with pytest.raises(TypeError, match="int32"):
        as_unit_float(pixels.int())
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\), got \(3, 4, 4\)"):
        as_unit_float(unit[0])


def test_tensor_round_trip():
    image = _gradient()
    tensor = pil_to_tensor(image)
    assert tensor.dtype == torch.float32 and tensor.shape == (3, 24, 32)
    assert tensor.min() >= 0 and tensor.max() <= 1
    assert tensor[0, 0, -1] == 1.0  # red channel, top-right: x gradient reaches 255
    assert np.array_equal(np.asarray(tensor_to_pil(tensor)), np.asarray(image))


def test_tensor_to_pil_rounds_clamps_and_expands_gray():
    tensor = torch.tensor([[[-0.5, 0.4 / 255, 0.6 / 255, 2.0]]])
    image = tensor_to_pil(tensor)
    assert image.mode == "RGB"
    assert [image.getpixel((x, 0))[0] for x in range(4)] == [0, 0, 1, 255]
    assert image.getpixel((2, 0)) == (1, 1, 1)


def test_tensor_checks():
    with pytest.raises(ValueError, match="CHW"):
        tensor_to_pil(torch.zeros(2, 4, 4))
    with pytest.raises(ValueError, match="NaN"):
        tensor_to_pil(torch.full((3, 2, 2), float("nan")))
    with pytest.raises(ValueError, match="mode CMYK"):
        pil_to_tensor(Image.new("CMYK", (2, 2)))


def test_save_png_is_lossless_atomic_and_creates_folders(tmp_path):
    image = _gradient()
    target = tmp_path / "a" / "b" / "out.png"
    returned = save_png(image, target)
    assert returned == target
    assert os.listdir(target.parent) == ["out.png"]  # no temporary file left behind
    with Image.open(target) as written:
        assert written.format == "PNG"
        assert np.array_equal(np.asarray(written), np.asarray(image))
    save_png(pil_to_tensor(image), target)  # overwrite, from a tensor
    assert np.array_equal(np.asarray(load_image(target)), np.asarray(image))


def test_save_png_failure_leaves_nothing(tmp_path):
    target = tmp_path / "out.png"
    with pytest.raises(OSError):
        save_png(Image.new("CMYK", (2, 2)), target)  # PNG cannot store CMYK
    assert os.listdir(tmp_path) == []
