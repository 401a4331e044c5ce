import re
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from ldmdetect.cli import app
from ldmdetect.config import DetectorConfig, UnresolvedThreshold
from ldmdetect.detector import Detector
from ldmdetect.engine.ensemble import ensemble_detectors
from ldmdetect.engine.reconstruct import read_aligned_dataset


def test_an_ensemble_scores_its_members_mean_probability_and_is_calibrated_anew(
    tmp_path, family_detector_dir, second_family_detector_dir, two_family_aligned_dir
):
    members = [family_detector_dir, second_family_detector_dir]
    result = ensemble_detectors(
        members, tmp_path / "ens", reals=[two_family_aligned_dir], device="cpu"
    )
    pairs = read_aligned_dataset(two_family_aligned_dir)
    images = [p.real for p in pairs[:3]] + [
        path for p in pairs[:3] for _, path in p.reconstructions
    ]
    alone = [Detector.from_pretrained(m, device="cpu").predict_proba(images) for m in members]
    assert not np.allclose(alone[0], alone[1])  # two seeds, two different networks
    ensemble = Detector.from_pretrained(tmp_path / "ens", device="cpu")
    assert ensemble.config.members == 2 and ensemble.classes == ("real", "sd-4ch", "flux-16ch")
    np.testing.assert_allclose(ensemble.predict_proba(images), np.mean(alone, axis=0), atol=1e-5)
    # Thresholds, family threshold and novelty threshold are the ensemble's own, set on the
    # aligned dataset's reals and reconstructions, not copied from a member.
    config = ensemble.config
    assert config.calibration["n_real"] == len(pairs)
    assert "fpr_0.05" in config.calibration["thresholds"]  # 12 reals: recorded, unresolved
    assert config.family_threshold is not None and "families" in config.calibration
    assert config.family_threshold != DetectorConfig.load(family_detector_dir).family_threshold
    assert len(ensemble.novelty.blocks) == 2 and ensemble.novelty.threshold is not None
    assert [m["directory"] for m in config.training["ensemble_of"]] == [str(m) for m in members]
    assert len(ensemble.attribute(images)) == len(images)
    assert result.detector.config.thresholds == config.thresholds


def test_without_reals_the_ensemble_is_saved_uncalibrated_and_says_so(
    tmp_path, family_detector_dir, second_family_detector_dir, two_family_aligned_dir
):
    result = ensemble_detectors(
        [family_detector_dir, second_family_detector_dir], tmp_path / "ens", device="cpu"
    )
    assert result.detector.config.thresholds == {"0.5": 0.5}
    assert result.detector.config.family_threshold is None
    with pytest.raises((UnresolvedThreshold, ValueError), match="threshold"):
        result.detector.predict([read_aligned_dataset(two_family_aligned_dir)[0].real], fpr=0.01)
    # An ensemble and one more detector: three networks.
    three = ensemble_detectors(
        [tmp_path / "ens", family_detector_dir], tmp_path / "three", device="cpu"
    )
    assert three.detector.config.members == 3 and len(three.detector.novelty.blocks) == 3


def test_members_that_read_or_answer_differently_are_refused_by_name(
    tmp_path, family_detector_dir, detector_dir
):
    with pytest.raises(ValueError, match=rf"{re.escape(str(detector_dir))}: (backbone|families)"):
        ensemble_detectors([family_detector_dir, detector_dir], tmp_path / "ens", device="cpu")
    with pytest.raises(ValueError, match="two or more networks"):
        ensemble_detectors([family_detector_dir], tmp_path / "one", device="cpu")
    assert not (tmp_path / "ens").exists() and not (tmp_path / "one").exists()


