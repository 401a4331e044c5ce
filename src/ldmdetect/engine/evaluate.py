"""Evaluate a detector: metrics per generator, robustness sweep, format control, report."""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ldmdetect.config import DecisionRule
from ldmdetect.detector import Detector
from ldmdetect.engine.evaluate_attribution import closed_set_section
from ldmdetect.engine.evaluate_passes import ScoringPasses
from ldmdetect.engine.evaluate_results import Condition, Evaluation
from ldmdetect.engine.metrics import (
    bootstrap_intervals,
    compute_metrics,
    generator_intervals,
    mean_metrics,
)
from ldmdetect.engine.report import write_report
from ldmdetect.io.datasets import find_images
from ldmdetect.io.perturb import Perturbation, parse_perturbation

if TYPE_CHECKING:
    from ldmdetect.io.pairs import Pair

# Condition and Evaluation (the typed result) are defined in evaluate_results and named here
# too, where callers of evaluate() look for them.
__all__ = ["SYNRIS_GENERATOR", "Condition", "Evaluation", "evaluate", "generator_sets"]


def generator_sets(fake_dirs: Sequence[str | os.PathLike]) -> dict[str, list[Path]]:
    """One generator per folder, named by the folder (parent/name when names collide)."""
    dirs = [Path(d) for d in fake_dirs]
    names = [d.name for d in dirs]
    sets = {}
    for directory, name in zip(dirs, names, strict=True):
        if names.count(name) > 1:
            name = f"{directory.parent.name}/{name}"
        if name in sets:
            raise ValueError(f"two --fake folders are both named {name!r}")
        sets[name] = find_images([directory])
    return sets


def _formats(paths: Sequence[Path]) -> dict[str, int]:
    return dict(Counter(p.suffix.lower().lstrip(".") or "none" for p in paths))


def evaluate(
    detector: Detector,
    real: Sequence[str | os.PathLike],
    fakes: Mapping[str, Sequence[str | os.PathLike]] | Sequence[str | os.PathLike],
    *,
    perturbations: Sequence[str | Perturbation] = (),
    format_control: int | None = None,
    tries: Sequence[int] = (1,),
    batch_size: int = 64,
    num_workers: int = 0,
    output: str | os.PathLike | None = None,
    settings: Mapping | None = None,
    progress: bool = False,
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    pairs: str | os.PathLike | None = None,
    family_fpr: float | None = 0.01,
    families: Mapping[str, str] | None = None,
    cross_check: bool = False,
) -> Evaluation:
    """Score reals and each generator's fakes under every condition; optionally write a report.

    ``fakes`` is {generator name: files or folders} or a list of folders (one generator each).
    Perturbations apply to both classes. ``format_control=Q`` passes reals and fakes through
    the same JPEG quality Q, so a detector that learned file format instead of generation
    traces is exposed. The first entry of ``tries`` is the headline; all are reported.

    Every condition carries ``intervals``: ``confidence`` percentile bootstrap intervals for
    AUC and each TPR@FPR, per generator and for the mean, from ``n_boot`` stratified resamples
    (reals and fakes drawn separately) seeded by ``seed``; ``n_boot=0`` leaves them out (None).

    ``pairs``: a SynRIS ``pairs.csv`` (``ldmdetect synris``). The result then has a
    ``"synris"`` section: the paired fakes against their matched reals next to the same fakes
    against ``real``, so the share of the score that came from telling themes apart shows as
    the gap. ``fakes`` may then be empty; the paired fakes are the generator
    ``"synris fakes"``.

    ``family_fpr``: for a family head, the FPR whose calibrated threshold decides which files
    are judged generated and so get a family (``Evaluation.families``); the raw 0.5 rule where
    the detector has no resolved threshold there (or with None).

    A family head's result also has an ``attribution`` section (see
    :mod:`ldmdetect.engine.evaluate_attribution`): the confusion matrix of true family against
    attributed family, accuracy and ``unknown`` share per row, over the held-out reals and
    each generator set whose family is known: its name where that is one of the detector's
    families, else ``families`` ({set name: family}; a family outside the detector's is an
    open-set row, right when called "unknown"). ``cross_check`` adds a training-free judge's
    (AEROBLADE's) nearest autoencoder per attributed image, over the autoencoders the
    detector's training data came from, and its agreement with the family head. Detectors
    without families take neither.
    """
    sets = _find_sets(real, fakes, pairs)
    tries = list(tries)
    if not tries:
        raise ValueError("tries must name at least one setting")
    if n_boot < 0:
        raise ValueError(f"n_boot must be >= 0 (0 = no intervals), got {n_boot}")
    perturbs = [p if isinstance(p, Perturbation) else parse_perturbation(p) for p in perturbations]
    truth, left_out = _true_families(detector, list(sets.fakes), families, cross_check)
    passes = ScoringPasses(
        detector,
        {"batch_size": batch_size, "num_workers": num_workers, "progress": progress},
        tries[0],
        _family_rule(detector, family_fpr),
    )
    boot = _Bootstrap(n_boot, confidence, seed)
    scored = _score_conditions(passes, sets, tries, perturbs, format_control, boot)
    synris = None
    if sets.pairs is not None:  # then pairs is not None either
        synris = _synris_section(passes, sets.pairs, str(pairs), scored.real_scores, boot)
    recorded = _settings(
        detector, settings, real, sets, tries, perturbs, format_control, pairs, boot
    )
    result = _result(passes, scored, synris, recorded)
    if detector.families:
        result["attribution"] = _attribution(
            detector, passes, truth, left_out, sets.fakes, cross_check
        )
        if cross_check:
            result["settings"]["cross_check"] = True
        if families:
            result["settings"]["families"] = dict(families)
    scores = {"real": scored.real_scores, "generators": scored.gen_scores}
    evaluation = Evaluation(
        result, scores, families=passes.attributed, family_inputs=passes.family_inputs
    )
    if output is not None:
        evaluation.files = write_report(result, scores, output)
    return evaluation


