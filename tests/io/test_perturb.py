import numpy as np
import pytest
from PIL import Image

from ldmdetect.io.perturb import (
    PERTURBATIONS,
    Perturbation,
    blur,
    center_crop,
    jpeg,
    parse_perturbation,
    parse_perturbations,
    resize,
    webp,
)


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    """Smooth gradients plus noise: compressible structure and fine detail to lose."""
    rng = np.random.default_rng(0)
    x, y = np.meshgrid(np.linspace(0, 1, 64), np.linspace(0, 1, 48))
    base = np.stack([x, y, (x + y) / 2], axis=-1) * 200
    noisy = base + rng.normal(0, 20, base.shape)
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def _error(image_a: Image.Image, image_b: Image.Image) -> float:
    return float(np.abs(np.asarray(image_a, float) - np.asarray(image_b, float)).mean())


def test_jpeg_changes_pixels_more_at_lower_quality(photo):
    high, low = jpeg(photo, 95), jpeg(photo, 10)
    assert high.size == photo.size and high.mode == "RGB"
    assert 0 < _error(photo, high) < _error(photo, low)


def _block_phase(image: Image.Image) -> tuple[int, int]:
    """Where strong JPEG's 8x8 block edges fall: the column and row phase (mod 8) with the
    largest mean jump between neighbouring pixels."""
    pixels = np.asarray(image.convert("L"), float)
    cols = np.abs(np.diff(pixels, axis=1)).mean(axis=0)  # jump into column c + 1
    rows = np.abs(np.diff(pixels, axis=0)).mean(axis=1)
    phase_x = [cols[c::8].mean() for c in range(8)]
    phase_y = [rows[r::8].mean() for r in range(8)]
    return (int(np.argmax(phase_x)) + 1) % 8, (int(np.argmax(phase_y)) + 1) % 8


@pytest.mark.parametrize("offset", [(0, 0), (3, 5), (7, 1)])
def test_jpeg_grid_offset_moves_the_block_edges(photo, offset):
    # A block edge sits where the padded image's column is a multiple of 8: at -dx mod 8.
    coded = jpeg(photo, 5, grid_offset=offset)
    assert coded.size == photo.size
    assert _block_phase(coded) == ((-offset[0]) % 8, (-offset[1]) % 8)
    assert _error(coded, photo) > 5  # compressed, not the input handed back


def test_jpeg_grid_offset_is_checked(photo):
    with pytest.raises(ValueError, match="grid_offset"):
        jpeg(photo, 75, grid_offset=(8, 0))


def test_webp_changes_pixels_more_at_lower_quality(photo):
    high, low = webp(photo, 95), webp(photo, 10)
    assert high.size == photo.size and high.mode == "RGB"
    assert 0 < _error(photo, high) < _error(photo, low)


def test_jpeg_accepts_images_with_alpha(photo):
    assert jpeg(photo.convert("RGBA"), 90).mode == "RGB"


@pytest.mark.parametrize(
    ("factor", "expected"), [(0.5, (32, 24)), (1.5, (96, 72)), (0.001, (1, 1)), (1.0, (64, 48))]
)
def test_resize_sizes(photo, factor, expected):
    assert resize(photo, factor).size == expected


def test_blur_smooths_and_zero_is_identity(photo):
    blurred = blur(photo, 2.0)
    assert blurred.size == photo.size
    assert np.asarray(blurred, float).std() < np.asarray(photo, float).std()
    assert np.array_equal(np.asarray(blur(photo, 0)), np.asarray(photo))


def test_center_crop(photo):
    cropped = center_crop(photo, 32)
    assert cropped.size == (32, 32)
    assert np.array_equal(np.asarray(cropped), np.asarray(photo)[8:40, 16:48])
    assert center_crop(photo, 48).size == (48, 48)
    assert center_crop(photo, 100).size == photo.size  # smaller than the crop: unchanged
    assert center_crop(photo, 56).size == (56, 48)  # a short side is kept whole, never padded


