import dataclasses
import json

import pytest

from ldmdetect.config import DetectorConfig, fpr_key


def test_round_trip_through_json(tmp_path):
    config = DetectorConfig(
        backbone="resnet50",
        input_size=224,
        thresholds={"0.5": 0.5, "fpr_0.01": 0.93},
        training={"epochs": 3},
    )
    config.save(tmp_path)
    loaded = DetectorConfig.load(tmp_path)
    assert loaded == config
    assert isinstance(loaded.mean, tuple)
    assert json.loads((tmp_path / "config.json").read_text())["backbone"] == "resnet50"


def test_threshold_lookup():
    config = DetectorConfig(thresholds={"0.5": 0.5, fpr_key(0.01): 0.8})
    assert config.threshold(None) == ("0.5", 0.5)
    assert config.threshold(0.01) == ("fpr_0.01", 0.8)
    with pytest.raises(ValueError, match=r"FPR 0.001 .*calibrated: fpr_0.01"):
        config.threshold(0.001)


def test_a_config_is_never_written_into_a_step_makes_a_new_one():
    config = DetectorConfig(thresholds={"0.5": 0.5, fpr_key(0.01): 0.8})
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.thresholds = {"0.5": 0.5}  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.family_threshold = 0.3  # type: ignore[misc]
    recalibrated = dataclasses.replace(
        config, thresholds=config.thresholds | {fpr_key(0.01): 0.9}, default_tries=4
    )
    assert recalibrated.threshold(0.01) == ("fpr_0.01", 0.9) and recalibrated.default_tries == 4
    assert config.threshold(0.01) == ("fpr_0.01", 0.8) and config.default_tries == 1


def test_unknown_keys_warn_and_bad_files_are_reported_with_the_path(tmp_path):
    # A key from a newer version is ignored with a warning, so old code still runs new detectors.
    (tmp_path / "config.json").write_text(json.dumps({"method": "ae", "colour": "blue"}))
    with pytest.warns(UserWarning, match="colour"):
        assert DetectorConfig.load(tmp_path).method == "ae"
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"config.json"):
        DetectorConfig.load(tmp_path)


def test_verdict_has_an_uncertain_band_between_two_calibrated_thresholds():
    from ldmdetect.config import DecisionRule

    config = DetectorConfig(thresholds={"0.5": 0.5, "fpr_0.01": 0.9, "fpr_0.05": 0.6})
    rule = config.decision_rule(0.01)  # "auto": the next calibrated FPR bounds the band
    assert (rule.threshold_name, rule.real_threshold_name) == ("fpr_0.01", "fpr_0.05")
    assert [rule.verdict(s) for s in (0.95, 0.9, 0.7, 0.6, 0.1)] == [
        "generated",
        "uncertain",
        "uncertain",
        "real",
        "real",
    ]
    assert [rule.label(s) for s in (0.95, 0.7)] == ["generated", "real"]
    # No looser threshold, or no band asked for: the verdict is the label.
    assert config.decision_rule(0.05).verdict(0.7) == "generated"
    assert config.decision_rule(0.01, uncertain_fpr=None).verdict(0.7) == "real"
    with pytest.raises(ValueError, match="must be larger"):
        config.decision_rule(0.05, uncertain_fpr=0.01)
    with pytest.raises(ValueError, match="lies above"):
        DecisionRule(0.01, "a", 0.5, 0.05, "b", 0.6)


def test_families_round_trip_and_old_configs_have_none(tmp_path):
    config = DetectorConfig(families=("sd-4ch", "flux-16ch"), family_threshold=0.62)
    config.save(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["families"] == ["sd-4ch", "flux-16ch"]
    loaded = DetectorConfig.load(tmp_path)
    assert loaded.families == ("sd-4ch", "flux-16ch") and loaded.family_threshold == 0.62
    old = DetectorConfig().to_dict()
    del old["families"], old["family_threshold"]
    assert DetectorConfig.from_dict(old).families == ()
    assert DetectorConfig.from_dict(old).family_threshold is None
