import numpy as np
import pytest
from PIL import Image

from ldmdetect.io.crops import (
    CROP_POLICIES,
    center_box,
    crop,
    crop_boxes,
    ensure_min_size,
    fit_short_side,
    grid_boxes,
    group_by_size,
    n_try_boxes,
    random_boxes,
)


def _inside(box, width, height, size):
    left, top, right, bottom = box
    fits = min(left, top) >= 0 and right <= width and bottom <= height
    return fits and right - left == size and bottom - top == size


@pytest.mark.parametrize(
    ("size", "expected"), [((100, 50), (128, 64)), ((50, 100), (64, 128)), ((30, 30), (64, 64))]
)
def test_ensure_min_size_upscales_short_side(size, expected):
    image = Image.new("RGB", size)
    assert ensure_min_size(image, 64).size == expected


def test_ensure_min_size_keeps_long_side_at_least_size():
    # 1000x999 to 1000: rounding the long side must not drop it under the short side.
    assert min(ensure_min_size(Image.new("L", (999, 998)), 1000).size) == 1000


def test_ensure_min_size_is_identity_when_big_enough():
    image = Image.new("RGB", (64, 80))
    assert ensure_min_size(image, 64) is image


def test_center_box():
    assert center_box(100, 60, 40) == (30, 10, 70, 50)
    assert center_box(41, 40, 40) == (0, 0, 40, 40)  # odd margin rounds towards top-left
    assert center_box(40, 40, 40) == (0, 0, 40, 40)


@pytest.mark.parametrize(
    "call",
    [
        lambda: center_box(30, 100, 40),
        lambda: random_boxes(100, 30, 40, 3, np.random.default_rng(0)),
        lambda: grid_boxes(30, 30, 40, 2),
        lambda: crop_boxes(30, 30, 40, policy="center"),
        lambda: n_try_boxes(39, 100, 40, 10),
    ],
)
def test_box_functions_refuse_images_smaller_than_the_crop(call):
    with pytest.raises(ValueError, match="ensure_min_size"):
        call()


def test_random_boxes_in_bounds_reproducible_and_varied():
    boxes = random_boxes(300, 200, 64, 50, np.random.default_rng(7))
    assert len(boxes) == 50
    assert all(_inside(box, 300, 200, 64) for box in boxes)
    assert boxes == random_boxes(300, 200, 64, 50, np.random.default_rng(7))
    assert len(set(boxes)) > 40
    assert random_boxes(300, 200, 64, 0, np.random.default_rng(7)) == []


def test_random_boxes_reach_every_edge():
    boxes = random_boxes(70, 66, 64, 200, np.random.default_rng(0))
    lefts, tops = {box[0] for box in boxes}, {box[1] for box in boxes}
    assert lefts == set(range(7)) and tops == set(range(3))


def test_random_boxes_when_image_equals_crop():
    assert set(random_boxes(64, 64, 64, 5, np.random.default_rng(0))) == {(0, 0, 64, 64)}


def test_grid_four_boxes_are_the_corners_of_a_square():
    assert set(grid_boxes(100, 100, 50, 4)) == {
        (0, 0, 50, 50),
        (50, 0, 100, 50),
        (0, 50, 50, 100),
        (50, 50, 100, 100),
    }


@pytest.mark.parametrize("n", [1, 2, 3, 5, 7, 10, 16])
@pytest.mark.parametrize(("width", "height"), [(256, 256), (640, 256), (256, 900), (300, 257)])
def test_grid_gives_n_boxes_in_bounds_deterministically(width, height, n):
    boxes = grid_boxes(width, height, 224, n)
    assert len(boxes) == n
    assert all(_inside(box, width, height, 224) for box in boxes)
    assert boxes == grid_boxes(width, height, 224, n)


def test_grid_spreads_over_the_whole_image():
    boxes = grid_boxes(1000, 400, 100, 10)
    assert len(set(boxes)) == 10
    assert min(box[0] for box in boxes) == 0 and max(box[2] for box in boxes) == 1000
    assert min(box[1] for box in boxes) == 0 and max(box[3] for box in boxes) == 400


def test_grid_one_box_is_the_center():
    assert grid_boxes(300, 200, 64, 1) == [center_box(300, 200, 64)]


def test_grid_on_a_strip_uses_one_row_or_one_column():
    assert [box[0] for box in grid_boxes(400, 64, 64, 3)] == [0, 168, 336]
    assert [box[1] for box in grid_boxes(64, 400, 64, 3)] == [0, 168, 336]


