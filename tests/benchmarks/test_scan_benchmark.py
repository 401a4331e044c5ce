"""benchmarks/scan.py: the phone-photo row writes tagged JPEGs and reports every rate and ratio."""

from __future__ import annotations

import argparse
from pathlib import Path
from types import ModuleType

import pytest
from PIL import Image

from conftest import TEST_BACKBONE
from ldmdetect.io.images import load_image

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "scan.py"


@pytest.fixture(scope="module")
def bench(import_script) -> ModuleType:
    return import_script(SCRIPT, "scan_benchmark")


def test_photos_are_tagged_and_every_fourth_needs_a_turn(bench: ModuleType, tmp_path) -> None:
    paths = bench.write_photos(tmp_path, 8, 48, 32)
    tags = [Image.open(p).getexif().get(0x0112) for p in paths]
    assert tags == [1, 1, 1, 6, 1, 1, 1, 8]
    assert [load_image(p).size for p in paths[2:4]] == [(48, 32), (32, 48)]


def test_photo_row_reports_rates_and_ratios(bench: ModuleType) -> None:
    args = argparse.Namespace(
        photo_images=4,
        photo_width=96,
        photo_height=64,
        photo_backbone=TEST_BACKBONE,
        photo_input_size=32,
        batch_size=4,
        repeats=1,
        device="cpu",
    )
    row = bench.photo_row(args)
    assert row["images"] == 4 and row["rotated_fraction"] == 0.25
    for key in ("decode_only", "load_only", "predict", "score_files"):
        assert row[f"{key}_images_per_s"] > 0
    expected = row["predict_images_per_s"] / row["decode_only_images_per_s"]
    assert row["predict_over_decode"] == pytest.approx(expected, rel=0.05)
