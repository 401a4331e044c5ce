"""Evaluation outputs: metrics.json for machines, report.md for people, ROC and histogram PNGs.

Two ROC plots: ``roc.png`` on linear axes, and ``roc_logfpr.png`` with a log-scale FPR axis,
where the 0.1-5% FPR a deployed detector runs at is wide enough to read (on linear axes it is
the leftmost few pixels).

The result mapping (what metrics.json holds)::

    {"settings": {...},                      # free-form: detector, tries, perturbations, paths
     "generators": {name: compute_metrics(...)},
     "mean": mean_metrics(generators),
     "intervals": generator_intervals(...) or None,               # optional, per condition too
     "robustness": {spec: {"generators": {...}, "mean": {...}, "intervals": ...}},  # may be empty
     "format_control": {"generators": {...}, "mean": {...}, "intervals": ...} or None,
     "synris": {"matched": {...}, "unmatched": {...}, "intervals": ..., ...} or None,
     # methods of more than two classes only: each set's mean probability per class (clean)
     "class_probabilities": {"real": {"p_<class>": mean}, "generators": {name: {...}}},
     # family heads only: the attribution confusion matrix (ldmdetect.engine.evaluate_attribution)
     "attribution": {"rows", "columns", "counts", "accuracy_per_family", ...}}

``render_markdown`` reads it through :class:`ldmdetect.engine.evaluate_results.Evaluation`
(its conditions, the SynRIS comparison, the per-class means), which also takes a result built
by hand without the optional sections.

Where a condition has intervals, a table cell reads "0.9210 [0.8800, 0.9600]".

Plots take clean-condition scores: ``{"real": array, "generators": {name: array}}``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ldmdetect.engine.evaluate_results import (
    ClassProbabilities,
    Condition,
    Evaluation,
    SynRISComparison,
)
from ldmdetect.engine.figures import new_figure, save_png
from ldmdetect.engine.markdown import DEFAULT_COLUMNS, markdown_table
from ldmdetect.engine.metrics import _allowed_reals, _as_scores, roc_auc, roc_curve
from ldmdetect.io.files import atomic_write_text

__all__ = [
    "DEFAULT_COLUMNS",
    "log_fpr_floor",
    "markdown_table",
    "plot_histograms",
    "plot_roc",
    "plot_roc_logfpr",
    "render_markdown",
    "write_report",
]

_HIST_BINS = 50
_TPR_PREFIX = "tpr@fpr="
# The log-FPR plot's axis starts here, or at 1/n_real when the reals cannot resolve it; the
# guides mark the FPRs that the tpr@fpr columns report.
LOG_FPR_FLOOR = 1e-3
LOG_FPR_GUIDES: tuple[float, ...] = (0.001, 0.01, 0.05)


def _percent(fpr: float) -> str:
    """0.001 -> "0.1%", 0.01 -> "1%": guide labels as the text names them."""
    return f"{fpr:.1%}".replace(".0%", "%")


THRESHOLD_NOTE = (
    "TPR@FPR=x: the threshold t is set on the real images only, at the (k+1)-th largest real "
    "score with k = floor(x * n_real); an image is called fake iff its score > t, so at most k "
    "reals are flagged (fewer when reals tie at t). acc/real_acc/fake_acc use the fixed decision "
    "threshold (fake iff score > threshold, 0.5 by default), and are left out for methods whose "
    "scores are not probabilities (aeroblade's distances); oracle_acc uses the best threshold "
    "for each generator. The mean row averages over generators with equal weight; its n_fake is "
    "the total and its n_real the shared real set."
)


def _setting_text(value: Any) -> str:
    if isinstance(value, (os.PathLike, np.generic)):
        value = _json_default(value)
    if isinstance(value, str):
        return value
    return json.dumps(value, default=_json_default)


def _group_table(condition: Condition, label: str) -> str:
    """Per-generator rows followed by their mean, for the clean and format-control conditions."""
    rows = condition.rows()
    return markdown_table(
        rows, list(condition.mean), label=label, intervals=condition.row_intervals()
    )


def _small_sample_notes(mean: Mapping[str, Any]) -> list[str]:
    """Flag TPR@FPR targets too small for the real set: with k = 0 the number is TPR at zero
    false positives, not at the stated rate, and would be misread next to larger studies."""
    n_real = mean.get("n_real")
    if not isinstance(n_real, (int, np.integer)):
        return []
    notes = []
    for key in mean:
        if not key.startswith(_TPR_PREFIX):
            continue
        fpr = float(key[len(_TPR_PREFIX) :])
        if fpr > 0 and _allowed_reals(fpr, int(n_real)) == 0:
            notes.append(
                f"{key}: with {n_real} reals no false positive is allowed (k = 0), so this is "
                f"the TPR at zero false positives; resolving FPR {fpr:g} needs at least "
                f"{math.ceil(1 / fpr - 1e-9)} reals.\n"
            )
    return notes


def _class_table(means: ClassProbabilities) -> str:
    """Methods of more than two classes: each set's mean probability per class, one
    ``p_<class>`` column each, so attribution to a family reads across a row."""
    return markdown_table(means.rows(), means.columns, label="images")


def render_markdown(result: Mapping[str, Any] | Evaluation) -> str:
    """The human-readable report: settings, clean, robustness and format-control tables.

    ``result``: an :class:`Evaluation` or the result mapping metrics.json holds (read through
    :meth:`Evaluation.of`)."""
    evaluation = result if isinstance(result, Evaluation) else Evaluation.of(result)
    clean = evaluation.headline()
    if not clean.generators:
        raise ValueError("result has no generators to report")
    columns = list(clean.mean)
    parts = ["# ldmdetect evaluation report\n"]

    settings = evaluation.settings
    parts.append("## Settings\n")
    if settings:
        parts.append("".join(f"- {k}: `{_setting_text(v)}`\n" for k, v in settings.items()))
    else:
        parts.append("(none recorded)\n")

    parts.append("## Clean images\n")
    parts.append(_group_table(clean, "generator"))
    if evaluation.class_probabilities:
        parts.append("## Per-class probabilities (mean over each set's images)\n")
        parts.append(_class_table(evaluation.class_probabilities))
    if evaluation.attribution:
        from ldmdetect.engine.evaluate_attribution import markdown as attribution_markdown

        parts.append(attribution_markdown(evaluation.attribution))

    by_tries = evaluation.conditions("tries")
    if len(by_tries) > 1:
        parts.append("## Crops per image (mean over generators)\n")
        parts.append("1 try = the center crop; N tries = mean probability over N random crops.\n")
        rows = {c.name: {**c.mean, "seconds_per_image": c.seconds_per_image} for c in by_tries}
        intervals = {c.name: c.mean_intervals for c in by_tries}
        parts.append(
            markdown_table(
                rows, [*columns, "seconds_per_image"], label="inference", intervals=intervals
            )
        )

    robustness = evaluation.conditions("robustness")
    parts.append("## Robustness (mean over generators)\n")
    if robustness:
        rows = {"clean": clean.mean} | {c.label: c.mean for c in robustness}
        intervals = {"clean": clean.mean_intervals}
        intervals |= {c.label: c.mean_intervals for c in robustness}
        parts.append(markdown_table(rows, columns, label="perturbation", intervals=intervals))
    else:
        parts.append("No perturbations were evaluated.\n")

    for control in evaluation.conditions("format_control"):
        parts.append("## Format control (reals and fakes through the same JPEG quality)\n")
        parts.append(
            "A detector that separates file formats rather than generators collapses here.\n"
        )
        parts.append(_group_table(control, "generator"))

    if evaluation.synris:
        parts.append(_synris_text(evaluation.synris, columns))

    parts.append(_plots_text(clean.mean))
    parts.append(_notes_text(evaluation, clean))
    return "\n".join(parts)


def _notes_text(evaluation: Evaluation, clean: Condition) -> str:
    """The Notes section: how thresholds and intervals are read, and what may mislead (mixed
    file formats, skipped files, too few reals for a stated FPR)."""
    settings = evaluation.settings
    parts = ["## Notes\n", THRESHOLD_NOTE + "\n"]
    if clean.intervals:
        boot = settings.get("bootstrap") or {}
        level = boot.get("confidence", 0.95)
        count = f"{boot['n_boot']} " if "n_boot" in boot else ""
        parts.append(
            f"[lo, hi]: {level:.0%} percentile bootstrap interval from {count}resamples that draw "
            "the reals and each generator's fakes separately, so every resample keeps the "
            "study's class sizes. The mean row's interval averages the generators' replicates, "
            "which share each real resample.\n"
        )
    if settings.get("mixed_formats"):
        parts.append(
            "**Warning:** the classes come in different file formats "
            f"(`{_setting_text(settings.get('file_formats'))}`); a detector can score well "
            "by telling formats apart. Compare with the format-control table.\n"
        )
    errors = evaluation.errors
    if errors:
        parts.append(f"{len(errors)} file(s) could not be decoded and were skipped:\n")
        parts.append("".join(f"- `{path}`: {reason}\n" for path, reason in errors.items()))
    parts.extend(_small_sample_notes(clean.mean))
    return "\n".join(parts)


def log_fpr_floor(n_real: int) -> float:
    """Where the log-FPR axis starts: 0.1%, or 1/n_real when fewer than 1000 reals cannot
    resolve a smaller FPR (one false positive is already 1/n_real)."""
    if n_real < 1:
        raise ValueError(f"need at least one real score, got n_real={n_real}")
    return max(LOG_FPR_FLOOR, 1.0 / n_real)


def _plots_text(mean: Mapping[str, Any]) -> str:
    """The Plots section: what each PNG shows, with the log-FPR axis's start for these reals."""
    n_real = mean.get("n_real")
    if isinstance(n_real, (int, np.integer)) and n_real > 0:
        floor = log_fpr_floor(int(n_real))
        start = f"{floor:.3g}" + (f" (1/n_real, {n_real} reals)" if floor > LOG_FPR_FLOOR else "")
        shown = [g for g in LOG_FPR_GUIDES if g >= floor]
    else:
        start, shown = "max(0.001, 1/n_real)", list(LOG_FPR_GUIDES)
    guides = f"guides at {', '.join(map(_percent, shown))} FPR" if shown else "no FPR guides"
    return (
        "## Plots\n\n"
        "- `roc.png`: ROC per generator against the reals, linear axes.\n"
        f"- `roc_logfpr.png`: the same ROC with a log-scale FPR axis from {start} to 1 and "
        f"{guides}, so the low-FPR regime a deployed detector runs in is readable; the curve "
        "is a step (the TPR of the best threshold with at most that FPR), and its left edge is "
        "the TPR at FPR up to the axis start, zero included.\n"
        "- `histograms.png`: score histograms per generator over the reals.\n"
    )


