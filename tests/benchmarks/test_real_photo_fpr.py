"""benchmarks/real_photo_fpr.py on a corpus made here: crops per condition on the JPEG grid,
shares at the stored thresholds per source and per resolution bucket, AUC against fakes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ldmdetect.io.samples import sample_photos

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "real_photo_fpr.py"


@pytest.fixture(scope="module")
def bench(import_script):
    return import_script(SCRIPT, "real_photo_fpr_benchmark")


def _corpus(root: Path) -> Path:
    files = []
    for i, (name, path) in enumerate(sample_photos()[:3]):
        image = Image.open(path).convert("RGB")
        if i == 0:  # one photo over 1 Mpx, so two resolution buckets are filled
            image = image.resize((image.width * 3, image.height * 3))
        target = root / "test" / f"source{i % 2}" / f"{name}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        image.save(target, quality=90)
        files.append(
            {
                "path": target.relative_to(root).as_posix(),
                "source": f"source{i % 2}",
                "split": "test",
                "megapixels": image.width * image.height / 1e6,
            }
        )
    (root / "manifest.json").write_text(json.dumps({"files": files}))
    return root


def test_benchmark_counts_the_test_photos_at_the_stored_thresholds(
    bench, tmp_path, detector_dir, aligned_dir
):
    photos = _corpus(tmp_path / "photos")
    report = bench.main(
        [
            *("--photos", str(photos), "--detector", str(detector_dir)),
            *("--generated", str(aligned_dir / "reconstructed"), "--per-photo", "3"),
            *("--work", str(tmp_path / "work"), "--output", str(tmp_path / "out.json")),
        ]
    )
    assert json.loads((tmp_path / "out.json").read_text()) == json.loads(json.dumps(report))
    assert report["setup"]["crops"]["native"] == 9
    assert report["setup"]["buckets"]["1-4 Mpx"] == 3
    result = report["results"][detector_dir.name]
    assert set(result) >= {"native", "jpeg:85", "downscaled:1024", "calibration"}
    for condition in ("native", "jpeg:85", "downscaled:1024"):
        one = result[condition]["fpr_0.01"]
        assert sum(f for f, _ in one["per_source"].values()) == one["flagged"]
        assert sum(n for _, n in one["per_bucket"].values()) == result[condition]["n"]
        assert 0.0 <= result[condition]["auc_vs_generated"] <= 1.0
    crops = sorted((tmp_path / "work" / "crops" / "native").rglob("*.png"))
    assert all(Image.open(c).size == (128, 128) for c in crops)
    # Native crops are the photo's decoded pixels, cut on its 16-pixel JPEG grid.
    first = Image.open(photos / "test" / "source1" / f"{sample_photos()[1][0]}.jpg").convert("RGB")
    sample = np.asarray(Image.open(next(c for c in crops if sample_photos()[1][0] in c.name)))
    hits = [
        (x, y)
        for y in range(0, first.height - 127, 16)
        for x in range(0, first.width - 127, 16)
        if np.array_equal(np.asarray(first.crop((x, y, x + 128, y + 128))), sample)
    ]
    assert hits
    assert (
        result["jpeg:85"]["fpr_0.001"] == "unresolved" if "fpr_0.001" in result["jpeg:85"] else True
    )
