"""fakeinversion: extract -> train --features -> evaluate -> scan on tiny components, through
the CLI, and captions from a tiny BLIP-2 checkpoint."""

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from conftest import LEARNING_BACKBONE
from ldmdetect.cli import app
from ldmdetect.engine.extract import extract_features
from ldmdetect.features.cache import FeatureCache
from ldmdetect.generative.tiny_blip2 import write_tiny_blip2

FEATURE = ["inversion.image_size=64", "inversion.steps=2", "map_size=32"]


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
    """Real and fake folders (8 each) with one broken file among the reals."""
    return _real_and_fake(aligned_dir, tmp_path / "data", 8)


def _feature_options() -> list[str]:
    return [arg for option in FEATURE for arg in ("--feature", option)]


def test_extract_train_evaluate_scan_through_the_cli(
    aligned_dir, heldout_aligned_dir, tiny_pipeline_dir, calibration_dir, tmp_path
):
    runner = CliRunner()
    data = _real_and_fake(aligned_dir, tmp_path / "data")  # 24 + 24 crops of six photos
    heldout = _real_and_fake(heldout_aligned_dir, tmp_path / "heldout")  # of six others
    cache, det, report = tmp_path / "cache", tmp_path / "det", tmp_path / "report"
    common = ["--pipeline", str(tiny_pipeline_dir), "--captioner", "fixed:a photo"]
    extract = [
        "extract",
        str(data / "real"),
        str(data / "fake"),
        "--method",
        "fakeinversion",
        *common,
        *_feature_options(),
        "--output",
        str(cache),
        "--workers",
        "0",
        "--device",
        "cpu",
    ]
    result = runner.invoke(app, extract)
    assert result.exit_code == 1, result.output  # the broken file is reported, not fatal
    assert "48 computed" in result.output and "1 failed" in result.output
    stored = FeatureCache(cache)
    assert len(stored) == 48
    assert stored.settings["captioner"] == "fixed:a photo"
    entry = stored[next(iter(stored.keys()))]
    assert set(entry) == {"noise", "reconstruction"}
    assert all(v.shape == (3, 32, 32) and v.dtype == torch.uint8 for v in entry.values())
    # Resumes: nothing left to compute.
    result = runner.invoke(app, extract)
    assert "0 computed, 48 already cached" in result.output, result.output

    result = runner.invoke(
        app,
        [
            "train",
            "--method",
            "fakeinversion",
            "--real",
            str(data / "real"),
            "--fake",
            str(data / "fake"),
            *common,
            "--features",
            str(cache),
            *_feature_options(),
            # ResNet-10t on the whole map learns in a few epochs where mobilenetv3 does not
            "--backbone",
            LEARNING_BACKBONE,
            "--input-size",
            "64",
            "--epochs",
            "3",
            "--batch-size",
            "8",
            "--val-fraction",
            "0.25",
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
    assert config["method"] == "fakeinversion"
    assert config["feature"]["captioner"] == "fixed:a photo"
    assert config["feature"]["inversion"] == {"image_size": 64, "steps": 2, "guidance": 1.0}
    assert list(config["training"]["skipped_files"]) == [str(data / "real" / "broken.jpg")]
    assert config["components"]["unet"]["id"] == str(tiny_pipeline_dir)

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
    # The random tiny VAE's reconstructions lose the photos' colours and textures: trained on
    # six photos, the detector must separate those of six photos it has never seen.
    mean = json.loads((report / "metrics.json").read_text())["mean"]
    assert mean["n_real"] == 24 and mean["n_fake"] == 24
    assert mean["auc"] >= 0.9, mean["auc"]
    result = runner.invoke(
        app,
        ["scan", str(data / "real"), "--detector", str(det), "--device", "cpu", "--workers", "0"],
    )
    assert result.exit_code == 1  # one file failed
    assert "broken.jpg" in result.output


def test_unknown_captioner_is_refused_before_any_work(data, tiny_pipeline_dir, tmp_path):
    result = CliRunner().invoke(
        app,
        [
            "extract",
            str(data / "real"),
            "--method",
            "fakeinversion",
            "--pipeline",
            str(tiny_pipeline_dir),
            "--captioner",
            "gpt4",
            "--output",
            str(tmp_path / "cache"),
        ],
    )
    assert result.exit_code != 0 and "unknown captioner" in result.output
    assert not (tmp_path / "cache").exists()


def test_blip2_captions_condition_the_inversion(data, tiny_pipeline_dir, tmp_path):
    blip2 = write_tiny_blip2(tmp_path / "blip2")
    feature = {"inversion": {"image_size": 64, "steps": 2}, "map_size": 32}
    runs = {}
    for name, captioner in (("blip2", f"blip2:{blip2}"), ("fixed", "fixed:a photo")):
        summary = extract_features(
            "fakeinversion",
            [data / "fake"],
            tmp_path / name,
            pipeline=tiny_pipeline_dir,
            feature=feature | {"captioner": captioner},
            device="cpu",
        )
        assert summary.computed == 8 and not summary.errors
        runs[name] = FeatureCache(tmp_path / name)
    assert runs["blip2"].settings["captioner"] == f"blip2:{blip2}"
    key = next(iter(runs["blip2"].keys()))
    # Same image, other caption: another inversion.
    assert not runs["blip2"][key]["noise"].equal(runs["fixed"][key]["noise"])