@dataclass(frozen=True)
class _Sets:
    """The files an evaluation scores: the reals, each generator's fakes, and the SynRIS
    pairs (None without ``pairs``), found once so every condition scores the same files."""

    real: list[Path]
    fakes: dict[str, list[Path]]
    pairs: list[Pair] | None

    @property
    def n_images(self) -> int:
        """Reals and fakes of one condition's pass: what its time per image divides by."""
        return len(self.real) + sum(len(p) for p in self.fakes.values())


def _find_sets(
    real: Sequence[str | os.PathLike],
    fakes: Mapping[str, Sequence[str | os.PathLike]] | Sequence[str | os.PathLike],
    pairs: str | os.PathLike | None,
) -> _Sets:
    """The images behind ``real``, ``fakes`` and ``pairs`` (see :func:`evaluate`); an empty
    set is an error here, before any scoring, since its metrics would mean nothing."""
    real_paths = find_images(real)
    if isinstance(fakes, Mapping):
        fake_sets = {name: find_images(paths) for name, paths in fakes.items()}
    else:
        fake_sets = generator_sets(fakes)
    pair_list = None
    if pairs is not None:
        from ldmdetect.io.pairs import read_pairs_csv

        pair_list = read_pairs_csv(pairs)
        if not fake_sets:
            fake_sets = {SYNRIS_GENERATOR: [Path(p) for p in _unique(q.fake for q in pair_list)]}
    if not fake_sets:
        raise ValueError("no fake images: give fake folders or SynRIS pairs")
    if not real_paths:
        raise ValueError("no real images found in " + ", ".join(map(str, real)))
    for name, paths in fake_sets.items():
        if not paths:
            raise ValueError(f"generator {name!r}: no images found")
    return _Sets(real_paths, fake_sets, pair_list)


