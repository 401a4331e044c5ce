"""Detection metrics: plain functions over (labels, scores), and bootstrap intervals.

Conventions: label 1 = fake (generated), 0 = real; a score is the detector's belief that an image
is fake (higher = more fake, any real number). A threshold ``t`` calls an image fake iff
``score > t``. ROC, AUC and AP come from scikit-learn itself, so results compare with other
papers' code; this module adds input checks that fail loudly (NaN, one class, bad labels), the
threshold-at-FPR rule stated exactly, and stratified bootstrap intervals.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from sklearn import metrics as _skm

from ldmdetect.config import reals_needed

__all__ = [
    "FPR_TARGETS",
    "accuracy",
    "average_precision",
    "bootstrap_intervals",
    "bootstrap_samples",
    "compute_metrics",
    "conformal_threshold",
    "fpr_upper_bound",
    "generator_intervals",
    "mean_metrics",
    "oracle_accuracy",
    "percentile_interval",
    "reals_needed",
    "roc_auc",
    "roc_curve",
    "threshold_at_fpr",
    "tpr_at_fpr",
]

FPR_TARGETS: tuple[float, ...] = (0.001, 0.01, 0.05)


def _as_scores(scores: ArrayLike, name: str = "scores") -> np.ndarray:
    """Return scores as a 1-D float64 array, refusing NaN/inf: a silent NaN would sort anywhere."""
    s = np.asarray(scores)
    if s.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {s.shape}")
    if s.dtype.kind not in "biuf":
        raise ValueError(f"{name} must be real numbers, got dtype {s.dtype}")
    s = s.astype(np.float64, copy=False)
    if not np.all(np.isfinite(s)):
        bad = int(np.count_nonzero(~np.isfinite(s)))
        raise ValueError(f"{name} must be finite; found {bad} NaN/inf value(s)")
    return s


def _validate(y_true: ArrayLike, scores: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Check labels and scores once, so every metric fails the same clear way on bad input.

    Returns (is_fake, scores): a boolean label array and float64 scores of the same length.
    """
    y = np.asarray(y_true)
    if y.ndim != 1:
        raise ValueError(f"y_true must be 1-D, got shape {y.shape}")
    s = _as_scores(scores)
    if y.shape[0] != s.shape[0]:
        raise ValueError(f"y_true and scores differ in length: {y.shape[0]} != {s.shape[0]}")
    if y.shape[0] == 0:
        raise ValueError("y_true and scores are empty")
    if y.dtype.kind not in "biuf":
        raise ValueError(f"y_true must hold labels 0 (real) / 1 (fake), got dtype {y.dtype}")
    is_fake = y == 1
    if not np.all(is_fake | (y == 0)):
        found = np.unique(y[~(is_fake | (y == 0))])[:5].tolist()
        raise ValueError(f"y_true must hold only 0 (real) and 1 (fake); found {found}")
    return is_fake, s


def _require_both_classes(is_fake: np.ndarray, metric: str) -> None:
    n_fake = int(is_fake.sum())
    if n_fake == 0 or n_fake == is_fake.size:
        only = "fake" if n_fake else "real"
        raise ValueError(f"{metric} needs both real (0) and fake (1) samples; got only {only}")


def _cumulative_counts(is_fake: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, ...]:
    """Counts of fakes/reals scoring >= each distinct score, distinct scores in descending order.

    Thresholding at a distinct value is the only place where accuracy can change, so oracle
    accuracy reads off these arrays; ties move together as one step.
    """
    order = np.argsort(-s, kind="stable")
    s_sorted = s[order]
    fake_sorted = is_fake[order]
    # Index of the last element of each run of equal scores.
    last = np.flatnonzero(np.diff(s_sorted)) if s_sorted.size > 1 else np.empty(0, dtype=np.intp)
    last = np.r_[last, s_sorted.size - 1]
    tp = np.cumsum(fake_sorted, dtype=np.int64)[last]
    fp = (last + 1) - tp
    return tp, fp, s_sorted[last]


