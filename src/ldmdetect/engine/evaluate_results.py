"""What :func:`ldmdetect.engine.evaluate.evaluate` returns, read through types.

``Evaluation.result`` is the nested mapping metrics.json holds, kept as it is because users
parse that file. The report, the CLI, the demo and the benchmarks read it through the
accessors here (each condition, the SynRIS comparison, the per-class means, the errors), so
one module knows its keys and a reader names what it wants instead of walking the dict.

The accessors also read a result that lacks the optional parts (no ``tries``, no times, as a
result built by hand has), so :func:`ldmdetect.engine.report.render_markdown` takes either.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ldmdetect.engine.evaluate_attribution import FamilyInputs

# {"generators": {name: {metric: [lo, hi]}}, "mean": {metric: [lo, hi]}}
Intervals = dict[str, Any]


@dataclass(frozen=True)
class Condition:
    """One way an evaluation scored the images: clean with N tries, under a perturbation, or
    the format control. ``generators`` holds the metrics per test set, ``mean`` their mean.

    ``label`` is what the condition's own report table calls it: the number of tries ("10"),
    the perturbation ("jpeg:75") or the control's JPEG setting ("jpeg:90")."""

    name: str  # "1-try", "jpeg:75, 1-try", "format control jpeg:90"
    kind: str  # "tries", "robustness" or "format_control"
    generators: dict[str, dict[str, float]]
    mean: dict[str, float]
    intervals: Intervals | None
    # Wall time per image of the condition's pass; None where the result does not say.
    seconds_per_image: float | None
    label: str = ""

    @classmethod
    def of(cls, name: str, kind: str, label: str, section: Mapping[str, Any]) -> Condition:
        """The condition a result's section holds (intervals and time optional)."""
        return cls(
            name,
            kind,
            section["generators"],
            section["mean"],
            section.get("intervals"),
            section.get("seconds_per_image"),
            label,
        )

    def rows(self) -> dict[str, dict[str, float]]:
        """Table rows: each generator's metrics, then their mean as the row named "mean"."""
        if "mean" in self.generators:
            raise ValueError(
                "a generator may not be named 'mean': it would collide with the mean row"
            )
        return {**self.generators, "mean": self.mean}

    def row_intervals(self) -> dict[str, dict[str, Any]] | None:
        """The intervals of :meth:`rows`, row for row; None without intervals."""
        if not self.intervals:
            return None
        return {**self.intervals["generators"], "mean": self.intervals["mean"]}

    @property
    def mean_intervals(self) -> dict[str, Any] | None:
        """The mean row's intervals (what the mean-over-generators tables show)."""
        return self.intervals["mean"] if self.intervals else None


@dataclass(frozen=True)
class SynRISComparison:
    """The SynRIS section: the paired fakes against their matched reals (``matched``) and
    against the evaluated reals (``unmatched``), metrics of each; the AUC gap is the share of
    the score that came from telling themes apart."""

    pairs: str
    n_pairs: int
    n_matched_reals: int
    matched: dict[str, float]
    unmatched: dict[str, float]
    # {"matched": {metric: [lo, hi]}, "unmatched": {...}}; None without bootstrap
    intervals: dict[str, Any] | None
    auc_gap: float
    # Share of pairs where the fake outscored its own matched real (ties half); None when
    # no pair had both scored.
    pair_win_rate: float | None
    similarity_mean: float
    embedder: dict[str, Any] | None = None  # from the pairs' synris.json, where found

    @classmethod
    def of(cls, section: Mapping[str, Any]) -> SynRISComparison:
        """The comparison a result's ``synris`` section holds."""
        return cls(
            section["pairs"],
            section["n_pairs"],
            section["n_matched_reals"],
            section["matched"],
            section["unmatched"],
            section.get("intervals"),
            section["auc_gap"],
            section.get("pair_win_rate"),
            section["similarity_mean"],
            section.get("embedder"),
        )