def _true_families(
    detector: Detector,
    set_names: Sequence[str],
    families: Mapping[str, str] | None,
    cross_check: bool,
) -> tuple[dict[str, str], list[str]]:
    """A family head's known family per set and the sets left out (none for other
    detectors, for which asking for families or a cross-check is an error, not a no-op)."""
    if (families or cross_check) and not detector.families:
        raise ValueError(
            "--family and --cross-check apply to detectors with a family head; this "
            f"{detector.config.method} detector has none (it was trained on one family)"
        )
    if not detector.families:
        return {}, []
    from ldmdetect.engine.evaluate_attribution import true_families

    return true_families(list(set_names), detector.families, families)


def _family_rule(detector: Detector, fpr: float | None) -> DecisionRule:
    """The rule that decides which files a family head attributes: the threshold calibrated
    at ``fpr``, or the raw rule where that FPR is unresolved (for the families only; the
    metrics need no threshold)."""
    try:
        return detector.config.decision_rule(fpr, None)
    except ValueError:
        return detector.config.decision_rule(None, None)


@dataclass(frozen=True)
class _Bootstrap:
    """How every interval of one evaluation is drawn, so that all conditions and the SynRIS
    comparison resample alike and metrics.json can say how."""

    n_boot: int
    confidence: float
    seed: int

    def intervals(
        self, real_scores: np.ndarray, gen_scores: Mapping[str, np.ndarray]
    ) -> dict | None:
        """Per generator and mean intervals of a condition; None with ``n_boot=0`` or a set
        with no scored image (nothing to resample)."""
        if self.n_boot == 0 or real_scores.size == 0:
            return None
        if any(s.size == 0 for s in gen_scores.values()):
            return None
        return generator_intervals(
            real_scores, gen_scores, n_boot=self.n_boot, level=self.confidence, seed=self.seed
        )

    def settings(self) -> dict[str, Any]:
        """metrics.json's ``settings.bootstrap``."""
        return {
            "n_boot": self.n_boot,
            "confidence": self.confidence,
            "seed": self.seed,
            "resampling": "reals and fakes separately (stratified)",
        }


@dataclass(frozen=True)
class _Scored:
    """Every condition's section of the result, and the clean headline scores for the plots
    and the SynRIS comparison's unmatched row."""

    headline: dict[str, Any]
    by_tries: dict[str, dict[str, Any]]
    robustness: dict[str, dict[str, Any]]
    control: dict[str, Any] | None
    real_scores: np.ndarray
    gen_scores: dict[str, np.ndarray]


def _score_conditions(
    passes: ScoringPasses,
    sets: _Sets,
    tries: Sequence[int],
    perturbs: Sequence[Perturbation],
    format_control: int | None,
    boot: _Bootstrap,
) -> _Scored:
    """Score every condition, headline first (its pass records the clean scores the others
    reuse): each tries setting clean, each perturbation and the format control at the
    headline's tries."""
    headline, real_scores, gen_scores = _condition(passes, sets, None, tries[0], boot)
    by_tries = {str(tries[0]): headline}
    for n_tries in tries[1:]:
        by_tries[str(n_tries)] = _condition(passes, sets, None, n_tries, boot)[0]
    robustness = {str(p): _condition(passes, sets, p, tries[0], boot)[0] for p in perturbs}
    control = None
    if format_control is not None:
        jpeg = parse_perturbation(f"jpeg:{format_control}")
        control = _condition(passes, sets, jpeg, tries[0], boot)[0]
        control["quality"] = format_control
    return _Scored(headline, by_tries, robustness, control, real_scores, gen_scores)


