import numpy as np
import pytest

from ldmdetect.config import DetectorConfig
from ldmdetect.engine.flagged import flagged_at, proportion_interval
from ldmdetect.engine.metrics import fpr_upper_bound


def test_proportion_interval_matches_clopper_pearson_known_values():
    low, high = proportion_interval(0, 100)
    assert low == 0.0 and high == pytest.approx(1 - 0.025 ** (1 / 100))
    low, high = proportion_interval(100, 100)
    assert high == 1.0 and low == pytest.approx(0.025 ** (1 / 100))
    low, high = proportion_interval(5, 100)
    assert low < 0.05 < high and high - low < 0.12


def test_flagged_counts_per_source_at_a_stored_threshold():
    config = DetectorConfig(
        thresholds={"0.5": 0.5, "fpr_0.01": 0.9},
        calibration={"n_real": 300, "thresholds": {"fpr_0.01": {"resolved": True}}},
    )
    scores = np.array([0.95, 0.2, 0.91, 0.9, 0.1, 0.99])
    sources = ["a", "a", "b", "b", "b", "c"]
    result = flagged_at(scores, config, 0.01, sources)
    assert (result.n, result.flagged, result.share) == (6, 3, 0.5)
    assert result.per_source == {"a": [1, 2], "b": [1, 3], "c": [1, 1]}
    assert result.upper_95 == pytest.approx(fpr_upper_bound(3, 6))
    assert result.interval[0] < 0.5 < result.interval[1]