@dataclass(frozen=True)
class ClassProbabilities:
    """Methods of more than two classes: each set's mean probability per class on the clean
    headline scores, ``{"p_<class>": mean}`` (None for a set with no file scored)."""

    real: dict[str, float | None]
    generators: dict[str, dict[str, float | None]]

    @property
    def columns(self) -> list[str]:
        """The ``p_<class>`` keys, in the detector's class order."""
        return list(self.real)

    def rows(self) -> dict[str, dict[str, float | None]]:
        """Table rows: the reals, then each generator."""
        return {"real": self.real, **self.generators}


@dataclass
class Evaluation:
    """``result`` is what metrics.json holds; ``scores`` the clean scores for plots.

    ``families`` (detectors with a family head): per set, "real" and each generator's name,
    the family attributed to each of its files in the set's file order (headline condition;
    None where the file was judged real or failed, "unknown" under the open-set threshold;
    see :mod:`ldmdetect.attribution`). Empty for other detectors."""

    result: dict
    scores: dict
    files: dict[str, Path] = field(default_factory=dict)
    families: dict[str, list[str | None]] = field(default_factory=dict)
    # Per set as ``families``: what the attribution was made from (per-class probabilities,
    # verdicts, novelty), to re-read it at another operating point without scoring again.
    family_inputs: dict[str, FamilyInputs] = field(default_factory=dict)

    @classmethod
    def of(cls, result: Mapping[str, Any]) -> Evaluation:
        """A result mapping (metrics.json's content) to read through the accessors, without
        scores."""
        return cls(dict(result), {})

    def headline(self) -> Condition:
        """The headline condition (clean, the first tries setting): the result's top-level
        metrics, which the clean table and the CLI show."""
        res = self.result
        tries = res.get("tries") or {}
        first = next(iter(tries), None)
        name = "clean" if first is None else f"{first}-try"
        seconds = None if first is None else tries[first].get("seconds_per_image")
        top = {"generators": res.get("generators") or {}, "mean": res.get("mean") or {}}
        section = top | {"intervals": res.get("intervals"), "seconds_per_image": seconds}
        return Condition.of(name, "tries", first or "", section)

    def conditions(self, kind: str | None = None) -> list[Condition]:
        """Every scoring condition in report order: tries, then perturbations (1 try, as the
        headline), then the format control; with ``kind``, those of that kind only. Callers
        read these instead of walking the dict. A result without ``tries`` has its
        :meth:`headline` as its one tries condition."""
        res = self.result
        if res.get("tries"):
            found = [Condition.of(f"{t}-try", "tries", t, c) for t, c in res["tries"].items()]
        else:
            found = [self.headline()]
        found += [
            Condition.of(f"{p}, 1-try", "robustness", p, c)
            for p, c in (res.get("robustness") or {}).items()
        ]
        if res.get("format_control"):
            control = res["format_control"]
            quality = control.get("quality")
            label = "" if quality is None else f"jpeg:{quality}"
            found.append(
                Condition.of(f"format control {label}".strip(), "format_control", label, control)
            )
        return [c for c in found if kind is None or c.kind == kind]

    @property
    def settings(self) -> dict[str, Any]:
        """What was evaluated and how (free-form: detector, tries, bootstrap, file formats)."""
        return self.result.get("settings") or {}

    @property
    def errors(self) -> dict[str, str]:
        """{path: reason} for every file that could not be decoded and was skipped."""
        return self.result.get("errors") or {}

    @property
    def synris(self) -> SynRISComparison | None:
        """The SynRIS matched-reals comparison; None without ``pairs``."""
        section = self.result.get("synris")
        return SynRISComparison.of(section) if section else None

    @property
    def class_probabilities(self) -> ClassProbabilities | None:
        """Each set's mean probability per class; None for two-class methods."""
        means = self.result.get("class_probabilities")
        return ClassProbabilities(means["real"], means["generators"]) if means else None

    @property
    def attribution(self) -> dict[str, Any] | None:
        """A family head's ``attribution`` section (read by
        :mod:`ldmdetect.engine.evaluate_attribution`); None for other detectors."""
        return self.result.get("attribution") or None