def _condition(
    passes: ScoringPasses,
    sets: _Sets,
    perturbation: Perturbation | None,
    n_tries: int,
    boot: _Bootstrap,
) -> tuple[dict[str, Any], np.ndarray, dict[str, np.ndarray]]:
    """One condition's section (metrics per generator, their mean, intervals, time per
    image) with the reals' and each generator's scores under it."""
    label = f"{perturbation or 'clean'}, {n_tries}-try"
    probabilistic = passes.detector.method.probabilistic
    start = time.perf_counter()
    real_scores = passes.score(sets.real, perturbation, n_tries, f"real ({label})", "")
    per_gen, gen_scores = {}, {}
    for name, paths in sets.fakes.items():
        fake_scores = passes.score(paths, perturbation, n_tries, f"{name} ({label})", name)
        per_gen[name] = _metrics(real_scores, fake_scores, probabilistic)
        gen_scores[name] = fake_scores
    # Wall time per image for decode + perturb + crops + model: the cost of one verdict.
    seconds_per_image = (time.perf_counter() - start) / sets.n_images
    section = {
        "generators": per_gen,
        "mean": mean_metrics(per_gen),
        "intervals": boot.intervals(real_scores, gen_scores),
        "seconds_per_image": seconds_per_image,
    }
    return section, real_scores, gen_scores