def test_crop_boxes_policies():
    rng = np.random.default_rng(3)
    assert crop_boxes(100, 80, 32, policy="center", n=3) == [center_box(100, 80, 32)] * 3
    assert crop_boxes(100, 80, 32, policy="grid", n=4) == grid_boxes(100, 80, 32, 4)
    expected = random_boxes(100, 80, 32, 5, np.random.default_rng(3))
    assert crop_boxes(100, 80, 32, policy="random", n=5, rng=rng) == expected
    assert CROP_POLICIES == ("center", "random", "grid")


def test_crop_boxes_unknown_policy_lists_valid_ones():
    with pytest.raises(ValueError, match=r"'middle'.*center, random, grid"):
        crop_boxes(100, 100, 32, policy="middle")


def test_crop_boxes_random_needs_an_explicit_rng():
    with pytest.raises(ValueError, match="rng"):
        crop_boxes(100, 100, 32, policy="random", n=2)


def test_n_try_boxes():
    assert n_try_boxes(300, 200, 64, 1) == [center_box(300, 200, 64)]
    ten = n_try_boxes(300, 200, 64, 10)
    assert len(ten) == 10 and len(set(ten)) > 1
    assert all(_inside(box, 300, 200, 64) for box in ten)
    assert ten == n_try_boxes(300, 200, 64, 10)  # same size, same boxes
    assert ten != n_try_boxes(300, 200, 64, 10, seed=1)
    with pytest.raises(ValueError, match="tries"):
        n_try_boxes(300, 200, 64, 0)


def test_crop_returns_the_box_pixels():
    array = np.arange(20 * 10, dtype=np.uint8).reshape(10, 20)
    image = Image.fromarray(array)
    cropped = crop(image, (5, 2, 9, 8))
    assert cropped.size == (4, 6)
    assert np.array_equal(np.asarray(cropped), array[2:8, 5:9])


@pytest.mark.parametrize("box", [(-1, 0, 4, 4), (0, 0, 21, 4), (0, 0, 4, 11), (5, 5, 5, 8)])
def test_crop_refuses_boxes_outside_the_image(box):
    with pytest.raises(ValueError, match="not inside"):
        crop(Image.new("L", (20, 10)), box)


def test_group_by_size():
    sizes = [(64, 64), (32, 48), (64, 64), (64, 64), (32, 48), (64, 64), (10, 10)]
    assert group_by_size(sizes, batch_size=3) == [[0, 2, 3], [5], [1, 4], [6]]
    assert group_by_size(sizes, batch_size=100) == [[0, 2, 3, 5], [1, 4], [6]]
    assert group_by_size([], batch_size=2) == []
    assert group_by_size([(4, 8), (8, 4)], batch_size=2) == [[0], [1]]  # (w, h) is ordered
    with pytest.raises(ValueError, match="batch_size"):
        group_by_size(sizes, batch_size=0)


def test_aligned_views_sit_on_the_grid_and_replay_a_seed():
    import torch

    from ldmdetect.io.crops import aligned_views

    whole = torch.arange(3 * 64 * 64, dtype=torch.int32).view(3, 64, 64).to(torch.uint8)
    views = aligned_views(whole, 40, step=8, tries=6, try_seed=2)
    assert views["crops"].shape == (6, 3, 40, 40) and not views["flips"].any()
    for view, (top, left) in zip(views["crops"], views["offsets"].tolist(), strict=True):
        assert top % 8 == 0 and left % 8 == 0
        assert torch.equal(view, whole[:, top : top + 40, left : left + 40])
    assert torch.equal(
        views["offsets"], aligned_views(whole, 40, step=8, tries=6, try_seed=2)["offsets"]
    )
    assert aligned_views(whole, 40, step=8)["offsets"].tolist() == [[8, 8]]


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ((1000, 600), (427, 256)),  # one box halving (600 >= 512) to 500x300, then bicubic
        ((600, 1000), (256, 427)),
        ((2100, 2048), (262, 256)),  # three halvings to 262x256: no bicubic step left
        ((100, 80), (320, 256)),  # small images are upscaled
    ],
)
def test_fit_short_side_lands_the_short_side_on_size(size, expected):
    assert fit_short_side(Image.new("RGB", size), 256).size == expected


def test_fit_short_side_halves_with_a_box_filter_then_bicubic():
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (600, 1000, 3), dtype=np.uint8))
    halved = image.resize((500, 300), Image.Resampling.BOX)
    expected = halved.resize((427, 256), Image.Resampling.BICUBIC)
    assert np.array_equal(np.asarray(fit_short_side(image, 256)), np.asarray(expected))
    same = Image.new("RGB", (300, 256))
    assert fit_short_side(same, 256) is same
    with pytest.raises(ValueError, match="at least 1"):
        fit_short_side(image, 0)