def roc_curve(y_true: ArrayLike, scores: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC points (fpr, tpr, thresholds), starting at (0, 0), one point per distinct score.

    ``sklearn.metrics.roc_curve(..., drop_intermediate=False)`` after the checks: every point is
    kept so the curve can be read at any FPR. Point i predicts fake iff ``score >= thresholds[i]``
    (thresholds[0] = inf).
    """
    is_fake, s = _validate(y_true, scores)
    _require_both_classes(is_fake, "roc_curve")
    fpr, tpr, thr = _skm.roc_curve(is_fake, s, drop_intermediate=False)
    thr = np.asarray(thr, dtype=np.float64).copy()
    thr[0] = np.inf  # older scikit-learn releases put max(score) + 1 here
    return fpr, tpr, thr


def roc_auc(y_true: ArrayLike, scores: ArrayLike) -> float:
    """Area under the ROC curve, ties counted half: ``sklearn.metrics.roc_auc_score``.

    Equals the Mann-Whitney statistic: the share of (fake, real) pairs where the fake scores
    higher, a tied pair counting one half.
    """
    is_fake, s = _validate(y_true, scores)
    _require_both_classes(is_fake, "roc_auc")
    return float(_skm.roc_auc_score(is_fake, s))


def average_precision(y_true: ArrayLike, scores: ArrayLike) -> float:
    """Average precision, step-wise without interpolation: ``sklearn.average_precision_score``.

    AP = sum over distinct thresholds of (recall gain) x precision; tied scores form one step.
    Raises if only one class is present: with no fakes AP is undefined, with no reals it is
    trivially 1 and would hide a broken dataset.
    """
    is_fake, s = _validate(y_true, scores)
    _require_both_classes(is_fake, "average_precision")
    return float(_skm.average_precision_score(is_fake, s))


def _allowed_reals(fpr: float, n_real: int) -> int:
    """k = floor(fpr * n_real), the number of reals a target FPR may flag; the 1e-9 keeps float
    error (0.29 * 100 = 28.999...96) from dropping one, matching the rule fp / n_real <= fpr."""
    return math.floor(fpr * n_real + 1e-9)


def threshold_at_fpr(real_scores: ArrayLike, fpr: float) -> float:
    """Threshold set on reals only so that at most ``floor(fpr * n_real)`` reals score above it.

    With k = floor(fpr * n_real), t is the (k+1)-th largest real score and an image is fake iff
    ``score > t``. If k >= n_real every real may pass, so t = -inf. Ties at t are all called
    real, so the achieved FPR may be below the target but never above it.
    """
    r = _as_scores(real_scores, "real_scores")
    if r.size == 0:
        raise ValueError("threshold_at_fpr needs at least one real score")
    fpr = float(fpr)
    if not 0.0 <= fpr <= 1.0:
        raise ValueError(f"fpr must be in [0, 1], got {fpr}")
    k = _allowed_reals(fpr, r.size)
    if k >= r.size:
        return -math.inf
    # Partition instead of a full sort: only the (k+1)-th largest value is needed.
    return float(np.partition(r, r.size - 1 - k)[r.size - 1 - k])


def conformal_threshold(real_scores: ArrayLike, fpr: float) -> tuple[float, int] | None:
    """A threshold that flags a *new* real image with probability at most ``fpr``.

    Split-conformal rule: with n exchangeable real scores, the (k+1)-th largest as threshold
    (fake iff ``score > t``) flags a new real with probability at most (k+1)/(n+1); so take
    k = floor(fpr * (n + 1)) - 1. Returns (t, k), or None when the reals cannot resolve ``fpr``
    (n < :func:`reals_needed`): even their largest score would promise no such bound.
    Unlike :func:`threshold_at_fpr`, which describes a test set, this is for a threshold that
    will be applied to images not yet seen, which is what a stored threshold is.
    """
    r = _as_scores(real_scores, "real_scores")
    if not 0.0 < fpr < 1.0:
        raise ValueError(f"fpr must be in (0, 1), got {fpr}")
    k = math.floor(fpr * (r.size + 1) + 1e-9) - 1
    if k < 0 or r.size == 0:
        return None
    return float(np.partition(r, r.size - 1 - k)[r.size - 1 - k]), k


def fpr_upper_bound(false_positives: int, n_real: int, level: float = 0.95) -> float:
    """One-sided Clopper-Pearson upper bound on a false-positive rate: ``false_positives``
    of ``n_real`` reals flagged. With none flagged it is about 3 / n at 95%."""
    from scipy.stats import beta

    if n_real <= 0:
        raise ValueError("fpr_upper_bound needs at least one real")
    if not 0 <= false_positives <= n_real:
        raise ValueError(f"false_positives must lie in [0, {n_real}], got {false_positives}")
    if false_positives == n_real:
        return 1.0
    return float(beta.ppf(level, false_positives + 1, n_real - false_positives))


def tpr_at_fpr(y_true: ArrayLike, scores: ArrayLike, fpr: float) -> float:
    """TPR on the fakes at the threshold ``threshold_at_fpr`` sets on the reals.

    Equals ``max(tpr[fpr_curve <= fpr])`` over scikit-learn's full ROC curve: the best detection
    rate that flags no more than the allowed share of reals.
    """
    is_fake, s = _validate(y_true, scores)
    _require_both_classes(is_fake, "tpr_at_fpr")
    t = threshold_at_fpr(s[~is_fake], fpr)
    return float(np.mean(s[is_fake] > t))


def accuracy(y_true: ArrayLike, scores: ArrayLike, threshold: float = 0.5) -> float:
    """Raw accuracy with fake iff ``score > threshold``; not balanced, so class sizes matter."""
    is_fake, s = _validate(y_true, scores)
    return float(np.mean((s > threshold) == is_fake))


def oracle_accuracy(y_true: ArrayLike, scores: ArrayLike) -> float:
    """Best raw accuracy over every threshold, including calling all real or all fake.

    Shows what a perfectly calibrated threshold could reach, separating ranking quality
    from calibration when the fixed-threshold accuracy is poor.
    """
    is_fake, s = _validate(y_true, scores)
    tp, fp, _ = _cumulative_counts(is_fake, s)
    n_real = int(fp[-1])
    # Threshold just below each distinct score: tp fakes and fp reals are called fake, the rest
    # real. The extra candidate (tp = fp = 0) calls everything real.
    correct = np.r_[n_real, tp + (n_real - fp)]
    return float(correct.max() / is_fake.size)


def compute_metrics(
    y_true: ArrayLike,
    scores: ArrayLike,
    *,
    fprs: Sequence[float] = FPR_TARGETS,
    threshold: float | None = 0.5,
) -> dict[str, float]:
    """All metrics for one (reals, one generator) set as plain Python numbers, JSON-ready.

    Keys: n_real, n_fake, acc, real_acc, fake_acc, oracle_acc, ap, auc, then
    ``f"tpr@fpr={fpr:g}"`` for each target FPR. Needs both classes. ``threshold=None`` (scores
    that are not probabilities, e.g. a distance) leaves out acc, real_acc and fake_acc: a fixed
    cut at 0.5 would mean nothing there.
    """
    is_fake, s = _validate(y_true, scores)
    _require_both_classes(is_fake, "compute_metrics")
    out: dict[str, float] = {"n_real": int((~is_fake).sum()), "n_fake": int(is_fake.sum())}
    if threshold is not None:
        called_fake = s > threshold
        out["acc"] = float(np.mean(called_fake == is_fake))
        out["real_acc"] = float(np.mean(~called_fake[~is_fake]))
        out["fake_acc"] = float(np.mean(called_fake[is_fake]))
    out |= {
        "oracle_acc": oracle_accuracy(is_fake, s),
        "ap": average_precision(is_fake, s),
        "auc": roc_auc(is_fake, s),
    }
    for fpr in fprs:
        out[f"tpr@fpr={fpr:g}"] = tpr_at_fpr(is_fake, s, fpr)
    return out


def mean_metrics(per_generator: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """Average each metric over generators, so every generator weighs the same.

    n_fake is summed (the fakes are distinct) and n_real is the max (the reals are shared).
    All generators must have the same keys; the first one's key order is kept.
    """
    if not per_generator:
        raise ValueError("mean_metrics needs at least one generator")
    names = list(per_generator)
    keys = list(per_generator[names[0]])
    for name in names[1:]:
        if set(per_generator[name]) != set(keys):
            raise ValueError(
                f"generator {name!r} has metric keys {sorted(per_generator[name])}, "
                f"but {names[0]!r} has {sorted(keys)}"
            )
    out: dict[str, float] = {}
    for key in keys:
        values = [per_generator[name][key] for name in names]
        if key == "n_real":
            out[key] = int(max(values))
        elif key == "n_fake":
            out[key] = int(sum(values))
        else:
            out[key] = float(np.mean(np.asarray(values, dtype=np.float64)))
    return out


# Bootstrap replicates drawn per block: bounds memory at a few (block x n) arrays whatever n_boot
# is, and keeps the random stream the same for any n_boot (replicate i is the same draw).
_BOOT_BLOCK = 64


def _resample_counts(rng: np.random.Generator, n: int, n_rows: int) -> np.ndarray:
    """How often each of n items is drawn in each of n_rows resamples of size n (with
    replacement); counts instead of index arrays so no resample has to be sorted."""
    idx = rng.integers(0, n, size=(n_rows, n))
    flat = idx + (np.arange(n_rows, dtype=np.int64) * n)[:, None]
    return np.bincount(flat.ravel(), minlength=n_rows * n).reshape(n_rows, n)


def _bootstrap_stats(
    real_sorted: np.ndarray,
    real_counts: np.ndarray,
    fake_sorted: np.ndarray,
    fake_counts: np.ndarray,
    fprs: Sequence[float],
) -> dict[str, np.ndarray]:
    """AUC and TPR@FPR of each resample, given as counts over the sorted original scores.

    Exactly what ``roc_auc`` and ``tpr_at_fpr`` give on the expanded resample, for all rows at
    once: with C = cumulative real counts, a fake at value f beats C[searchsorted(f, left)] reals
    and ties C[right] - C[left] of them.
    """
    n_real, n_fake = real_sorted.size, fake_sorted.size
    rows = real_counts.shape[0]
    zeros = np.zeros((rows, 1), dtype=np.int64)
    c_real = np.concatenate([zeros, np.cumsum(real_counts, axis=1)], axis=1)
    c_fake = np.concatenate([zeros, np.cumsum(fake_counts, axis=1)], axis=1)
    left = np.searchsorted(real_sorted, fake_sorted, side="left")
    right = np.searchsorted(real_sorted, fake_sorted, side="right")
    twice_wins = np.sum(fake_counts * (c_real[:, left] + c_real[:, right]), axis=1)
    out = {"auc": twice_wins / (2.0 * n_real * n_fake)}
    for fpr in fprs:
        k = _allowed_reals(float(fpr), n_real)
        if k >= n_real:
            out[f"tpr@fpr={fpr:g}"] = np.ones(rows)
            continue
        # The (k+1)-th largest resampled real sits at the last sorted position i whose
        # cumulative count before it, C[i], leaves at least k+1 reals at or above it.
        pos = np.sum(c_real[:, :n_real] <= n_real - k - 1, axis=1) - 1
        threshold = real_sorted[pos]
        above_from = np.searchsorted(fake_sorted, threshold, side="right")
        n_above = n_fake - np.take_along_axis(c_fake, above_from[:, None], axis=1)[:, 0]
        out[f"tpr@fpr={fpr:g}"] = n_above / n_fake
    return out


def bootstrap_samples(
    real_scores: ArrayLike,
    fake_scores: ArrayLike,
    *,
    fprs: Sequence[float] = FPR_TARGETS,
    n_boot: int = 1000,
    seed: int = 0,
    fake_stream: int = 0,
) -> dict[str, np.ndarray]:
    """Bootstrap replicates of AUC and TPR@FPR, reals and fakes resampled separately.

    Stratified: each replicate keeps n_real reals and n_fake fakes, so the class balance, and
    with it the number of reals a target FPR may flag, stays that of the real study. Returns
    ``{"auc": (n_boot,), "tpr@fpr=x": (n_boot,)}``.

    Reals are drawn from ``seed`` alone and fakes from (seed, fake_stream): generators scored
    against the same reals and given distinct ``fake_stream`` values share every real resample
    (they are paired, as in the study) while their fakes are independent, so averaging their
    replicates bootstraps the mean over generators.
    """
    real = np.sort(_as_scores(real_scores, "real_scores"))
    fake = np.sort(_as_scores(fake_scores, "fake_scores"))
    if real.size == 0 or fake.size == 0:
        raise ValueError("bootstrap needs both real (0) and fake (1) samples")
    if int(n_boot) < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    n_boot = int(n_boot)
    real_rng = np.random.default_rng([int(seed), 0])
    fake_rng = np.random.default_rng([int(seed), 1, int(fake_stream)])
    blocks: list[dict[str, np.ndarray]] = []
    for start in range(0, n_boot, _BOOT_BLOCK):
        rows = min(_BOOT_BLOCK, n_boot - start)
        # Draw full blocks even for the last one, so replicate i never depends on n_boot.
        real_counts = _resample_counts(real_rng, real.size, _BOOT_BLOCK)[:rows]
        fake_counts = _resample_counts(fake_rng, fake.size, _BOOT_BLOCK)[:rows]
        blocks.append(_bootstrap_stats(real, real_counts, fake, fake_counts, fprs))
    return {key: np.concatenate([b[key] for b in blocks]) for key in blocks[0]}


def percentile_interval(samples: ArrayLike, level: float = 0.95) -> list[float]:
    """Percentile interval [lo, hi] holding the central ``level`` share of the replicates."""
    if not 0.0 < float(level) < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    x = _as_scores(samples, "samples")
    if x.size == 0:
        raise ValueError("percentile_interval needs at least one sample")
    tail = (1.0 - float(level)) / 2.0
    lo, hi = np.quantile(x, [tail, 1.0 - tail])
    return [float(lo), float(hi)]


def bootstrap_intervals(
    y_true: ArrayLike,
    scores: ArrayLike,
    *,
    fprs: Sequence[float] = FPR_TARGETS,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, list[float]]:
    """Percentile bootstrap intervals ``{"auc": [lo, hi], "tpr@fpr=x": [lo, hi]}``.

    Keys match ``compute_metrics``. Reals and fakes are resampled separately (see
    ``bootstrap_samples``); the same seed gives the same intervals.
    """
    is_fake, s = _validate(y_true, scores)
    _require_both_classes(is_fake, "bootstrap_intervals")
    samples = bootstrap_samples(s[~is_fake], s[is_fake], fprs=fprs, n_boot=n_boot, seed=seed)
    return {key: percentile_interval(v, level) for key, v in samples.items()}


def generator_intervals(
    real_scores: ArrayLike,
    fake_scores: Mapping[str, ArrayLike],
    *,
    fprs: Sequence[float] = FPR_TARGETS,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """Intervals for each generator against shared reals, and for their mean.

    Returns ``{"generators": {name: {"auc": [lo, hi], ...}}, "mean": {...}}``, laid out like an
    evaluation condition. Every generator sees the same real resamples (one seed) and its own
    fake resamples (its own stream), so the mean row's replicates are the per-generator
    replicates averaged, the same way ``mean_metrics`` averages the point estimates.
    """
    if not fake_scores:
        raise ValueError("generator_intervals needs at least one generator")
    samples = {
        name: bootstrap_samples(
            real_scores, fake, fprs=fprs, n_boot=n_boot, seed=seed, fake_stream=i
        )
        for i, (name, fake) in enumerate(fake_scores.items())
    }
    per_gen = {
        name: {key: percentile_interval(v, level) for key, v in s.items()}
        for name, s in samples.items()
    }
    first = next(iter(samples.values()))
    mean = {
        key: percentile_interval(np.mean([s[key] for s in samples.values()], axis=0), level)
        for key in first
    }
    return {"generators": per_gen, "mean": mean}