def _synris_text(synris: SynRISComparison, columns: Sequence[str]) -> str:
    """The SynRIS section: the paired fakes against their matched reals, then against the
    unmatched real set; a high AUC that drops on matched reals came from telling themes apart."""
    rows = {"SynRIS-matched reals": synris.matched, "unmatched reals": synris.unmatched}
    found = synris.intervals
    intervals = (
        {"SynRIS-matched reals": found["matched"], "unmatched reals": found["unmatched"]}
        if found
        else None
    )
    embedder = synris.embedder or {}
    lines = [
        "## SynRIS (paired fakes vs. matched reals)\n",
        f"{synris.n_pairs} pairs from `{synris.pairs}`, {synris.n_matched_reals} "
        "distinct matched reals scored"
        + (f", matched with `{embedder.get('name')}`" if embedder.get("name") else "")
        + f" (mean cosine similarity {synris.similarity_mean:.4f}). Same fakes in both rows.\n",
        markdown_table(rows, columns, label="real set", intervals=intervals),
        f"AUC gap (unmatched - matched): {synris.auc_gap:+.4f}.",
    ]
    if synris.pair_win_rate is not None:
        lines[-1] += (
            f" Pair win rate (fake scored above its own matched real, ties half): "
            f"{synris.pair_win_rate:.4f}."
        )
    lines[-1] += "\n"
    return "\n".join(lines)


