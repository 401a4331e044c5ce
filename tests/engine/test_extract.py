"""extract -> train --features -> evaluate -> scan, on tiny components, through the CLI."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import LEARNING_BACKBONE
from ldmdetect.cli import app
from ldmdetect.engine.extract import extract_features
from ldmdetect.features.cache import FeatureCache

LARE = {"lare": {"image_size": 64, "ensemble": 2}}


def _real_and_fake(aligned: Path, root: Path, count: int | None = None) -> Path:
    """real/ and fake/ (the tiny VAE's reconstructions) with one broken file among the reals."""
    for kind, source in (("real", "real"), ("fake", "reconstructed")):
        (root / kind).mkdir(parents=True)
        for f in sorted((aligned / source).glob("*.png"))[:count]:
            (root / kind / f.name).write_bytes(f.read_bytes())
    (root / "real" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    return root


@pytest.fixture()
def data(aligned_dir: Path, tmp_path: Path) -> Path:
    """12 reals and 12 fakes of three photos, and one broken real."""
    return _real_and_fake(aligned_dir, tmp_path / "data", 12)


def test_extract_caches_reports_bad_files_and_resumes(data, tiny_pipeline_dir, tmp_path):
    cache_dir = tmp_path / "cache"
    first = extract_features(
        "lare2", [data / "real"], cache_dir, pipeline=tiny_pipeline_dir, feature=LARE
    )
    assert first.computed == 12 and first.already_cached == 0
    assert list(first.errors) == [str(data / "real" / "broken.jpg")]
    assert "truncated" in first.errors[str(data / "real" / "broken.jpg")]
    reopened = FeatureCache(cache_dir)
    stored = {k: reopened[k]["lare"].clone() for k in list(reopened.keys())}
    assert len(stored) == 12 and all(v.shape == (4, 8, 8) for v in stored.values())
    # A second run over more data computes only what is new, and leaves old maps untouched.
    again = extract_features(
        "lare2", [data / "real", data / "fake"], cache_dir, pipeline=tiny_pipeline_dir, feature=LARE
    )
    assert again.already_cached == 12 and again.computed == 12
    cache = FeatureCache(cache_dir)
    assert len(cache) == 24
    for key, value in stored.items():
        assert cache[key]["lare"].equal(value)
    # Other settings are refused instead of mixed in.
    with pytest.raises(ValueError, match="other settings"):
        extract_features(
            "lare2",
            [data / "real"],
            cache_dir,
            pipeline=tiny_pipeline_dir,
            feature={"lare": {"image_size": 64, "ensemble": 3}},
        )


def test_extract_train_evaluate_scan_through_the_cli(
    aligned_dir, heldout_aligned_dir, tiny_pipeline_dir, calibration_dir, tmp_path
):
    runner = CliRunner()
    data = _real_and_fake(aligned_dir, tmp_path / "data")  # 24 + 24 crops of six photos
    heldout = _real_and_fake(heldout_aligned_dir, tmp_path / "heldout")  # of six others
    cache, det, report = tmp_path / "cache", tmp_path / "det", tmp_path / "report"
    lare_opts = ["--feature", "lare.image_size=64", "--feature", "lare.ensemble=2"]
    result = runner.invoke(
        app,
        [
            "extract",
            str(data / "real"),
            str(data / "fake"),
            "--method",
            "lare2",
            "--pipeline",
            str(tiny_pipeline_dir),
            "--output",
            str(cache),
            *lare_opts,
        ],
    )
    assert result.exit_code == 1, result.output  # the broken file is reported, not fatal
    assert "48 computed" in result.output and "1 failed" in result.output
    result = runner.invoke(
        app,
        [
            "train",
            "--method",
            "lare2",
            "--real",
            str(data / "real"),
            "--fake",
            str(data / "fake"),
            "--pipeline",
            str(tiny_pipeline_dir),
            "--features",
            str(cache),
            *lare_opts,
            # ResNet-10t on the whole 64 px crop learns in a few epochs where mobilenetv3
            # does by seed luck
            "--backbone",
            f"timm:{LEARNING_BACKBONE}",
            "--input-size",
            "64",
            "--epochs",
            "3",
            "--batch-size",
            "8",
            "--val-fraction",
            "0.34",
            "--device",
            "cpu",
            "--workers",
            "0",
            "--calibration-real",
            str(calibration_dir),
            "--output",
            str(det),
        ],
    )
    assert result.exit_code == 0, result.output
    config = json.loads((det / "config.json").read_text())
    assert config["method"] == "lare2" and config["feature"]["lare"]["image_size"] == 64
    # The broken real is reported in the training summary, and training went on without it.
    assert list(config["training"]["skipped_files"]) == [str(data / "real" / "broken.jpg")]
    assert config["components"]["unet"] == {
        "id": str(tiny_pipeline_dir),
        "subfolder": "unet",
        "revision": None,
    }
    result = runner.invoke(
        app,
        [
            "evaluate",
            "--detector",
            str(det),
            "--real",
            str(heldout / "real"),
            "--fake",
            str(heldout / "fake"),
            "--output",
            str(report),
            "--device",
            "cpu",
            "--workers",
            "0",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "broken.jpg" in result.output
    metrics = json.loads((report / "metrics.json").read_text())
    # The random tiny VAE's reconstructions lose the photos' colours and textures: trained on
    # six photos, the detector must separate those of six photos it has never seen.
    assert metrics["mean"]["n_real"] == 24 and metrics["mean"]["n_fake"] == 24
    assert metrics["mean"]["auc"] >= 0.9, metrics["mean"]["auc"]
    result = runner.invoke(
        app,
        ["scan", str(data / "real"), "--detector", str(det), "--device", "cpu", "--workers", "0"],
    )
    assert result.exit_code == 1  # one file failed
    assert "broken.jpg" in result.output
