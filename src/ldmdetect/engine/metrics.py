"""Detection metrics: plain functions over (labels, scores), numpy only.

Conventions: label 1 = fake (generated), 0 = real; a score is the detector's belief that an image
is fake (higher = more fake, any real number). A threshold ``t`` calls an image fake iff
``score > t``. Every metric that scikit-learn also has gives the same number as scikit-learn, so
results compare with other papers' code; tests check this on many random cases.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from numpy.typing import ArrayLike

__all__ = [
    "FPR_TARGETS",
    "accuracy",
    "average_precision",
    "compute_metrics",
    "mean_metrics",
    "oracle_accuracy",
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

    Thresholding at a distinct value is the only place where any curve can change, so ROC, PR
    and oracle accuracy all read off these arrays; ties move together as one step.
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

    Same points as ``sklearn.metrics.roc_curve(..., drop_intermediate=False)``; here so the
    report can draw curves without scikit-learn at runtime. Point i predicts fake iff
    ``score >= thresholds[i]`` (thresholds[0] = inf).
    """
    is_fake, s = _validate(y_true, scores)
    _require_both_classes(is_fake, "roc_curve")
    tp, fp, thr = _cumulative_counts(is_fake, s)
    tpr = np.r_[0, tp] / tp[-1]
    fpr = np.r_[0, fp] / fp[-1]
    return fpr, tpr, np.r_[np.inf, thr]


def roc_auc(y_true: ArrayLike, scores: ArrayLike) -> float:
    """Area under the ROC curve, ties counted half (equals ``sklearn.metrics.roc_auc_score``).

    Computed as the Mann-Whitney statistic in exact integer arithmetic: the share of
    (fake, real) pairs where the fake scores higher, a tied pair counting one half.
    """
    is_fake, s = _validate(y_true, scores)
    _require_both_classes(is_fake, "roc_auc")
    reals = np.sort(s[~is_fake])
    fakes = s[is_fake]
    below = np.searchsorted(reals, fakes, side="left").astype(np.int64)
    below_or_tied = np.searchsorted(reals, fakes, side="right").astype(np.int64)
    # Sum of (2*below + tied) = twice the pair wins; integers keep it exact for any size.
    twice_wins = int(below.sum()) + int(below_or_tied.sum())
    return twice_wins / (2 * fakes.size * reals.size)


def average_precision(y_true: ArrayLike, scores: ArrayLike) -> float:
    """Average precision, step-wise without interpolation (= ``sklearn.average_precision_score``).

    AP = sum over distinct thresholds of (recall gain) x precision; tied scores form one step.
    Raises if only one class is present: with no fakes AP is undefined, with no reals it is
    trivially 1 and would hide a broken dataset.
    """
    is_fake, s = _validate(y_true, scores)
    _require_both_classes(is_fake, "average_precision")
    tp, fp, _ = _cumulative_counts(is_fake, s)
    precision = tp / (tp + fp)
    recall_gain = np.diff(np.r_[0, tp]) / tp[-1]
    return float(np.sum(recall_gain * precision))


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
    threshold: float = 0.5,
) -> dict[str, float]:
    """All metrics for one (reals, one generator) set as plain Python numbers, JSON-ready.

    Keys: n_real, n_fake, acc, real_acc, fake_acc, oracle_acc, ap, auc, then
    ``f"tpr@fpr={fpr:g}"`` for each target FPR. Needs both classes.
    """
    is_fake, s = _validate(y_true, scores)
    _require_both_classes(is_fake, "compute_metrics")
    called_fake = s > threshold
    out: dict[str, float] = {
        "n_real": int((~is_fake).sum()),
        "n_fake": int(is_fake.sum()),
        "acc": float(np.mean(called_fake == is_fake)),
        "real_acc": float(np.mean(~called_fake[~is_fake])),
        "fake_acc": float(np.mean(called_fake[is_fake])),
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
