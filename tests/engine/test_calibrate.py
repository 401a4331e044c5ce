import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from ldmdetect.cli import app
from ldmdetect.config import DetectorConfig, UnresolvedThreshold
from ldmdetect.detector import Detector
from ldmdetect.engine.calibrate import calibrate_detector, calibration_record, source_of
from ldmdetect.engine.metrics import fpr_upper_bound


def test_record_counts_bounds_and_unresolved_thresholds():
    scores = np.random.default_rng(0).normal(size=500)
    sources = [f"s{i % 7}" for i in range(500)]
    thresholds, record = calibration_record(scores, (0.001, 0.01, 0.05), sources=sources)
    assert (record["n_real"], record["n_sources"]) == (500, 7)
    assert record["thresholds"]["fpr_0.001"] == {
        "fpr": 0.001,
        "needs_n_real": 999,
        "resolved": False,
    }
    assert set(thresholds) == {"0.5", "fpr_0.01", "fpr_0.05"}
    for key, fpr in (("fpr_0.01", 0.01), ("fpr_0.05", 0.05)):
        entry = record["thresholds"][key]
        flagged = int(np.sum(scores > thresholds[key]))
        # The stored threshold flags at most the share of its own reals the target allows...
        assert entry["flagged"] == flagged <= fpr * 500
        # ... and its record carries the Clopper-Pearson bound on that count.
        assert entry["fpr_upper_95"] == pytest.approx(fpr_upper_bound(flagged, 500))
        assert entry["fpr_upper_95"] > flagged / 500


def test_record_of_a_distance_has_no_raw_rule_and_counts_nothing_without_reals():
    thresholds, record = calibration_record(np.zeros(0), (0.01,), probabilistic=False)
    assert thresholds == {}
    assert record["thresholds"]["fpr_0.01"]["resolved"] is False


def test_source_is_the_first_folder_under_the_root(tmp_path):
    assert source_of(tmp_path / "phone" / "a" / "x.jpg", tmp_path) == f"{tmp_path}/phone"
    assert source_of(tmp_path / "x.jpg", tmp_path) == str(tmp_path)


def test_calibrate_detector_names_bad_files_and_keeps_the_scores(
    tmp_path, detector_dir, calibration_dir
):
    reals = tmp_path / "reals"
    shutil.copytree(calibration_dir, reals)
    broken = sorted(reals.iterdir())[0] / "broken.png"
    broken.write_bytes(b"not a PNG")
    (reals / "notes.txt").write_text("not an image")
    result = calibrate_detector(detector_dir, [reals], tmp_path / "out", device="cpu")
    assert list(result.errors) == [str(broken)]
    assert result.skipped == [str(reals / "notes.txt")]
    assert result.n_real == 120 and len(result.sources) == 6
    old = Detector.from_pretrained(detector_dir, device="cpu")
    new = Detector.from_pretrained(tmp_path / "out", device="cpu")
    files = sorted(calibration_dir.rglob("*.png"))
    scores = new.decision_function(files)
    # Only the thresholds move: the weights score every image exactly as before.
    np.testing.assert_array_equal(scores, old.decision_function(files))
    # On its own calibration set R the 1% threshold flags at most 1% of R.
    _, t = new.config.threshold(0.01)
    assert np.mean(scores > t) <= 0.01
    assert new.config.calibration["n_sources"] == 6
    assert new.config.training == old.config.training
    # Calibrated with 3 views per image: scans default to the views the thresholds hold for.
    three = calibrate_detector(detector_dir, [calibration_dir], tmp_path / "3", tries=3)
    assert three.config.default_tries == 3 and three.config.calibration["tries"] == 3
    assert Detector.from_pretrained(tmp_path / "3").config.default_tries == 3


