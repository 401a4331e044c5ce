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


def test_unknown_keys_warn_and_bad_files_are_reported_with_the_path(tmp_path):
    # A key from a newer version is ignored with a warning, so old code still runs new detectors.
    (tmp_path / "config.json").write_text(json.dumps({"method": "ae", "colour": "blue"}))
    with pytest.warns(UserWarning, match="colour"):
        assert DetectorConfig.load(tmp_path).method == "ae"
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"config.json"):
        DetectorConfig.load(tmp_path)
