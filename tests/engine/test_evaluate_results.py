"""The typed view of an evaluation result reads back the numbers the result holds."""

from __future__ import annotations

import numpy as np
import pytest

from ldmdetect.engine.evaluate_results import Condition, Evaluation
from ldmdetect.engine.metrics import compute_metrics, generator_intervals, mean_metrics


def _section(real: np.ndarray, gens: dict[str, np.ndarray], seconds: float) -> dict:
    per_gen = {
        name: compute_metrics(np.r_[np.zeros(real.size), np.ones(f.size)], np.r_[real, f])
        for name, f in gens.items()
    }
    return {
        "generators": per_gen,
        "mean": mean_metrics(per_gen),
        "intervals": generator_intervals(real, gens, n_boot=50, seed=0),
        "seconds_per_image": seconds,
    }


@pytest.fixture
def result() -> dict:
    """A result shaped as evaluate() writes it: two tries, one perturbation, the control."""
    rng = np.random.default_rng(0)
    real = rng.beta(2, 5, 60)
    gens = {"sd": rng.beta(5, 2, 40), "dit": rng.beta(3, 3, 30)}
    one, ten = _section(real, gens, 0.01), _section(real, gens, 0.1)
    control = _section(real, {k: v * 0.9 for k, v in gens.items()}, 0.02) | {"quality": 90}
    return {
        "settings": {"tries": [1, 10], "bootstrap": {"n_boot": 50}},
        "generators": one["generators"],
        "mean": one["mean"],
        "intervals": one["intervals"],
        "tries": {"1": one, "10": ten},
        "robustness": {"jpeg:75": _section(real * 1.1, gens, 0.03)},
        "format_control": control,
        "synris": None,
        "errors": {"/data/broken.png": "not a recognised image format"},
    }


def test_conditions_name_kind_and_label_each_section(result: dict) -> None:
    conditions = Evaluation.of(result).conditions()
    assert [(c.name, c.kind, c.label) for c in conditions] == [
        ("1-try", "tries", "1"),
        ("10-try", "tries", "10"),
        ("jpeg:75, 1-try", "robustness", "jpeg:75"),
        ("format control jpeg:90", "format_control", "jpeg:90"),
    ]
    assert [c.seconds_per_image for c in conditions] == [0.01, 0.1, 0.03, 0.02]
    jpeg = result["robustness"]["jpeg:75"]
    assert conditions[2].mean["auc"] == jpeg["mean"]["auc"]
    assert conditions[2].generators["dit"]["auc"] == jpeg["generators"]["dit"]["auc"]
    (robust,) = Evaluation.of(result).conditions("robustness")
    assert robust == conditions[2]
    assert [c.name for c in Evaluation.of(result).conditions("tries")] == ["1-try", "10-try"]


def test_headline_reads_the_top_level_metrics(result: dict) -> None:
    headline = Evaluation.of(result).headline()
    assert (headline.name, headline.label, headline.seconds_per_image) == ("1-try", "1", 0.01)
    assert headline.generators["sd"]["auc"] == result["generators"]["sd"]["auc"]
    assert headline.mean["tpr@fpr=0.01"] == result["mean"]["tpr@fpr=0.01"]
    # A result without tries (built by hand): the top level is its one tries condition.
    bare = {k: result[k] for k in ("generators", "mean")}
    headline = Evaluation.of(bare).headline()
    assert (headline.name, headline.seconds_per_image, headline.intervals) == ("clean", None, None)
    assert Evaluation.of(bare).conditions() == [headline]


def test_rows_put_the_mean_last_with_their_intervals(result: dict) -> None:
    headline = Evaluation.of(result).headline()
    rows = headline.rows()
    assert list(rows) == ["sd", "dit", "mean"]
    assert rows["mean"]["auc"] == result["mean"]["auc"]
    intervals = headline.row_intervals()
    assert intervals is not None and list(intervals) == ["sd", "dit", "mean"]
    assert intervals["dit"]["auc"] == result["intervals"]["generators"]["dit"]["auc"]
    assert headline.mean_intervals == result["intervals"]["mean"]
    lo, hi = headline.mean_intervals["auc"]
    assert lo <= rows["mean"]["auc"] <= hi
    bare = Condition("x", "tries", {"mean": rows["sd"]}, rows["mean"], None, None)
    assert bare.row_intervals() is None and bare.mean_intervals is None
    with pytest.raises(ValueError, match="may not be named 'mean'"):
        bare.rows()


def test_optional_sections(result: dict) -> None:
    evaluation = Evaluation.of(result)
    assert evaluation.synris is None and evaluation.class_probabilities is None
    assert evaluation.attribution is None
    assert evaluation.errors == {"/data/broken.png": "not a recognised image format"}
    assert evaluation.settings["tries"] == [1, 10]
    means = {"p_real": 0.7, "p_a": 0.2, "p_b": 0.1}
    synris = {
        "pairs": "syn/pairs.csv",
        "n_pairs": 6,
        "n_matched_reals": 5,
        "matched": {"auc": 0.4},
        "unmatched": {"auc": 0.75},
        "intervals": None,
        "pair_win_rate": 0.5,
        "similarity_mean": 0.83,
        "auc_gap": 0.35,
    }
    evaluation = Evaluation.of(
        result
        | {
            "synris": synris,
            "class_probabilities": {"real": means, "generators": {"sd": dict(means, p_a=0.6)}},
            "attribution": {"accuracy": 0.9},
        }
    )
    comparison = evaluation.synris
    assert comparison is not None
    assert (comparison.n_pairs, comparison.n_matched_reals, comparison.pairs) == (
        6,
        5,
        "syn/pairs.csv",
    )
    assert comparison.matched["auc"] == 0.4 and comparison.unmatched["auc"] == 0.75
    assert (comparison.auc_gap, comparison.pair_win_rate, comparison.embedder) == (0.35, 0.5, None)
    classes = evaluation.class_probabilities
    assert classes is not None and classes.columns == ["p_real", "p_a", "p_b"]
    assert classes.rows() == {"real": means, "sd": {"p_real": 0.7, "p_a": 0.6, "p_b": 0.1}}
    assert evaluation.attribution == {"accuracy": 0.9}