def test_ensemble_cli_combines_and_calibrates(
    tmp_path, family_detector_dir, second_family_detector_dir, two_family_aligned_dir
):
    out = tmp_path / "ens"
    args = ["ensemble", str(family_detector_dir), str(second_family_detector_dir)]
    result = CliRunner().invoke(
        app, [*args, "--output", str(out), "--real", str(two_family_aligned_dir)]
    )
    assert result.exit_code == 0, result.output
    assert "ensemble of 2 networks" in result.output and "real images" in result.output
    assert DetectorConfig.load(out).members == 2
    result = CliRunner().invoke(app, [*args, "--output", str(tmp_path / "raw")])
    assert result.exit_code == 0 and "uncalibrated" in result.output
    result = CliRunner().invoke(app, ["ensemble", str(family_detector_dir), "--output", str(out)])
    assert result.exit_code != 0 and "two or more networks" in result.output


def test_networks_trained_channels_last_score_channels_last_as_members_too():
    from ldmdetect.detector import _trained_channels_last

    def member(last: bool) -> dict:
        return {"directory": "d", "training": {"config": {"channels_last": last}}}

    def ensemble(*members: dict) -> dict:
        return {"directory": "e", "training": {"ensemble_of": list(members)}}

    assert _trained_channels_last(DetectorConfig(training=ensemble(member(True))["training"]))
    assert not _trained_channels_last(
        DetectorConfig(training=ensemble(member(False), member(False))["training"])
    )
    nested = ensemble(ensemble(member(False), member(True)), member(False))
    assert _trained_channels_last(DetectorConfig(training=nested["training"]))


def test_nothing_is_written_for_a_repeated_member_an_output_among_them_or_missing_reals(
    tmp_path, family_detector_dir, second_family_detector_dir
):
    pair = [family_detector_dir, second_family_detector_dir]
    with pytest.raises(ValueError, match="given twice"):
        ensemble_detectors([*pair, family_detector_dir], tmp_path / "a", device="cpu")
    with pytest.raises(ValueError, match="is one of the members"):
        ensemble_detectors(pair, second_family_detector_dir, device="cpu")
    with pytest.raises(ValueError, match="no-such-folder: no such file or folder"):
        ensemble_detectors(pair, tmp_path / "b", reals=[tmp_path / "no-such-folder"])
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_plain_reals_leave_no_family_threshold_and_say_so(
    tmp_path, family_detector_dir, second_family_detector_dir, two_family_aligned_dir
):
    with pytest.warns(UserWarning, match="no family threshold"):
        result = ensemble_detectors(
            [family_detector_dir, second_family_detector_dir],
            tmp_path / "ens",
            reals=[two_family_aligned_dir / "real"],
            device="cpu",
        )
    assert result.detector.config.family_threshold is None
    assert result.detector.novelty.threshold is not None  # any reals set the novelty threshold


def test_a_member_without_novelty_statistics_leaves_none_not_a_stale_file(
    tmp_path, family_detector_dir, second_family_detector_dir
):
    from ldmdetect.attribution import NOVELTY_NAME

    bare = tmp_path / "bare"
    shutil.copytree(second_family_detector_dir, bare)
    (bare / NOVELTY_NAME).unlink()
    out = tmp_path / "ens"
    shutil.copytree(family_detector_dir, out)  # an earlier detector's novelty file is there
    with pytest.warns(UserWarning, match="no novelty statistics"):
        result = ensemble_detectors([family_detector_dir, bare], out, device="cpu")
    assert result.detector.novelty is None and not (out / NOVELTY_NAME).exists()


def test_a_directory_whose_parts_disagree_is_refused_by_file(
    tmp_path, family_detector_dir, second_family_detector_dir
):
    import json

    from ldmdetect.attribution import NOVELTY_NAME
    from ldmdetect.detector import DetectorLoadError

    out = tmp_path / "ens"
    ensemble_detectors([family_detector_dir, second_family_detector_dir], out, device="cpu")
    config = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps(config | {"members": 0}))
    with pytest.raises(DetectorLoadError, match=r"config\.json: ae cannot hold 0 networks"):
        Detector.from_pretrained(out, device="cpu")
    (out / "config.json").write_text(json.dumps(config))
    shutil.copy(family_detector_dir / NOVELTY_NAME, out / NOVELTY_NAME)  # one network's
    with pytest.raises(DetectorLoadError, match=r"novelty\.safetensors: novelty statistics of 1"):
        Detector.from_pretrained(out, device="cpu")
