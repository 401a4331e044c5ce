"""Attribution in ``evaluate``: which family the family head put each test set's images down to,
and a training-free judge's opinion beside it.

A detector with a family head (``DetectorConfig.families``) is asked about generator sets whose
true family the evaluation has to know: a set named like one of the detector's families is that
family; ``families`` ({set name: family}) names the others, a family outside the detector's
being an open-set row (right when called ``"unknown"``). Sets neither way named are left out of
the matrix, and the section says so. The held-out reals are the ``"real"`` row: a real image
is right when judged real, so reals pulled into a family show.

:func:`judge_cross_check` asks a judge, a method that names untrained which autoencoder an
image came through (:meth:`Method.judge_sources`; AEROBLADE's nearest autoencoder by default),
built in memory over the autoencoders the family head's training data came from
(``DetectorConfig.family_sources``), which of them each attributed image came through, and
reports how often that agrees with the head and how often it names the right family itself.
Where those sources are not recorded or cannot be loaded, the cross-check is an ``"error"``
message in the section instead, never a failed evaluation.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ldmdetect.engine.attribution_report import (
    DEFAULT_PNG,
    REAL,
    UNKNOWN,
    ConfusionMatrix,
    agreement,
    confusion_matrix,
    markdown_section,
    nearest_autoencoders,
)

__all__ = [
    "FamilyInputs",
    "attribution_section",
    "closed_set_section",
    "family_autoencoders",
    "judge_cross_check",
    "markdown",
    "matrix_from_section",
    "true_families",
]


#: The method :func:`judge_cross_check` asks by default.
DEFAULT_JUDGE = "aeroblade"


@dataclass(frozen=True)
class FamilyInputs:
    """What a set's attribution is made from, per file: per-class probabilities (N, K) over
    the detector's classes (NaN rows: files that failed), whether it was judged generated
    (N,), whether it is novel (N,; None: no novelty statistics). :meth:`attribute` re-reads
    them at another family threshold; :meth:`closed_set` gives the best known family alone."""

    probabilities: np.ndarray
    generated: np.ndarray
    novel: np.ndarray | None

    @classmethod
    def of(
        cls, scores: np.ndarray, probabilities: np.ndarray, rule: Any, novel: np.ndarray | None
    ) -> FamilyInputs:
        generated = np.array(
            [not np.isnan(s) and rule.label(float(s)) == "generated" for s in scores], dtype=bool
        )
        return cls(np.asarray(probabilities, dtype=np.float64), generated, novel)

    @property
    def scored(self) -> np.ndarray:
        return ~np.isnan(self.probabilities).any(axis=1)

    def attribute(self, classes: Sequence[str], threshold: float | None) -> list[str | None]:
        """Each scored file's answer (:func:`ldmdetect.attribution.attribute`) at
        ``threshold``; failed files left out."""
        from ldmdetect.attribution import attribute

        ok = self.scored
        found = attribute(
            self.probabilities[ok],
            classes,
            self.generated[ok],
            threshold,
            None if self.novel is None else self.novel[ok],
        )
        return [a.family for a in found]

    def closed_set(self, classes: Sequence[str]) -> list[str]:
        """Each scored file's most probable known family, whatever its verdict, novelty or
        outlier-class mass: the closed-set attribution the literature reports."""
        from ldmdetect.attribution import known_families

        families = known_families(classes[1:])
        columns = self.probabilities[self.scored][:, 1 : 1 + len(families)]
        return [families[i] for i in columns.argmax(axis=1)]


def closed_set_section(
    inputs: Mapping[str, FamilyInputs], truth: Mapping[str, str], classes: Sequence[str]
) -> dict[str, Any]:
    """Closed-set accuracy over the sets of a known family: the share of their scored files
    whose most probable known family is the true one (no "real", no "unknown" answer: an
    upper bound on the open-set, end-to-end accuracy, which stays the headline), overall and
    per set."""
    from ldmdetect.attribution import known_families

    families = known_families(classes[1:])
    per_set: dict[str, dict[str, Any]] = {}
    right = total = 0
    for name, family in truth.items():
        if family not in families or name not in inputs:
            continue
        found = inputs[name].closed_set(classes)
        hits = sum(f == family for f in found)
        per_set[name] = {"family": family, "n": len(found), "correct": hits}
        per_set[name]["accuracy"] = hits / len(found) if found else None
        right, total = right + hits, total + len(found)
    return {
        "rule": "most probable known family, whatever the verdict (closed set)",
        "accuracy": right / total if total else None,
        "n": total,
        "sets": per_set,
    }


def true_families(
    set_names: Sequence[str],
    detector_families: Sequence[str],
    mapping: Mapping[str, str] | None = None,
) -> tuple[dict[str, str], list[str]]:
    """({set: true family} for the sets the matrix counts, [sets left out]).

    A set's family: ``mapping[set]`` where given, else the set's own name where it is one of
    ``detector_families``. A mapping key that names no set, or a family called ``"unknown"``
    or ``"real"`` (columns of their own), is an error naming it.
    """
    mapping = dict(mapping or {})
    stray = sorted(set(mapping) - set(set_names))
    if stray:
        raise ValueError(
            f"--family names generator set(s) {stray} that this evaluation does not have "
            f"(its sets: {list(set_names)})"
        )
    for name, family in mapping.items():
        if not isinstance(family, str) or not family:
            raise ValueError(f"--family {name}=...: the family must be a non-empty name")
        if family in (UNKNOWN, REAL):
            raise ValueError(
                f"--family {name}={family}: {family!r} is a column of the matrix, not a family "
                f"(a family the detector does not know is right when called {UNKNOWN!r}; name "
                "it as itself)"
            )
    truth: dict[str, str] = {}
    left_out: list[str] = []
    for name in set_names:
        if name in mapping:
            truth[name] = mapping[name]
        elif name in detector_families:
            truth[name] = name
        else:
            left_out.append(name)
    return truth, left_out


def attribution_section(
    families: Sequence[str],
    attributed: Mapping[str, Sequence[str | None]],
    failed: Mapping[str, Sequence[bool]],
    truth: Mapping[str, str],
    left_out: Sequence[str],
    *,
    family_threshold: float | None,
    decision: str,
) -> dict[str, Any]:
    """metrics.json's ``attribution`` section.

    ``attributed``: per set (``"real"`` for the reals) each file's family as the head gave it
    (None: judged real); ``failed``: per set, which files could not be scored (left out, not
    counted as judged real). ``decision``: the threshold that decided "generated" (its name).

    Holds the matrix (``rows``, ``columns``, ``counts``, ``n``, ``accuracy``,
    ``accuracy_per_family``, ``unknown_share``: :meth:`ConfusionMatrix.to_dict`), the accuracy
    over generated images alone (``accuracy_generated``), each set's family and accuracy, the
    sets left out and the failed files' count.
    """
    families = tuple(families)
    section: dict[str, Any] = {
        "families": list(families),
        "family_threshold": family_threshold,
        "decision": decision,
        "sets": {},
        "left_out": list(left_out),
        "failed": 0,
    }
    if not truth:
        section["note"] = (
            "no generator set names a family of this detector "
            f"({', '.join(families)}): name them with --family SET=FAMILY"
        )
        return section
    true: list[str] = []
    predicted: list[str | None] = []
    groups = [(REAL, REAL)] if REAL in attributed else []
    groups += [(name, family) for name, family in truth.items()]
    for name, family in groups:
        found = list(attributed[name])
        bad = list(failed.get(name, [False] * len(found)))
        kept = [p for p, f in zip(found, bad, strict=True) if not f]
        section["failed"] += len(found) - len(kept)
        true += [family] * len(kept)
        predicted += kept
        if name != REAL:
            expected = family if family in families else UNKNOWN
            section["sets"][name] = {
                "family": family,
                "n": len(kept),
                "accuracy": sum(p == expected for p in kept) / len(kept) if kept else None,
            }
    cm = confusion_matrix(true, predicted, families)
    section |= cm.to_dict()
    generated = [r for r in cm.rows if r != REAL]
    correct, totals = cm.correct(), cm.totals()
    n_generated = sum(totals[r] for r in generated)
    section["accuracy_generated"] = (
        sum(correct[r] for r in generated) / n_generated if n_generated else None
    )
    section["n_generated"] = n_generated
    return section


def family_autoencoders(config: Any) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """({family: autoencoder source dict}, [families without one]) of a family-head config:
    ``family_sources``, else (a detector saved before it was recorded) the ``families`` maps
    of the dataset.json files its training summary kept."""
    from ldmdetect.attribution import known_families
    from ldmdetect.engine.train_families import family_sources

    families = known_families(config.families)
    sources = dict(config.family_sources or {})
    if not sources:
        sources = family_sources(config.training.get("datasets") or [], families)
    return sources, [f for f in families if f not in sources]


def judge_cross_check(
    detector: Any,
    files: Mapping[str, Sequence[str | os.PathLike]],
    truth: Mapping[str, str],
    head: Mapping[str, Sequence[str | None]],
    *,
    judge: str = DEFAULT_JUDGE,
    batch_size: int = 16,
    pretrained: bool = True,
) -> dict[str, Any]:
    """The ``judge`` method's nearest autoencoder for ``files`` ({set: its scored files})
    against the family head's answers ``head`` ({set: family per file}, same order).

    Returns the judge, its view size and feature settings, the autoencoder per family,
    ``agreement`` (:func:`~ldmdetect.engine.attribution_report.agreement`, over the images where
    both name a family), the judge's own accuracy over images of the detector's families
    (``judge_accuracy``, per family and per set) and its nearest-family counts per true
    family; or ``{"error": reason}`` where the autoencoders are not recorded or cannot load.
    """
    from ldmdetect.detector import Detector
    from ldmdetect.engine.train import build
    from ldmdetect.engine.train_config import TrainConfig
    from ldmdetect.io.hub import SourceUnavailable
    from ldmdetect.methods import get as get_method

    config = detector.config
    sources, missing = family_autoencoders(config)
    if missing:
        plural = "y" if len(missing) == 1 else "ies"
        return {
            "error": f"no autoencoder source recorded for famil{plural} "
            f"{', '.join(missing)}: the detector was trained on data without one (a "
            "dataset.json before family sources, or an autoencoder passed as a loaded module); "
            "retrain on datasets made with `ldmdetect reconstruct --autoencoder NAME=SRC`"
        }
    order = list(sources)
    method = get_method(judge)
    try:
        fields = method.judge_sources([sources[f] for f in order], config.input_size)
        _, judge_config, model = build(TrainConfig(method=judge, pretrained=pretrained, **fields))
        judged = Detector(judge_config, model, device=detector.device)
        nearest: dict[str, list[str | None]] = {}
        for name in truth:
            paths = list(files[name])
            found: list[str | None] = []
            for start in range(0, len(paths), batch_size):
                explained = judged.explain(paths[start : start + batch_size]) or []
                found += nearest_autoencoders(explained, _by_position(explained, order))
            nearest[name] = found
    except (SourceUnavailable, OSError, ValueError) as err:
        return {"error": f"{judge} could not be built over the families' autoencoders: {err}"}
    families = tuple(detector.families)
    head_all = [x for name in truth for x in head[name]]
    nearest_all = [x for name in truth for x in nearest[name]]
    counts: dict[str, dict[str, int]] = {}
    for name, family in truth.items():
        row = counts.setdefault(family, dict.fromkeys(order, 0))
        for x in nearest[name]:
            if x is not None:
                row[x] += 1
    per_family = {
        family: row[family] / sum(row.values())
        for family, row in counts.items()
        if family in families and sum(row.values())
    }
    known = [(truth[name], x) for name in truth for x in nearest[name] if truth[name] in families]
    return {
        "judge": judge,
        "autoencoders": {f: sources[f] for f in order},
        "input_size": judge_config.input_size,
        "feature": judge_config.feature,
        "weights": judge_config.weights_source,
        "agreement": agreement(head_all, nearest_all),
        "n": len(nearest_all),
        "judge_accuracy": sum(t == x for t, x in known) / len(known) if known else None,
        "judge_accuracy_per_family": per_family,
        "nearest_counts": counts,
        "sets": {
            name: {
                "agreement": agreement(list(head[name]), nearest[name]),
                "judge_accuracy": (
                    sum(x == truth[name] for x in nearest[name]) / len(nearest[name])
                    if truth[name] in families and nearest[name]
                    else None
                ),
            }
            for name in truth
        },
    }


def _by_position(explained: Sequence[Any], order: Sequence[str]) -> dict[str, str]:
    """{the judge's name of each autoencoder: its family}: a judge's ``distances`` hold one
    entry per autoencoder it was given, in that order (:meth:`Method.judge_sources`)."""
    first = next((e for e in explained if e is not None), None)
    return dict(zip(first.distances, order, strict=True)) if first is not None else {}


def matrix_from_section(section: Mapping[str, Any]) -> ConfusionMatrix | None:
    """The confusion matrix an ``attribution`` section holds; None where it has none (no set
    named a family) or counts no image."""
    if "counts" not in section or not section.get("n"):
        return None
    return ConfusionMatrix(
        tuple(section["rows"]),
        tuple(section["columns"]),
        tuple(tuple(int(c) for c in row) for row in section["counts"]),
    )


def markdown(section: Mapping[str, Any], png_name: str | None = DEFAULT_PNG) -> str:
    """report.md's attribution section: :func:`markdown_section` (matrix, plot, agreement),
    then which sets were counted as which family, those left out, the decision rule and the
    cross-check judge's own accuracy (or why the cross-check could not run)."""
    cm = matrix_from_section(section)
    cross = section.get("cross_check") or {}
    if cm is None:
        parts = ["## Attribution (generator family)\n"]
        parts.append((section.get("note") or "No image could be attributed.") + "\n")
    else:
        parts = [markdown_section(cm, cross.get("agreement"), png_name, f"`{cross.get('judge')}`")]
    lines = []
    if section.get("accuracy_generated") is not None:
        lines.append(
            f"- Over generated images alone: {section['accuracy_generated']:.1%} of "
            f"{section['n_generated']}."
        )
    if section.get("sets"):
        lines.append(
            "- Sets counted: "
            + "; ".join(
                f"`{name}` as {entry['family']}"
                + ("" if entry["family"] in section["families"] else " (not a known family)")
                for name, entry in section["sets"].items()
            )
            + "."
        )
    if section.get("left_out"):
        lines.append(
            "- Left out (no family known for them; name one with `--family SET=FAMILY`): "
            + ", ".join(f"`{name}`" for name in section["left_out"])
            + "."
        )
    threshold = section.get("family_threshold")
    lines.append(
        f"- Generated or not: threshold `{section.get('decision')}`; open-set family threshold "
        + (f"{threshold:.4g}" if threshold is not None else "none (the best family answers)")
        + "."
    )
    if section.get("failed"):
        lines.append(f"- {section['failed']} file(s) could not be scored and are not counted.")
    if cross.get("error"):
        lines.append(f"- Cross-check not run: {cross['error']}")
    elif cross:
        accuracy = cross.get("judge_accuracy")
        per_family = ", ".join(
            f"{f} {a:.1%}" for f, a in (cross.get("judge_accuracy_per_family") or {}).items()
        )
        lines.append(
            f"- `{cross['judge']}` alone (nearest of the families' autoencoders, "
            f"{cross['input_size']} px view): "
            + (f"{accuracy:.1%} right" if accuracy is not None else "no known family to judge")
            + (f" ({per_family})" if per_family else "")
            + f" over {cross['n']} images."
        )
    parts.append("\n".join(lines) + "\n")
    return "\n".join(parts)
