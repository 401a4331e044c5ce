"""ae's evidence map (``ldmdetect.methods.ae.evidence``): each region's first-order part in
the classifier's "not real" logit, tiled over the image, through the method's explain hook."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import LEARNING_BACKBONE
from ldmdetect.detector import Detector
from ldmdetect.engine.train import TrainConfig, train_detector
from ldmdetect.io.images import load_image
from ldmdetect.methods import get
from ldmdetect.methods.ae.evidence import (
    GRID,
    cell_sums,
    contributions,
    not_real_logit,
    tile_boxes,
    tile_map,
)

SIZE = 64  # the tiny detector's crop


@pytest.fixture(scope="module")
def detector(aligned_dir: Path, tmp_path_factory) -> Detector:
    """A tiny ae detector (ResNet-10t, 64 px) trained a few steps on photo crops and their
    tiny-VAE reconstructions."""
    out = tmp_path_factory.mktemp("ae-evidence")
    train_detector(
        [aligned_dir],
        out,
        TrainConfig(
            method="ae",
            backbone=LEARNING_BACKBONE,
            input_size=SIZE,
            epochs=3,
            batch_size=8,
            val_fraction=0.0,
            device="cpu",
            seed=0,
        ),
    )
    return Detector.from_pretrained(out, device="cpu")


@pytest.fixture(scope="module")
def pairs(heldout_aligned_dir: Path) -> list[tuple[Image.Image, Image.Image]]:
    """(photo crop, its reconstruction) for held-out photos the detector never saw."""
    reals = sorted((heldout_aligned_dir / "real").glob("*.png"))[::3]
    return [
        (load_image(p), load_image(heldout_aligned_dir / "reconstructed" / p.name)) for p in reals
    ]


def _halves(left: Image.Image, right: Image.Image) -> Image.Image:
    """The left half of ``left`` beside the right half of ``right``."""
    image = left.copy()
    image.paste(right.crop((SIZE // 2, 0, SIZE, SIZE)), (SIZE // 2, 0))
    return image


def _side_means(explained) -> tuple[np.ndarray, np.ndarray]:
    left = np.array([e.evidence[:, : SIZE // 2].mean() for e in explained])
    right = np.array([e.evidence[:, SIZE // 2 :].mean() for e in explained])
    return left, right


def test_the_map_finds_the_reconstructed_half(detector, pairs):
    """A photo crop whose right half went through the autoencoder: the evidence lies on that
    half; with the halves swapped, it moves to the left."""
    right_fake = detector.explain([_halves(real, fake) for real, fake in pairs])
    left, right = _side_means(right_fake)
    assert (right > left + 0.05).all(), (left, right)
    swapped = [_halves(fake, real) for real, fake in pairs]
    left, right = _side_means(detector.explain(swapped))
    assert (left > right + 0.05).all(), (left, right)


def test_the_map_covers_a_large_image_beyond_the_scored_crop(detector, pairs):
    """Three crops side by side, the reconstruction on the right: the centre crop that
    scoring reads is a photo's, yet the map is over the whole image and brightest there."""
    (real, fake), (other, _) = pairs[0], pairs[1]
    image = Image.new("RGB", (3 * SIZE + 10, SIZE + 7))
    for i, part in enumerate((real, other, fake)):
        image.paste(part, (i * (SIZE + 5), 0))
    evidence = detector.evidence_map(image)
    assert evidence.shape == (image.height, image.width)
    assert evidence.dtype == np.float32 and evidence.min() >= 0 and evidence.max() <= 1
    thirds = [evidence[:SIZE, i * (SIZE + 5) : i * (SIZE + 5) + SIZE].mean() for i in range(3)]
    assert thirds[2] > max(thirds[:2]) + 0.05, thirds
    np.testing.assert_array_equal(evidence, detector.evidence_map(image))  # deterministic