def test_calibrate_cli_names_unreadable_files_and_writes_the_detector(
    tmp_path, detector_dir, calibration_dir
):
    reals = tmp_path / "reals"
    shutil.copytree(calibration_dir, reals)
    (reals / "bad.jpg").write_bytes(b"\xff\xd8 truncated")
    args = ["calibrate", "--detector", str(detector_dir), "--real", str(reals)]
    args += ["--output", str(tmp_path / "out"), "--device", "cpu", "--workers", "0"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1, result.output  # a file failed: named, the rest calibrated
    assert "bad.jpg" in result.output
    assert "fpr_0.001: unresolved (needs at least 999 reals, has 120)" in result.output
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["calibration"]["n_real"] == 120


def test_unresolved_threshold_is_refused_by_scan_with_what_it_needs(
    tmp_path, detector_dir, aligned_dir
):
    config = DetectorConfig.load(detector_dir)
    with pytest.raises(UnresolvedThreshold, match="120 real images and needs at least 999"):
        config.threshold(0.001)
    image = sorted((aligned_dir / "real").glob("*.png"))[0]
    result = CliRunner().invoke(
        app, ["scan", str(image), "--detector", str(detector_dir), "--fpr", "0.001"]
    )
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "needs at least 999" in lines[0]


def test_detectors_saved_before_calibration_records_are_judged_by_their_count():
    # A detector from an earlier version stored fpr_0.01 from 64 reals without a record:
    # its training summary says how many, and 64 cannot resolve 1%.
    legacy = DetectorConfig(
        thresholds={"0.5": 0.5, "fpr_0.01": 1e-5, "fpr_0.05": 1e-6},
        training={"threshold_calibration": "64 held-out real images"},
    )
    assert legacy.threshold(0.05) == ("fpr_0.05", 1e-6)
    with pytest.raises(UnresolvedThreshold, match="64 real images and needs at least 99"):
        legacy.threshold(0.01)
    assert legacy.resolved_fprs() == ["fpr_0.05"]


def test_an_aligned_dataset_recalibrates_a_family_heads_threshold(
    tmp_path, family_detector_dir, two_family_aligned_dir
):
    from ldmdetect.attribution import calibrate_family_threshold
    from ldmdetect.engine.reconstruct import read_aligned_dataset

    before = DetectorConfig.load(family_detector_dir)
    result = calibrate_detector(
        family_detector_dir, [two_family_aligned_dir], tmp_path / "out", device="cpu"
    )
    pairs = read_aligned_dataset(two_family_aligned_dir)
    # Only the real crops are reals, each counted for its source photo.
    assert result.n_real == len(pairs) == 12
    assert len(result.sources) == len({p.source for p in pairs})
    recon = [path for p in pairs for _, path in p.reconstructions]
    detector = Detector.from_pretrained(family_detector_dir, device="cpu")
    expected = calibrate_family_threshold(detector.predict_proba(recon))
    saved = DetectorConfig.load(tmp_path / "out")
    assert saved.family_threshold == pytest.approx(expected)
    assert saved.family_threshold != before.family_threshold  # training's came from 1/3 of them
    record = saved.calibration["families"]
    assert record["previous"] == before.family_threshold
    assert record["threshold_on"].startswith(f"{len(recon)} reconstructions")
    # Plain folders of reals leave training's family threshold as it was.
    plain = calibrate_detector(
        family_detector_dir, [two_family_aligned_dir / "real"], tmp_path / "plain", device="cpu"
    )
    assert plain.config.family_threshold == before.family_threshold
    assert "families" not in plain.config.calibration


def test_novelty_is_calibrated_on_the_scored_reals_at_their_views_in_one_pass(
    tmp_path, family_detector_dir, two_family_aligned_dir
):
    """The novelty threshold comes from the embeddings of the very reals the thresholds were
    set on, at the same views, from the scoring pass itself: an undecodable real drops out of
    both, and the reconstructions (scored in the same pass for the family threshold) never
    count as reals."""
    from ldmdetect.attribution import NOVELTY_FPR
    from ldmdetect.engine.reconstruct import read_aligned_dataset
    from ldmdetect.io.images import load_image

    pairs = read_aligned_dataset(two_family_aligned_dir)
    reals = tmp_path / "reals"
    reals.mkdir()
    for pair in pairs:
        shutil.copy(pair.real, reals / f"{pair.pair_id}.png")
    (reals / "broken.png").write_bytes(b"not a PNG")
    detector = Detector.from_pretrained(family_detector_dir, device="cpu")
    result = calibrate_detector(family_detector_dir, [reals], tmp_path / "out", tries=3)
    assert result.n_real == len(pairs) and str(reals / "broken.png") in result.errors
    good = sorted(p for p in reals.glob("*.png") if p.name != "broken.png")
    prepared = [detector.prepare(load_image(p), tries=3) for p in good]
    expected = detector.novelty.calibrated(detector.embeddings(prepared), NOVELTY_FPR)
    saved = Detector.from_pretrained(tmp_path / "out", device="cpu")
    assert saved.novelty.threshold == pytest.approx(expected.threshold, rel=1e-5)
    # Other images (the reconstructions of the same crops) would set another threshold.
    recon = [path for p in pairs for _, path in p.reconstructions]
    prepared = [detector.prepare(load_image(p), tries=3) for p in recon]
    other = detector.novelty.calibrated(detector.embeddings(prepared), NOVELTY_FPR)
    assert other.threshold != pytest.approx(expected.threshold, rel=1e-5)
    # The saved config records the novelty threshold it was written with (one save).
    record = saved.config.calibration["novelty"]
    assert record["threshold"] == pytest.approx(saved.novelty.threshold)
    assert record["n_real"] == len(pairs)
    # With an aligned dataset, reals and reconstructions in one pass: the novelty threshold
    # stays on the reals alone.
    aligned = calibrate_detector(
        family_detector_dir, [two_family_aligned_dir], tmp_path / "aligned", tries=3
    )
    again = Detector.from_pretrained(aligned.output, device="cpu")
    assert again.novelty.threshold == pytest.approx(expected.threshold, rel=1e-5)
    assert aligned.config.calibration["families"]["share_quantiles"]["0.01"] == pytest.approx(
        aligned.config.family_threshold
    )