def _split_scores(scores: Mapping[str, Any]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    real = _as_scores(scores["real"], "real scores")
    gens = {str(n): _as_scores(s, f"scores of {n!r}") for n, s in scores["generators"].items()}
    if real.size == 0:
        raise ValueError("no real scores to plot")
    if not gens:
        raise ValueError("no generator scores to plot")
    empty = [n for n, s in gens.items() if s.size == 0]
    if empty:
        raise ValueError(f"generator(s) {empty} have no scores to plot")
    return real, gens


def plot_roc(scores: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """One ROC curve per generator against the shared reals, AUC in the legend; saves a PNG."""
    real, gens = _split_scores(scores)
    fig = new_figure((6.0, 5.5))
    ax = fig.add_subplot()
    for name, fake in gens.items():
        y = np.r_[np.zeros(real.size, np.int8), np.ones(fake.size, np.int8)]
        s = np.r_[real, fake]
        fpr, tpr, _ = roc_curve(y, s)
        ax.plot(fpr, tpr, lw=1.5, label=f"{name} (AUC {roc_auc(y, s):.4f})")
    ax.plot([0, 1], [0, 1], ls="--", lw=1, color="grey", label="chance")
    ax.set(
        xlim=(0, 1),
        ylim=(0, 1.01),
        xlabel="False positive rate (reals called fake)",
        ylabel="True positive rate (fakes detected)",
        title="ROC per generator vs reals",
    )
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize="small")
    return save_png(fig, path)


def _roc_logfpr_figure(scores: Mapping[str, Any]) -> tuple[Any, float]:
    """The log-FPR ROC figure and where its FPR axis starts (see :func:`plot_roc_logfpr`)."""
    real, gens = _split_scores(scores)
    floor = log_fpr_floor(real.size)
    fig = new_figure((6.0, 5.5))
    ax = fig.add_subplot()
    for name, fake in gens.items():
        y = np.r_[np.zeros(real.size, np.int8), np.ones(fake.size, np.int8)]
        fpr, tpr, _ = roc_curve(y, np.r_[real, fake])
        # A step, not a line: between two ROC points no threshold reaches more TPR without
        # the next point's FPR. FPR 0 has no place on a log axis: points below the floor are
        # drawn on it, so the left edge reads as the TPR at FPR <= floor.
        ax.step(np.maximum(fpr, floor), tpr, where="post", lw=1.5, label=name)
    chance = np.logspace(math.log10(floor), 0, 200)
    ax.plot(chance, chance, ls="--", lw=1, color="grey", label="chance")
    for guide in LOG_FPR_GUIDES:
        if guide >= floor:
            ax.axvline(guide, color="black", lw=0.8, ls=":", alpha=0.7)
            ax.annotate(
                _percent(guide),
                (guide, 1.0),
                xycoords=("data", "axes fraction"),
                xytext=(2, -12),
                textcoords="offset points",
                fontsize="small",
            )
    ax.set_xscale("log")
    ax.set(
        xlim=(floor, 1.0),
        ylim=(0, 1.01),
        xlabel=f"False positive rate, log scale (n_real = {real.size})",
        ylabel="True positive rate (fakes detected)",
        title="ROC per generator vs reals, low-FPR regime",
    )
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="lower right", fontsize="small")
    return fig, floor