def test_small_images_get_a_map_of_their_own_size(detector, pairs):
    image = pairs[0][1].resize((40, 50))  # upscaled to the crop size to be scored
    (explained,) = detector.explain(image)
    assert explained.evidence.shape == (SIZE * 50 // 40, SIZE)  # over the upscaled image
    assert detector.evidence_map(image).shape == (50, 40)


def test_ae_shows_evidence_through_the_hook():
    assert get("ae").explains


def test_tiles_cover_the_image_flush_with_its_edges():
    boxes = tile_boxes(150, 64, 64)
    assert boxes == [(0, 0, 64, 64), (64, 0, 128, 64), (86, 0, 150, 64)]
    assert tile_boxes(64, 64, 64) == [(0, 0, 64, 64)]
    with pytest.raises(ValueError, match="smaller than the tile"):
        tile_boxes(63, 64, 64)


def test_not_real_logit_is_the_logit_of_one_minus_p_real():
    two = torch.randn(5, 1)
    torch.testing.assert_close(not_real_logit(two), two[:, 0].double())
    three = torch.randn(5, 3)
    p_real = three.double().softmax(dim=-1)[:, 0]
    torch.testing.assert_close(torch.sigmoid(not_real_logit(three)), 1 - p_real)


def test_a_tile_peaks_at_its_score_where_its_contribution_is_largest():
    cells = torch.zeros(GRID, GRID, dtype=torch.float64)
    cells[0, 0] = 2.0  # the top-left cell pushes the logit up
    cells[-1, -1] = -3.0  # the bottom-right one pulls it down: no evidence there
    score = torch.sigmoid(torch.tensor(1.5)).item()
    evidence = tile_map(torch.tensor(1.5, dtype=torch.float64), cells, SIZE)
    cell = SIZE // GRID
    assert evidence.shape == (SIZE, SIZE)
    assert evidence.max() == pytest.approx(score)
    assert (evidence[:cell, :cell] == evidence.max()).all() and evidence[cell, cell] < score
    assert (evidence[-cell:, -cell:] == 0).all() and evidence.min() == 0
    # where a cell adds nothing: between the two
    assert 0 < evidence[SIZE // 2, 0] < evidence[0, 0]
    # a tile the classifier calls real stays dark, however its cells fall
    assert tile_map(torch.tensor(-12.0, dtype=torch.float64), cells, SIZE).max() < 1e-5
    # cells all alike, none negative: evidence everywhere, at the score
    even = tile_map(torch.tensor(1.5, dtype=torch.float64), torch.ones_like(cells), SIZE)
    assert even.min() == pytest.approx(score)


def test_cells_sum_their_pixels_also_on_uneven_tiles():
    values = torch.arange(2 * 20 * 20, dtype=torch.float64).reshape(2, 20, 20)
    sums = cell_sums(values)
    assert sums.shape == (2, GRID, GRID)
    torch.testing.assert_close(sums.sum(dim=(1, 2)), values.sum(dim=(1, 2)))
    first = -(-20 // GRID)  # 20 px in GRID cells: the first run is the longer one
    assert sums[0, 0, 0] == values[0, :first, :first].sum()
    assert sums[0, 0, 0] != values[0, : first - 1, : first - 1].sum()
    small = GRID // 2  # fewer pixels than cells: a cell per pixel
    torch.testing.assert_close(cell_sums(values[:, :small, :small]), values[:, :small, :small])


def test_contributions_estimate_what_filling_a_cell_does_to_the_logit():
    """Against a linear "classifier" the first-order estimate is exact: a cell's part is the
    fall of the logit when the cell is filled with the tile's mean colour."""
    torch.manual_seed(0)
    weights = torch.randn(3, SIZE, SIZE, dtype=torch.float64)

    def logits_of(tiles):
        return (tiles.double() * weights).sum(dim=(1, 2, 3))[:, None]

    tile = torch.randint(0, 256, (1, 3, SIZE, SIZE), dtype=torch.uint8)
    logit, cells = contributions(tile, logits_of)
    filled = tile.double().clone()
    cell = SIZE // GRID
    filled[..., :cell, cell : 2 * cell] = tile.double().mean(dim=(2, 3), keepdim=True)
    fall = logit - logits_of(filled)[:, 0]
    assert cells[0, 0, 1].item() == pytest.approx(fall.item(), rel=1e-6)
    torch.testing.assert_close(logit, logits_of(tile)[:, 0])


def test_a_one_tile_map_peaks_at_the_detectors_score(detector, pairs):
    """A crop-sized image is one tile, the centre crop scoring reads: the map's brightest
    cell is the score itself."""
    for _, fake in pairs[:2]:
        (explained,) = detector.explain(fake)
        score = detector.decision_function(fake)[0]
        assert explained.evidence.max() == pytest.approx(score, abs=1e-5)


def test_k_class_classifiers_map_one_minus_p_real(pairs):
    """A family head ("real", then families): the scale is 1 - P(real), the score of methods
    without a "generated" class."""
    import timm

    from ldmdetect.methods import make_config
    from ldmdetect.methods.ae.evidence import explain_batch
    from ldmdetect.methods.ae.method import classify_crops

    torch.manual_seed(0)
    model = timm.create_model(LEARNING_BACKBONE, num_classes=3).eval()
    config = make_config("ae", backbone=LEARNING_BACKBONE, input_size=SIZE)
    method = get("ae")
    image = pairs[0][1]
    batch = method.collate([method.explain_transform(config)(image)])
    with torch.inference_mode():
        (explained,) = explain_batch(model, batch, config, classify_crops)
        logits = classify_crops(model, method.transform(config)(image)["crops"][None], config)
    p_real = logits.double().softmax(dim=-1)[0, 0, 0].item()
    assert explained.evidence.shape == (SIZE, SIZE)
    assert 0 < explained.evidence.max() <= 1 - p_real + 1e-6
