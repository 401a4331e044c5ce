"""Which family made it: the open-set rule that turns a family head's probabilities into an
answer per image.

A detector trained on reconstructions through several autoencoders (``ldmdetect reconstruct
--autoencoder NAME=SRC`` repeated) has one output per class, ``("real", *families)``. Its
score stays 1 - P(real), so thresholds and verdicts work as for any detector; the family is
read from the rest of the distribution, and only for images the detector judges generated.

The rule is open-set: an image of a family the detector never saw still has to land on one
of the families it knows, and then it does so weakly. :func:`attribute` measures how much of
the generated mass goes to the best family (``family_score``) and answers ``"unknown"``
below a threshold calibrated on held-out reconstructions (:func:`calibrate_family_threshold`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: The family of a generated image whose family evidence is below the calibrated threshold.
UNKNOWN = "unknown"
#: Share of held-out known-family reconstructions whose family score may fall below the
#: threshold (and so be called "unknown"): their 5th percentile sets it.
FAMILY_QUANTILE = 0.05


@dataclass(frozen=True)
class Attribution:
    """One image's family: None where the detector judged it real (``family_score`` NaN),
    ``"unknown"`` where its family evidence is weak, else the family's name."""

    family: str | None
    family_score: float


def family_scores(probabilities: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-class probabilities (N, K), the real class first -> (index of the best family in
    ``classes[1:]`` (N,), its share of the generated mass max_f P(f) / (1 - P(real)) (N,)).

    The share, not P(f) itself: an image scored 0.6 generated whose 0.6 all goes to one family
    is as clearly that family as one scored 0.99. A row with no generated mass at all (every
    family at 0) gets a share of 0.
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if probabilities.ndim != 2 or probabilities.shape[1] < 3:
        raise ValueError(
            "family scores need per-class probabilities (N, K) over real and at least two "
            f"families, got shape {probabilities.shape}"
        )
    families = probabilities[:, 1:]
    best = families.argmax(axis=1)
    mass = families.sum(axis=1)
    top = families[np.arange(len(families)), best]
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(mass > 0, top / np.where(mass > 0, mass, 1.0), 0.0)
    return best, share


def attribute(
    probabilities: np.ndarray,
    classes: Sequence[str],
    generated: np.ndarray,
    threshold: float | None,
) -> list[Attribution]:
    """The family of each image (see :class:`Attribution`).

    ``probabilities`` (N, K) are over ``classes``, ``("real", *families)``; ``generated``
    (N,) is the detector's decision per image (its score above the threshold in use): an image
    judged real gets no family. A generated image whose :func:`family_scores` share is below
    ``threshold`` is ``"unknown"`` (None: no open-set rule, the best family always answers).
    """
    classes = list(classes)
    if not classes or classes[0] != "real" or len(classes) < 3:
        raise ValueError(f"classes must be ('real', family, family, ...), got {tuple(classes)}")
    probabilities = np.asarray(probabilities, dtype=np.float64)
    generated = np.asarray(generated, dtype=bool).ravel()
    if probabilities.shape != (len(generated), len(classes)):
        raise ValueError(
            f"probabilities of shape {probabilities.shape} do not match {len(generated)} "
            f"images over {len(classes)} classes"
        )
    if len(generated) == 0:
        return []
    best, share = family_scores(probabilities)
    out = []
    for is_generated, index, score in zip(generated, best, share, strict=True):
        if not is_generated:
            out.append(Attribution(None, math.nan))
        elif threshold is not None and score < threshold:
            out.append(Attribution(UNKNOWN, float(score)))
        else:
            out.append(Attribution(classes[1 + int(index)], float(score)))
    return out


def calibrate_family_threshold(
    probabilities: np.ndarray, quantile: float = FAMILY_QUANTILE
) -> float | None:
    """The open-set threshold from held-out reconstructions of the known families: the
    ``quantile`` (5%) point of their :func:`family_scores` shares, so that 95% of
    reconstructions of a family the detector was trained on keep a family, and an image whose
    evidence is weaker than all but the weakest 5% of those is called "unknown".

    Every held-out reconstruction counts, whichever family the head picks for it: the rule
    bounds how often a known family is called "unknown", not how often it is called right.
    None when there are no reconstructions to calibrate on.
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if len(probabilities) == 0:
        return None
    if not 0.0 <= quantile < 1.0:
        raise ValueError(f"quantile must lie in [0, 1), got {quantile}")
    _, share = family_scores(probabilities)
    # "lower": a share that occurs among the held-out ones, never an interpolated value.
    return float(np.quantile(share, quantile, method="lower"))