def test_parse_single_steps():
    assert parse_perturbation("jpeg:75").steps == (("jpeg", 75.0),)
    assert parse_perturbation("webp:80").steps == (("webp", 80.0),)
    assert parse_perturbation("resize:0.5").steps == (("resize", 0.5),)
    assert parse_perturbation("blur:1.0").steps == (("blur", 1.0),)
    assert parse_perturbation("crop:224").steps == (("crop", 224.0),)
    assert parse_perturbation(" JPEG : 75 ").steps == (("jpeg", 75.0),)


def test_none_is_a_no_op(photo):
    identity = parse_perturbation("none")
    assert identity.steps == ()
    assert str(identity) == "none"
    assert np.array_equal(np.asarray(identity(photo)), np.asarray(photo))


def test_chain_applies_left_to_right(photo):
    assert parse_perturbation("resize:0.5+jpeg:75").steps == (("resize", 0.5), ("jpeg", 75.0))
    assert parse_perturbation("crop:32+resize:0.5")(photo).size == (16, 16)
    assert parse_perturbation("resize:0.5+crop:32")(photo).size == (32, 24)


def test_call_matches_the_ops(photo):
    chained = parse_perturbation("blur:1+jpeg:80")(photo)
    assert np.array_equal(np.asarray(chained), np.asarray(jpeg(blur(photo, 1), 80)))


@pytest.mark.parametrize(
    "spec",
    ["jpeg:75", "webp:80", "resize:0.5", "blur:1", "crop:224", "resize:0.5+jpeg:75", "none"],
)
def test_canonical_specs_round_trip(spec):
    assert str(parse_perturbation(spec)) == spec


@pytest.mark.parametrize(
    ("spec", "canonical"),
    [
        ("blur:1.0", "blur:1"),
        ("JPEG:075", "jpeg:75"),
        ("resize:0.1", "resize:0.1"),
        ("NONE", "none"),
    ],
)
def test_specs_are_printed_canonically(spec, canonical):
    perturbation = parse_perturbation(spec)
    assert str(perturbation) == canonical
    assert parse_perturbation(str(perturbation)) == perturbation


def test_unknown_kind_names_the_spec_and_the_known_kinds():
    with pytest.raises(ValueError) as caught:
        parse_perturbation("resize:0.5+sharpen:2")
    message = str(caught.value)
    assert "'resize:0.5+sharpen:2'" in message and "'sharpen'" in message
    assert all(kind in message for kind in ("blur", "crop", "jpeg", "resize", "webp"))


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("jpeg:0", "1 to 100"),
        ("jpeg:101", "1 to 100"),
        ("jpeg:75.5", "1 to 100"),
        ("webp:0", "1 to 100"),
        ("resize:-1", "> 0"),
        ("resize:0", "> 0"),
        ("resize:inf", "> 0"),
        ("blur:x", "'x' is not a number"),
        ("blur:-1", ">= 0"),
        ("blur:nan", ">= 0"),
        ("crop:0", ">= 1"),
        ("crop:22.5", "whole number"),
        ("jpeg", "needs a value"),
        ("jpeg:", "needs a value"),
        ("", "empty"),
        ("jpeg:75+", "unknown kind ''"),
    ],
)
def test_bad_specs_are_refused_clearly(spec, fragment):
    with pytest.raises(ValueError) as caught:
        parse_perturbation(spec)
    assert fragment in str(caught.value)


def test_ops_validate_their_arguments_too(photo):
    with pytest.raises(ValueError, match="1 to 100"):
        jpeg(photo, 0)
    with pytest.raises(ValueError, match="> 0"):
        resize(photo, 0)
    with pytest.raises(ValueError, match="unknown perturbation"):
        Perturbation((("sharpen", 1.0),))


def test_parse_perturbations_and_the_table():
    sweep = parse_perturbations(["none", "jpeg:90", "blur:2"])
    assert [str(p) for p in sweep] == ["none", "jpeg:90", "blur:2"]
    assert set(PERTURBATIONS) == {"jpeg", "webp", "resize", "blur", "crop"}
    assert PERTURBATIONS["crop"] is center_crop


def test_perturbations_are_hashable_values():
    assert len({parse_perturbation("jpeg:75"), parse_perturbation("JPEG:75.0")}) == 1
