"""Scoring the sets of an evaluation, pass by pass, and what the passes record besides the
scores: decode errors, every file's clean headline score, per-class means and a family head's
attributions. :mod:`ldmdetect.engine.evaluate` runs the passes and turns their scores into
metrics."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ldmdetect.config import DecisionRule
from ldmdetect.detector import Detector
from ldmdetect.engine.evaluate_attribution import FamilyInputs
from ldmdetect.engine.scan import ScoreOptions, class_columns, score_files_novel
from ldmdetect.io.perturb import Perturbation

__all__ = ["ScoringPasses", "class_means_of", "file_families"]


@dataclass
class ScoringPasses:
    """Scores sets for one evaluation and keeps what its passes gather besides the metrics:
    decode errors, the clean headline score of every file (so the SynRIS pairs reuse it
    rather than score an image twice), and, from the headline pass, each set's per-class
    means and a family head's attributions."""

    detector: Detector
    loading: ScoreOptions  # how every pass loads its files: the same for each condition
    headline_tries: int
    family_rule: DecisionRule
    errors: dict[str, str] = field(default_factory=dict)
    clean: dict[str, float] = field(default_factory=dict)  # by absolute path; NaN = failed
    # {"real": {"p_<class>": mean}, "generators": {name: {...}}}: methods of > 2 classes
    class_means: dict[str, Any] = field(default_factory=lambda: {"real": None, "generators": {}})
    attributed: dict[str, list[str | None]] = field(default_factory=dict)
    family_inputs: dict[str, FamilyInputs] = field(default_factory=dict)
    failed: dict[str, list[bool]] = field(default_factory=dict)

    @property
    def per_class(self) -> bool:
        """Whether the method has more than two classes (and so per-class summaries)."""
        return bool(class_columns(self.detector.classes))

    def score(
        self,
        paths: Sequence[str | os.PathLike],
        perturbation: Perturbation | None,
        n_tries: int,
        desc: str,
        group: str | None = None,
    ) -> np.ndarray:
        """The scores of ``paths`` under one condition, failed files left out. ``group``:
        whose class means and families a headline pass records ("" = the reals; None =
        nobody's, as for the SynRIS pairs' extra files)."""
        headline = perturbation is None and n_tries == self.headline_tries
        scores, probabilities, novel, errs = score_files_novel(
            self.detector,
            paths,
            tries=n_tries,
            perturbation=perturbation,
            desc=desc,
            classes=self.per_class and headline and group is not None,
            **self.loading,
        )
        self.errors.update(errs)
        if headline:
            absolute = (os.path.abspath(p) for p in paths)
            self.clean.update(zip(absolute, scores.tolist(), strict=True))
        if probabilities is not None:
            self._record_classes(group or "", scores, probabilities, novel)
        return scores[~np.isnan(scores)]

    def _record_classes(
        self, group: str, scores: np.ndarray, probabilities: np.ndarray, novel: np.ndarray | None
    ) -> None:
        """Keep a headline pass's per-class means and, for a family head, each file's family
        and what it was made from (to re-read at another operating point without scoring)."""
        means = class_means_of(probabilities, self.detector.classes)
        if group:
            self.class_means["generators"][group] = means
        else:
            self.class_means["real"] = means
        if self.detector.families:
            key = group or "real"
            rule = self.family_rule
            self.attributed[key] = file_families(self.detector, scores, probabilities, rule, novel)
            self.family_inputs[key] = FamilyInputs.of(scores, probabilities, rule, novel)
            self.failed[key] = np.isnan(scores).tolist()


def file_families(
    detector: Detector,
    scores: np.ndarray,
    probabilities: np.ndarray,
    rule: DecisionRule,
    novel: np.ndarray | None = None,
) -> list[str | None]:
    """Each file's family (None for a failed file or one judged real by ``rule`` and not
    novel; "unknown" for a novel one: :func:`ldmdetect.attribution.attribute`)."""
    from ldmdetect.attribution import attribute

    scored = ~np.isnan(scores)
    out: list[str | None] = [None] * len(scores)
    generated = np.array([rule.label(float(s)) == "generated" for s in scores[scored]])
    found = attribute(
        probabilities[scored],
        detector.classes,
        generated,
        detector.config.family_threshold,
        None if novel is None else novel[scored],
    )
    for i, a in zip(np.flatnonzero(scored), found, strict=True):
        out[i] = a.family
    return out


def class_means_of(probabilities: np.ndarray, classes: Sequence[str]) -> dict[str, float | None]:
    """Each class's mean probability over a set's scored files (failed ones left out):
    {"p_<class>": mean}; None for a set with none scored (metrics.json holds no NaN)."""
    scored = probabilities[~np.isnan(probabilities).any(axis=1)]
    if not len(scored):
        return {f"p_{c}": None for c in classes}
    return {f"p_{c}": float(m) for c, m in zip(classes, scored.mean(axis=0), strict=True)}