def _pair_scores(
    passes: ScoringPasses, pair_list: Sequence[Pair], pairs: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The SynRIS fakes' and matched reals' clean scores (failed ones left out) and the
    (fake, matched real) score of each pair where both scored; a pair file not among the
    evaluated sets is scored here, once."""
    clean = passes.clean
    fake_files = _unique(os.path.abspath(p.fake) for p in pair_list)
    real_files = _unique(os.path.abspath(p.real) for p in pair_list)
    todo = [p for p in _unique([*fake_files, *real_files]) if p not in clean]
    if todo:
        passes.score(todo, None, passes.headline_tries, "SynRIS pairs")
    fake = np.array([clean[p] for p in fake_files])
    matched = np.array([clean[p] for p in real_files])
    fake, matched = fake[~np.isnan(fake)], matched[~np.isnan(matched)]
    if fake.size == 0 or matched.size == 0:
        raise ValueError(f"{pairs}: no paired fake or matched real could be scored")
    both = [(clean[os.path.abspath(p.fake)], clean[os.path.abspath(p.real)]) for p in pair_list]
    both = np.array([b for b in both if not np.isnan(b).any()]).reshape(-1, 2)
    return fake, matched, both


def _synris_section(
    passes: ScoringPasses,
    pair_list: Sequence[Pair],
    pairs: str,
    real_scores: np.ndarray,
    boot: _Bootstrap,
) -> dict[str, Any]:
    """The ``synris`` section: the paired fakes against their matched reals next to the same
    fakes against the evaluated reals, so the share of the score that came from telling
    themes apart shows as the AUC gap."""
    fake, matched, both = _pair_scores(passes, pair_list, pairs)
    probabilistic = passes.detector.method.probabilistic
    section = {
        "pairs": pairs,
        "n_pairs": len(pair_list),
        "n_matched_reals": int(matched.size),
        "matched": _metrics(matched, fake, probabilistic),
        "unmatched": _metrics(real_scores, fake, probabilistic),
        "intervals": None,
        # Share of pairs where the fake outscores its own matched real (ties count half).
        "pair_win_rate": float(
            np.mean((both[:, 0] > both[:, 1]) + 0.5 * (both[:, 0] == both[:, 1]))
        )
        if both.size
        else None,
        "similarity_mean": float(np.nanmean([p.similarity for p in pair_list])),
    }
    section["auc_gap"] = section["unmatched"]["auc"] - section["matched"]["auc"]
    if boot.n_boot:
        section["intervals"] = {
            name: bootstrap_intervals(
                np.r_[np.zeros(reals.size), np.ones(fake.size)],
                np.r_[reals, fake],
                n_boot=boot.n_boot,
                level=boot.confidence,
                seed=boot.seed,
            )
            for name, reals in (("matched", matched), ("unmatched", real_scores))
        }
    summary = Path(pairs).parent / "synris.json"
    if summary.is_file():
        with contextlib.suppress(ValueError):
            section["embedder"] = json.loads(summary.read_text()).get("embedder")
    return section


def _settings(
    detector: Detector,
    settings: Mapping | None,
    real: Sequence[str | os.PathLike],
    sets: _Sets,
    tries: list[int],
    perturbs: Sequence[Perturbation],
    format_control: int | None,
    pairs: str | os.PathLike | None,
    boot: _Bootstrap,
) -> dict[str, Any]:
    """metrics.json's ``settings``: what was evaluated and how, so a result can be
    reproduced and its file formats compared (a format gap is a shortcut a detector takes)."""
    formats = {"real": _formats(sets.real)} | {n: _formats(p) for n, p in sets.fakes.items()}
    return {
        "detector": dict(settings or {}),
        "method": detector.config.method,
        "backbone": detector.config.backbone,
        "input_size": detector.config.input_size,
        "tries": tries,
        "real": [str(r) for r in real],
        "n_real": len(sets.real),
        "fakes": {name: len(paths) for name, paths in sets.fakes.items()},
        "perturbations": [str(p) for p in perturbs],
        "format_control_quality": format_control,
        "pairs": None if pairs is None else str(pairs),
        "bootstrap": boot.settings(),
        "file_formats": formats,
        "mixed_formats": len({tuple(sorted(f)) for f in formats.values()}) > 1,
    }


def _result(
    passes: ScoringPasses, scored: _Scored, synris: dict[str, Any] | None, settings: dict[str, Any]
) -> dict[str, Any]:
    """The result mapping metrics.json holds (keys in the order users read them; the
    headline's metrics at the top, every condition under its section)."""
    result = {
        "settings": settings,
        "generators": scored.headline["generators"],
        "mean": scored.headline["mean"],
        "intervals": scored.headline["intervals"],
        "tries": scored.by_tries,
        "robustness": scored.robustness,
        "format_control": scored.control,
        "synris": synris,
        "errors": passes.errors,
    }
    if passes.per_class:  # two-class results keep their keys
        result["class_probabilities"] = passes.class_means
    return result


SYNRIS_GENERATOR = "synris fakes"


def _unique(items) -> list:
    """Items in first-seen order without repeats."""
    return list(dict.fromkeys(items))


def _attribution(
    detector: Detector,
    passes: ScoringPasses,
    truth: Mapping[str, str],
    left_out: Sequence[str],
    fake_sets: Mapping[str, Sequence[Path]],
    cross_check: bool,
) -> dict[str, Any]:
    """The ``attribution`` section of a family head's result: the confusion matrix of the
    headline pass's attributions, the judge's cross-check where asked (over the attributed
    sets' files that scored), and the closed-set reading of the same probabilities."""
    from ldmdetect.engine.evaluate_attribution import attribution_section, judge_cross_check

    attributed, failed = passes.attributed, passes.failed
    section = attribution_section(
        detector.families,
        attributed,
        failed,
        truth,
        left_out,
        family_threshold=detector.config.family_threshold,
        decision=passes.family_rule.threshold_name,
    )
    if cross_check and truth:
        keep = {name: [not f for f in failed[name]] for name in truth}
        section["cross_check"] = judge_cross_check(
            detector,
            {n: [p for p, k in zip(fake_sets[n], keep[n], strict=True) if k] for n in truth},
            truth,
            {n: [a for a, k in zip(attributed[n], keep[n], strict=True) if k] for n in truth},
        )
    section["closed_set"] = closed_set_section(passes.family_inputs, truth, detector.classes)
    return section


def _metrics(
    real_scores: np.ndarray, fake_scores: np.ndarray, probabilistic: bool
) -> dict[str, float]:
    """Every metric; accuracy at the fixed 0.5 cut only where scores are probabilities."""
    y = np.concatenate([np.zeros(len(real_scores)), np.ones(len(fake_scores))])
    threshold = 0.5 if probabilistic else None
    return compute_metrics(y, np.concatenate([real_scores, fake_scores]), threshold=threshold)
