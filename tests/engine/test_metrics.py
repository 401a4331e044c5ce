"""Metrics must equal scikit-learn's on every kind of input researchers will feed them."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from sklearn import metrics as skm

from ldmdetect.engine import metrics as M


def _random_case(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One random labelled score set with both classes: varied sizes, balance, ties, separation."""
    n_real = int(rng.integers(1, 400))
    n_fake = int(rng.integers(1, 400))
    if rng.random() < 0.3:  # strongly imbalanced
        n_real, n_fake = (n_real * 10, max(1, n_fake // 10))
        if rng.random() < 0.5:
            n_real, n_fake = n_fake, n_real
    kind = rng.choice(["overlap", "separable", "inverted", "constant", "logits"])
    real = rng.normal(0.0, 1.0, n_real)
    fake = rng.normal(rng.uniform(0.0, 2.0), 1.0, n_fake)
    if kind == "separable":
        fake = real.max() + rng.uniform(0.01, 1.0, n_fake)
    elif kind == "inverted":
        fake = real.min() - rng.uniform(0.01, 1.0, n_fake)
    elif kind == "constant":
        real = np.full(n_real, 0.5)
        fake = np.full(n_fake, 0.5)
    scores = np.r_[real, fake]
    if kind != "logits":
        scores = 1.0 / (1.0 + np.exp(-scores))  # probabilities, like a sigmoid head
    if rng.random() < 0.5:  # heavy ties, as from low-precision or saturated scores
        scores = np.round(scores, int(rng.integers(0, 3)))
    y = np.r_[np.zeros(n_real, int), np.ones(n_fake, int)]
    perm = rng.permutation(y.size)
    return y[perm], scores[perm]


CASES = [_random_case(np.random.default_rng(seed)) for seed in range(150)]


def _sklearn_tpr_at_fpr(y: np.ndarray, s: np.ndarray, fpr: float) -> float:
    fpr_curve, tpr_curve, _ = skm.roc_curve(y, s, drop_intermediate=False)
    return float(np.max(tpr_curve[fpr_curve <= fpr]))


def _brute_oracle(y: np.ndarray, s: np.ndarray) -> float:
    candidates = np.r_[-np.inf, np.unique(s)]
    return max(float(np.mean((s > t) == (y == 1))) for t in candidates)


@pytest.mark.parametrize("case", range(len(CASES)))
def test_metrics_match_sklearn_on_random_cases(case: int) -> None:
    y, s = CASES[case]
    np.testing.assert_allclose(M.roc_auc(y, s), skm.roc_auc_score(y, s), rtol=1e-12, atol=0)
    np.testing.assert_allclose(
        M.average_precision(y, s), skm.average_precision_score(y, s), rtol=1e-12, atol=1e-15
    )
    for fpr in (*M.FPR_TARGETS, 0.0, 0.1, 0.29, 0.5, 1.0):
        assert M.tpr_at_fpr(y, s, fpr) == _sklearn_tpr_at_fpr(y, s, fpr), fpr
    for t in (0.5, 0.0, float(np.median(s))):
        np.testing.assert_allclose(
            M.accuracy(y, s, t), skm.accuracy_score(y, (s > t).astype(int)), rtol=1e-15
        )
    assert M.oracle_accuracy(y, s) == pytest.approx(_brute_oracle(y, s), abs=1e-15)


@pytest.mark.parametrize("case", range(0, len(CASES), 10))
def test_roc_curve_matches_sklearn(case: int) -> None:
    y, s = CASES[case]
    fpr, tpr, thr = M.roc_curve(y, s)
    sk_fpr, sk_tpr, sk_thr = skm.roc_curve(y, s, drop_intermediate=False)
    np.testing.assert_allclose(fpr, sk_fpr, rtol=1e-15)
    np.testing.assert_allclose(tpr, sk_tpr, rtol=1e-15)
    np.testing.assert_array_equal(thr[1:], sk_thr[1:])


def test_known_values() -> None:
    y = [0, 0, 1, 1]
    s = [0.1, 0.4, 0.35, 0.8]
    assert M.roc_auc(y, s) == 0.75
    assert M.average_precision(y, s) == pytest.approx(0.5 * 1.0 + 0.5 * 2 / 3)
    assert M.accuracy(y, s) == 0.75  # 0.35 and 0.4 are both called real
    assert M.oracle_accuracy(y, s) == 0.75
    # A tied (fake, real) pair counts one half.
    assert M.roc_auc([0, 1], [0.5, 0.5]) == 0.5
    assert M.roc_auc([0, 0, 1], [0.2, 0.5, 0.5]) == 0.75


def test_separable_and_inverted() -> None:
    y = np.r_[np.zeros(50, int), np.ones(30, int)]
    s = np.r_[np.linspace(0, 0.4, 50), np.linspace(0.6, 1, 30)]
    for fn in (M.roc_auc, M.accuracy, M.oracle_accuracy):
        assert fn(y, s) == 1.0
    # scikit-learn sums AP in floating point: 1 up to rounding.
    assert M.average_precision(y, s) == pytest.approx(1.0, abs=1e-12)
    assert M.tpr_at_fpr(y, s, 0.0) == 1.0
    inv = 1.0 - s
    assert M.roc_auc(y, inv) == 0.0
    assert M.average_precision(y, inv) == pytest.approx(skm.average_precision_score(y, inv))
    assert M.tpr_at_fpr(y, inv, 0.05) == 0.0
    assert M.accuracy(y, inv) == 0.0
    # Inverted scores: the best threshold calls everything real (50 of 80 right).
    assert M.oracle_accuracy(y, inv) == 50 / 80


def test_accuracy_threshold_is_strict() -> None:
    assert M.accuracy([0, 1], [0.5, 0.5]) == 0.5  # 0.5 is not > 0.5: both called real
    assert M.accuracy([0, 1], [0.5, 0.5], threshold=0.49) == 0.5
    assert M.accuracy([1, 1], [0.5, 0.51]) == 0.5


@pytest.mark.parametrize("seed", range(40))
def test_threshold_lets_at_most_k_reals_through(seed: int) -> None:
    rng = np.random.default_rng(1000 + seed)
    n = int(rng.integers(1, 3000))
    real = rng.random(n)
    if seed % 2:
        real = np.round(real, 1)  # many ties at the threshold
    for fpr in (*M.FPR_TARGETS, 0.0, 0.1, 0.29, 0.999, 1.0):
        k = math.floor(fpr * n + 1e-9)
        t = M.threshold_at_fpr(real, fpr)
        above = int(np.sum(real > t))
        assert above <= k
        if k >= n:
            assert t == -math.inf
        else:
            assert t == np.sort(real)[::-1][k]  # the (k+1)-th largest real score
            if np.unique(real).size == n:
                assert above == k  # without ties the budget is used exactly


def test_threshold_k_survives_float_error() -> None:
    # 0.29 * 100 is 28.999...96 in floating point; 29 reals are allowed through.
    real = np.arange(100, dtype=float)
    t = M.threshold_at_fpr(real, 0.29)
    assert int(np.sum(real > t)) == 29
    assert M.threshold_at_fpr(np.arange(1000.0), 0.001) == 998.0
    assert M.threshold_at_fpr([0.3, 0.7], 0.5) == 0.3
    assert M.threshold_at_fpr([0.3, 0.7], 0.49) == 0.7


def test_compute_metrics_keys_and_types() -> None:
    y, s = CASES[3]
    out = M.compute_metrics(y, s)
    assert list(out) == [
        "n_real",
        "n_fake",
        "acc",
        "real_acc",
        "fake_acc",
        "oracle_acc",
        "ap",
        "auc",
        "tpr@fpr=0.001",
        "tpr@fpr=0.01",
        "tpr@fpr=0.05",
    ]
    assert type(out["n_real"]) is int and type(out["n_fake"]) is int
    assert all(type(v) is float for k, v in out.items() if not k.startswith("n_"))
    assert json.loads(json.dumps(out)) == out
    assert out["n_real"] == int(np.sum(y == 0)) and out["n_fake"] == int(np.sum(y == 1))
    real, fake = s[y == 0], s[y == 1]
    assert out["real_acc"] == np.mean(real <= 0.5)
    assert out["fake_acc"] == np.mean(fake > 0.5)
    assert out["acc"] == pytest.approx(
        (out["real_acc"] * out["n_real"] + out["fake_acc"] * out["n_fake"]) / len(y)
    )
    assert out["auc"] == M.roc_auc(y, s) and out["ap"] == M.average_precision(y, s)
    assert out["tpr@fpr=0.01"] == M.tpr_at_fpr(y, s, 0.01)


def test_compute_metrics_custom_fprs_and_threshold() -> None:
    y, s = CASES[7]
    out = M.compute_metrics(y, s, fprs=(0.1, 0.005), threshold=0.7)
    assert [k for k in out if k.startswith("tpr")] == ["tpr@fpr=0.1", "tpr@fpr=0.005"]
    assert out["acc"] == M.accuracy(y, s, 0.7)
    assert out["tpr@fpr=0.005"] == _sklearn_tpr_at_fpr(y, s, 0.005)


def test_labels_may_be_bool_or_float() -> None:
    y, s = CASES[11]
    ref = M.compute_metrics(y, s)
    assert M.compute_metrics(y.astype(bool), s) == ref
    assert M.compute_metrics(y.astype(float), list(s)) == ref


@pytest.mark.parametrize(
    ("y", "s", "match"),
    [
        ([0, 1, 1], [0.1, 0.2], "differ in length"),
        ([[0, 1]], [[0.1, 0.2]], "1-D"),
        ([0, 1], [[0.1, 0.2]], "1-D"),
        ([0, 2], [0.1, 0.2], "only 0"),
        ([0, -1], [0.1, 0.2], "only 0"),
        ([0, 0.5], [0.1, 0.2], "only 0"),
        (["real", "fake"], [0.1, 0.2], "labels"),
        ([0, 1], [0.1, float("nan")], "NaN"),
        ([0, 1], [0.1, float("inf")], "finite"),
        ([0, 1], ["a", "b"], "real numbers"),
        ([], [], "empty"),
    ],
)
def test_invalid_inputs_raise(y: list, s: list, match: str) -> None:
    for fn in (M.compute_metrics, M.roc_auc, M.average_precision, M.accuracy, M.oracle_accuracy):
        with pytest.raises(ValueError, match=match):
            fn(y, s)


@pytest.mark.parametrize("fn", [M.roc_auc, M.average_precision, M.compute_metrics, M.roc_curve])
def test_one_class_raises(fn) -> None:
    with pytest.raises(ValueError, match="both real"):
        fn([1, 1, 1], [0.1, 0.5, 0.9])
    with pytest.raises(ValueError, match="both real"):
        fn([0, 0], [0.1, 0.5])
    with pytest.raises(ValueError, match="both real"):
        M.tpr_at_fpr([0, 0], [0.1, 0.5], 0.01)


def test_one_class_allowed_for_accuracy() -> None:
    # Accuracy on reals alone is a meaningful number (e.g. a held-out real set).
    assert M.accuracy([0, 0, 0, 0], [0.1, 0.2, 0.6, 0.9]) == 0.5
    assert M.oracle_accuracy([1, 1], [0.1, 0.9]) == 1.0


@pytest.mark.parametrize("fpr", [-0.01, 1.5, float("nan")])
def test_threshold_rejects_bad_fpr(fpr: float) -> None:
    with pytest.raises(ValueError, match="fpr"):
        M.threshold_at_fpr([0.1, 0.2], fpr)


def test_threshold_rejects_empty_or_nan_reals() -> None:
    with pytest.raises(ValueError, match="at least one"):
        M.threshold_at_fpr([], 0.01)
    with pytest.raises(ValueError, match="NaN"):
        M.threshold_at_fpr([0.1, float("nan")], 0.01)


def test_mean_metrics() -> None:
    a = M.compute_metrics(*CASES[1])
    b = M.compute_metrics(*CASES[2])
    b["n_real"] = a["n_real"] + 5
    out = M.mean_metrics({"sd14": a, "sdxl": b})
    assert list(out) == list(a)
    assert out["n_real"] == a["n_real"] + 5  # shared reals: max, not sum
    assert out["n_fake"] == a["n_fake"] + b["n_fake"]
    assert type(out["n_real"]) is int and type(out["n_fake"]) is int
    for key in a:
        if not key.startswith("n_"):
            assert out[key] == pytest.approx((a[key] + b[key]) / 2, abs=1e-15)
            assert type(out[key]) is float
    assert M.mean_metrics({"only": a}) == a


def test_mean_metrics_rejects_mismatched_or_empty() -> None:
    a = M.compute_metrics(*CASES[1])
    b = dict(a)
    del b["auc"]
    with pytest.raises(ValueError, match="metric keys"):
        M.mean_metrics({"x": a, "y": b})
    with pytest.raises(ValueError, match="at least one"):
        M.mean_metrics({})


def test_large_inputs_are_exact_and_fast() -> None:
    # Pair counts beyond 2**31 must not overflow the integer AUC.
    rng = np.random.default_rng(0)
    n = 200_000
    y = np.r_[np.zeros(n, int), np.ones(n, int)]
    s = np.round(np.r_[rng.normal(0, 1, n), rng.normal(0.5, 1, n)], 2)
    np.testing.assert_allclose(M.roc_auc(y, s), skm.roc_auc_score(y, s), rtol=1e-12)


def _expand(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    return np.repeat(values, counts)


@pytest.mark.parametrize("case", range(0, len(CASES), 15))
def test_bootstrap_replicates_equal_metrics_on_the_resample(case: int) -> None:
    # The vectorised replicate statistics must be exactly roc_auc / tpr_at_fpr on the
    # resampled set written out in full, ties and all.
    y, s = CASES[case]
    real, fake = np.sort(s[y == 0]), np.sort(s[y == 1])
    rng = np.random.default_rng(case)
    rc = M._resample_counts(rng, real.size, 5)
    fc = M._resample_counts(rng, fake.size, 5)
    assert np.all(rc.sum(axis=1) == real.size) and np.all(fc.sum(axis=1) == fake.size)
    fprs = (*M.FPR_TARGETS, 0.0, 0.29, 1.0)
    stats = M._bootstrap_stats(real, rc, fake, fc, fprs)
    for b in range(5):
        r, f = _expand(real, rc[b]), _expand(fake, fc[b])
        yb = np.r_[np.zeros(r.size, int), np.ones(f.size, int)]
        sb = np.r_[r, f]
        assert stats["auc"][b] == pytest.approx(M.roc_auc(yb, sb), abs=1e-12)
        for fpr in fprs:
            assert stats[f"tpr@fpr={fpr:g}"][b] == M.tpr_at_fpr(yb, sb, fpr), fpr


def _two_gaussians(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    real, fake = rng.normal(0, 1, n), rng.normal(1.5, 1, n)
    return np.r_[np.zeros(n, int), np.ones(n, int)], np.r_[real, fake]


def test_bootstrap_interval_contains_point_estimate() -> None:
    y, s = _two_gaussians(300)
    point = M.compute_metrics(y, s, fprs=(0.01, 0.05, 0.1))
    intervals = M.bootstrap_intervals(y, s, fprs=(0.01, 0.05, 0.1), n_boot=500)
    assert list(intervals) == ["auc", "tpr@fpr=0.01", "tpr@fpr=0.05", "tpr@fpr=0.1"]
    for key, (lo, hi) in intervals.items():
        assert lo <= point[key] <= hi, key
        assert lo < hi, key  # overlapping classes: a real spread, not a point
    lo, hi = intervals["auc"]
    assert 0.02 < hi - lo < 0.12  # about 4 standard errors of AUC at n = 300 per class


def test_bootstrap_interval_narrows_with_more_samples() -> None:
    widths = []
    for n in (50, 500, 5000):
        lo, hi = M.bootstrap_intervals(*_two_gaussians(n, seed=1), n_boot=300)["auc"]
        widths.append(hi - lo)
    assert widths[0] > 2 * widths[1] > 4 * widths[2]  # ~ 1/sqrt(n): factor ~3.2 per step


def test_bootstrap_separable_case_is_degenerate() -> None:
    y = np.r_[np.zeros(40, int), np.ones(25, int)]
    s = np.r_[np.linspace(0, 0.4, 40), np.linspace(0.6, 1, 25)]
    intervals = M.bootstrap_intervals(y, s, n_boot=200)
    for key, interval in intervals.items():
        assert interval == [1.0, 1.0], key
    inverted = M.bootstrap_intervals(y, 1.0 - s, n_boot=200)
    assert inverted["auc"] == [0.0, 0.0]
    assert inverted["tpr@fpr=0.05"] == [0.0, 0.0]


def test_bootstrap_is_deterministic_given_a_seed() -> None:
    y, s = _two_gaussians(100, seed=2)
    a = M.bootstrap_intervals(y, s, n_boot=200, seed=3)
    assert M.bootstrap_intervals(y, s, n_boot=200, seed=3) == a
    assert M.bootstrap_intervals(y, s, n_boot=200, seed=4) != a
    # Replicate i does not depend on how many replicates are drawn.
    real, fake = s[y == 0], s[y == 1]
    long = M.bootstrap_samples(real, fake, n_boot=150, seed=3)
    short = M.bootstrap_samples(real, fake, n_boot=70, seed=3)
    for key in long:
        np.testing.assert_array_equal(long[key][:70], short[key])


def test_bootstrap_reals_are_shared_across_fake_streams() -> None:
    # Same seed, different fake streams: identical real resamples, independent fake ones, so
    # two generators scored against the same reals can be averaged replicate by replicate.
    real = np.linspace(0, 1, 200)
    fake = np.full(50, 0.5)  # a constant fake makes TPR depend on the reals alone
    a = M.bootstrap_samples(real, fake, fprs=(0.1,), n_boot=100, fake_stream=0)
    b = M.bootstrap_samples(real, fake, fprs=(0.1,), n_boot=100, fake_stream=1)
    np.testing.assert_array_equal(a["tpr@fpr=0.1"], b["tpr@fpr=0.1"])
    varied = np.linspace(0.2, 1.2, 50)
    c = M.bootstrap_samples(real, varied, fprs=(0.1,), n_boot=100, fake_stream=0)
    d = M.bootstrap_samples(real, varied, fprs=(0.1,), n_boot=100, fake_stream=1)
    assert not np.array_equal(c["auc"], d["auc"])


def test_bootstrap_is_fast() -> None:
    import time

    y, s = _two_gaussians(5000)
    start = time.perf_counter()
    M.bootstrap_intervals(y, s, n_boot=1000)
    assert (
        time.perf_counter() - start < 5.0
    )  # vectorised: well under 1 s; a per-replicate sort loop takes far longer


def test_bootstrap_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="both real"):
        M.bootstrap_intervals([1, 1], [0.1, 0.2])
    with pytest.raises(ValueError, match="n_boot"):
        M.bootstrap_intervals([0, 1], [0.1, 0.2], n_boot=0)
    with pytest.raises(ValueError, match="level"):
        M.bootstrap_intervals([0, 1], [0.1, 0.2], level=1.0)


def test_scores_that_are_not_probabilities_get_no_fixed_threshold_accuracy():
    y = np.array([0, 0, 1, 1])
    distances = np.array([0.01, 0.02, 0.005, 0.03])  # e.g. LPIPS distances, not probabilities
    out = M.compute_metrics(y, distances, threshold=None)
    assert not {"acc", "real_acc", "fake_acc"} & set(out)
    assert out["auc"] == M.compute_metrics(y, distances)["auc"]