def plot_roc_logfpr(scores: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """The ROC with a log-scale FPR axis from 0.1% (or 1/n_real with fewer reals) to 1, with
    guides at 0.1%, 1% and 5% FPR; saves a PNG whose ``Description`` text chunk states the
    axis, so a reader can check which FPR range it shows."""
    fig, floor = _roc_logfpr_figure(scores)
    guides = [g for g in LOG_FPR_GUIDES if g >= floor]
    description = (
        f"ROC, FPR axis log scale from {floor:.6g} to 1; "
        f"guides at FPR {', '.join(f'{g:g}' for g in guides) or 'none (too few reals)'}"
    )
    return save_png(fig, path, {"Title": "ROC (log FPR)", "Description": description})


def _shared_bins(arrays: Sequence[np.ndarray]) -> np.ndarray:
    """Bins in [0, 1] for probabilities, else over the observed range, shared by all panels
    so heights compare across generators."""
    lo = min(float(a.min()) for a in arrays)
    hi = max(float(a.max()) for a in arrays)
    if lo >= 0.0 and hi <= 1.0:
        lo, hi = 0.0, 1.0
    elif lo == hi:
        lo, hi = lo - 0.5, hi + 0.5
    return np.linspace(lo, hi, _HIST_BINS + 1)


def plot_histograms(scores: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """Score histograms, one panel per generator overlaid on the reals; saves a PNG.

    Densities, not counts, so a generator with few images is still comparable to the reals.
    """
    real, gens = _split_scores(scores)
    bins = _shared_bins([real, *gens.values()])
    ncols = min(3, len(gens))
    nrows = math.ceil(len(gens) / ncols)
    fig = new_figure((4.0 * ncols, 3.2 * nrows))
    # No sharex: it drops tick labels above a hidden spare panel; equal bins give equal x-ranges.
    axes = fig.subplots(nrows, ncols, squeeze=False)
    # The grid may have more panels than generators; the spare ones are hidden below.
    for ax, (name, fake) in zip(axes.flat, gens.items(), strict=False):
        ax.hist(real, bins=bins, density=True, alpha=0.55, label=f"real (n={real.size})")
        ax.hist(fake, bins=bins, density=True, alpha=0.55, label=f"{name} (n={fake.size})")
        ax.set(title=name, xlabel="score (higher = more fake)", ylabel="density")
        ax.set_xlim(bins[0], bins[-1])
        ax.legend(fontsize="small")
    for ax in list(axes.flat)[len(gens) :]:
        ax.set_visible(False)
    return save_png(fig, path)


def _json_default(obj: Any) -> Any:
    """Make numpy values and paths JSON-native; anything else is a bug and should fail."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"cannot write {type(obj).__name__} to metrics.json: {obj!r}")


def write_report(
    result: Mapping[str, Any], scores: Mapping[str, Any], output_dir: str | os.PathLike[str]
) -> dict[str, Path]:
    """Write metrics.json, report.md, roc.png, roc_logfpr.png and histograms.png into
    ``output_dir``; with an ``attribution`` section, attribution_confusion.png too.

    Text is rendered before anything is written, so a malformed result leaves no partial
    report. metrics.json is strict JSON (no NaN), readable by any tool, in insertion order.
    """
    out = Path(output_dir)
    markdown = render_markdown(result)
    metrics_json = json.dumps(result, indent=2, allow_nan=False, default=_json_default) + "\n"
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "metrics": atomic_write_text(out / "metrics.json", metrics_json),
        "report": atomic_write_text(out / "report.md", markdown),
        "roc": plot_roc(scores, out / "roc.png"),
        "roc_logfpr": plot_roc_logfpr(scores, out / "roc_logfpr.png"),
        "histograms": plot_histograms(scores, out / "histograms.png"),
    }
    attribution = Evaluation.of(result).attribution
    if attribution:
        from ldmdetect.engine.attribution_report import DEFAULT_PNG, plot_confusion_matrix
        from ldmdetect.engine.evaluate_attribution import matrix_from_section

        cm = matrix_from_section(attribution)
        if cm is not None:
            files["attribution"] = plot_confusion_matrix(cm, out / DEFAULT_PNG)
    return files
