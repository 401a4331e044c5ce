"""Which family made it: the open-set rule that turns a family head's probabilities into an
answer per image.

A detector trained on reconstructions through several autoencoders (``ldmdetect reconstruct
--autoencoder NAME=SRC`` repeated) has one output per class, ``("real", *families)``. Its
score stays 1 - P(real), so thresholds and verdicts work as for any detector; the family is
read from the rest of the distribution, and only for images the detector judges generated.

The rule is open-set: an image of a family the detector never saw still has to land on one
of the families it knows, and then it does so weakly. :func:`attribute` measures how much of
the generated mass goes to the best family (``family_score``) and answers ``"unknown"``
below a threshold calibrated on held-out reconstructions (:func:`calibrate_family_threshold`),
set so that about 1% of a known family's reconstructions are called "unknown"
(``FAMILY_QUANTILE``).

A softmax over the known families alone has nowhere to put an image of another autoencoder,
and one whose trace the head never learned can look real to it. Outlier Exposure (Hendrycks
et al., ICLR 2019, "Deep Anomaly Detection with Outlier Exposure") gives it somewhere: a head
trained with ``--outlier-data`` (aligned datasets reconstructed through auxiliary
autoencoders of no known family) has one more class, ``"other"`` (:data:`OTHER`), last
among its classes. Its mass counts as generated (the score stays 1 - P(real)), never as a
family: it lowers the best family's share, and an image whose generated mass goes mostly to
"other" is ``"unknown"``. Auxiliary autoencoders are not the ones to be recognised later: the
class learns what "a trace, but none of the known ones" looks like, and how far that reaches
to unseen autoencoders is measured, not assumed (the README's attribution benchmark tests on
autoencoders of other seeds and another configuration than every auxiliary one).

That rule only sees images the detector judges generated, and an autoencoder it never saw
can leave a trace its head reads as "real". A second, feature-space rule is meant for those
(:class:`Novelty`; how far it gets is measured by the README's attribution benchmark): the
classifier's penultimate embedding of an image is compared with where each known class (real
and every family) sits in training, by the class-conditional Mahalanobis distance with a
shared covariance (Lee et al. 2018, "A Simple Unified Framework for Detecting
Out-of-Distribution Samples"); an image far from every class is novel, with the threshold set
so that at most ~1% of held-out real photos are (``NOVELTY_FPR``).

The rule, whole (:func:`attribute`):

- judged generated, not novel: the best family, or ``"unknown"`` if its share of the
  generated mass is below ``family_threshold`` or (a head with the ``"other"`` class) the
  other-autoencoder class outweighs every known family;
- judged generated, novel: ``"unknown"`` (its evidence points to a family, but the image
  lies outside what that family looked like in training);
- judged real, not novel: no family (None);
- judged real, novel: ``"unknown"``. The verdict stays real (the binary threshold and the
  false-positive rate it was calibrated for are untouched), but the family column flags it:
  the image looks neither like the real photos nor like the families the detector knows,
  which is how an image through an autoencoder it never saw looks. For a trust-and-safety
  reviewer that is a lead worth a look, not a finding, and it costs about 1% of real photos
  (the calibrated rate). A detector without novelty statistics (trained before them) keeps
  the first rule alone.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

#: The family of a generated image whose family evidence is below the calibrated threshold.
UNKNOWN = "unknown"
#: The outlier class of a head trained with Outlier Exposure: reconstructions through
#: autoencoders of no known family. Last among the head's classes, never a family answer.
OTHER = "other"
#: Share of held-out known-family reconstructions whose family score may fall below the
#: threshold (and so be called "unknown"): their 1st percentile sets it. A known family
#: then loses about 1% of its images to "unknown" by construction, on top of the detection
#: misses (at 5%, the rule alone capped attribution accuracy near 0.95).
FAMILY_QUANTILE = 0.01
#: Share of held-out real photos the novelty threshold lets be novel.
NOVELTY_FPR = 0.01
#: The novelty statistics' file in a detector directory (absent: no novelty rule).
NOVELTY_NAME = "novelty.safetensors"


@dataclass(frozen=True)
class Attribution:
    """One image's family: None where the detector judged it real (``family_score`` NaN),
    ``"unknown"`` where its family evidence is weak, else the family's name."""

    family: str | None
    family_score: float


def known_families(families: Sequence[str]) -> tuple[str, ...]:
    """A head's generated classes less the outlier class: the families it can answer."""
    return tuple(f for f in families if f != OTHER)


def has_other(classes: Sequence[str]) -> bool:
    """Whether a head's classes end with the Outlier Exposure class (:data:`OTHER`)."""
    return len(classes) > 3 and classes[-1] == OTHER


def family_scores(probabilities: np.ndarray, other: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Per-class probabilities (N, K), the real class first -> (index of the best family in
    ``classes[1:]`` (N,), its share of the generated mass max_f P(f) / (1 - P(real)) (N,)).
    ``other``: the last column is the outlier class (:data:`OTHER`), part of the generated
    mass but never the best family.

    The share, not P(f) itself: an image scored 0.6 generated whose 0.6 all goes to one family
    is as clearly that family as one scored 0.99. A row with no generated mass at all (every
    family at 0) gets a share of 0.
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if probabilities.ndim != 2 or probabilities.shape[1] < 3 + int(other):
        raise ValueError(
            "family scores need per-class probabilities (N, K) over real and at least two "
            f"families, got shape {probabilities.shape}"
        )
    families = probabilities[:, 1:-1] if other else probabilities[:, 1:]
    best = families.argmax(axis=1)
    mass = probabilities[:, 1:].sum(axis=1)
    top = families[np.arange(len(families)), best]
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(mass > 0, top / np.where(mass > 0, mass, 1.0), 0.0)
    return best, share


def attribute(
    probabilities: np.ndarray,
    classes: Sequence[str],
    generated: np.ndarray,
    threshold: float | None,
    novel: np.ndarray | None = None,
) -> list[Attribution]:
    """The family of each image (see :class:`Attribution`).

    ``probabilities`` (N, K) are over ``classes``, ``("real", *families)`` (then
    :data:`OTHER` for a head trained with outliers); ``generated`` (N,) is the detector's
    decision per image (its score above the threshold in use): an image judged real gets no
    family. A generated image whose :func:`family_scores` share is below ``threshold`` is
    ``"unknown"`` (None: no open-set rule, the best family always answers), as is one whose
    outlier-class probability is at least its best family's.
    ``novel`` (N,), from :meth:`Novelty.novel` (None: no novelty rule): a novel image is
    ``"unknown"`` whatever its verdict (the module's docstring says why); its
    ``family_score`` is still its share.
    """
    classes = list(classes)
    other = has_other(classes)
    if (
        not classes
        or classes[0] != "real"
        or len(known_families(classes[1:])) < 2
        or (OTHER in classes and not other)
    ):
        raise ValueError(
            f"classes must be ('real', family, family, ...[, {OTHER!r}]), got {tuple(classes)}"
        )
    probabilities = np.asarray(probabilities, dtype=np.float64)
    generated = np.asarray(generated, dtype=bool).ravel()
    if probabilities.shape != (len(generated), len(classes)):
        raise ValueError(
            f"probabilities of shape {probabilities.shape} do not match {len(generated)} "
            f"images over {len(classes)} classes"
        )
    novel = np.zeros(len(generated), dtype=bool) if novel is None else np.asarray(novel, dtype=bool)
    if novel.shape != generated.shape:
        raise ValueError(f"novel flags of shape {novel.shape} for {len(generated)} images")
    if len(generated) == 0:
        return []
    best, share = family_scores(probabilities, other)
    # Where the outlier class outweighs every known family, no family answers.
    outlier = (
        probabilities[:, -1] >= probabilities[np.arange(len(best)), 1 + best]
        if other
        else np.zeros(len(best), dtype=bool)
    )
    out = []
    for is_generated, is_novel, is_other, index, score in zip(
        generated, novel, outlier, best, share, strict=True
    ):
        if is_novel:
            out.append(Attribution(UNKNOWN, float(score)))
        elif not is_generated:
            out.append(Attribution(None, math.nan))
        elif is_other or (threshold is not None and score < threshold):
            out.append(Attribution(UNKNOWN, float(score)))
        else:
            out.append(Attribution(classes[1 + int(index)], float(score)))
    return out


def calibrate_family_threshold(
    probabilities: np.ndarray, quantile: float = FAMILY_QUANTILE, other: bool = False
) -> float | None:
    """The open-set threshold from held-out reconstructions of the known families: the
    ``quantile`` (1%) point of their :func:`family_scores` shares, so that 99% of
    reconstructions of a family the detector was trained on keep a family, and an image whose
    evidence is weaker than all but the weakest 1% of those is called "unknown". ``other``:
    the last column is the outlier class (:func:`family_scores`).

    Every held-out reconstruction counts, whichever family the head picks for it: the rule
    bounds how often a known family is called "unknown", not how often it is called right.
    None when there are no reconstructions to calibrate on.
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if len(probabilities) == 0:
        return None
    if not 0.0 <= quantile < 1.0:
        raise ValueError(f"quantile must lie in [0, 1), got {quantile}")
    _, share = family_scores(probabilities, other)
    # "lower": a share that occurs among the held-out ones, never an interpolated value.
    return float(np.quantile(share, quantile, method="lower"))


#: The operating points a family-threshold record lists (the trade-off a reader can weigh:
#: a higher quantile calls more unseen autoencoders "unknown" and more known images too).
TRADE_OFF_QUANTILES = (0.005, 0.01, 0.02, 0.05, 0.1)


def share_quantiles(
    probabilities: np.ndarray, quantiles: Sequence[float] = TRADE_OFF_QUANTILES, other: bool = False
) -> dict[str, float]:
    """{quantile: the threshold :func:`calibrate_family_threshold` would set there} over the
    same reconstructions; empty without any."""
    if len(probabilities) == 0:
        return {}
    return {str(q): float(calibrate_family_threshold(probabilities, q, other)) for q in quantiles}


# ------------------------------------------------------------------------------- novelty


def classifier_head(model: nn.Module) -> nn.Module:
    """The final linear layer of a timm-backed classifier (``model.net`` or ``model``), whose
    input is the penultimate embedding the novelty rule reads."""
    net = getattr(model, "net", model)
    head = net.get_classifier() if hasattr(net, "get_classifier") else None
    if not isinstance(head, nn.Linear):
        raise ValueError(
            f"{type(model).__name__} has no linear classifier head to read embeddings from"
        )
    return head


def classifier_heads(model: nn.Module) -> list[nn.Module]:
    """Every network's :func:`classifier_head`: one, or one per member of an ensemble (whose
    embedding is its members' side by side)."""
    from ldmdetect.models.ensemble import Ensemble

    networks = list(model.members) if isinstance(model, Ensemble) else [model]
    return [classifier_head(network) for network in networks]


class EmbeddingTap:
    """While open, records the input of ``model``'s classifier head (each member's, for an
    ensemble) on every forward pass: the penultimate embedding of each view, in the order the
    views ran.

    A hook rather than a second pass: the scores, probabilities and embeddings of an image
    come from one forward pass. :meth:`per_image` averages each image's views, as its score
    is their mean, and puts an ensemble's members' embeddings side by side."""

    def __init__(self, model: nn.Module) -> None:
        self.heads = classifier_heads(model)
        self.chunks: list[list[torch.Tensor]] = [[] for _ in self.heads]
        self._handles: list[Any] = []

    def _recorder(self, index: int) -> Any:
        def record(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
            self.chunks[index].append(inputs[0].detach().float().flatten(1).cpu())

        return record

    def __enter__(self) -> EmbeddingTap:
        self._handles = [
            head.register_forward_pre_hook(self._recorder(i)) for i, head in enumerate(self.heads)
        ]
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()

    def per_image(self, n_images: int) -> np.ndarray:
        """(n_images, D): the recorded views' embeddings, averaged per image (every image the
        same number of views, in order); an ensemble's D is the sum of its members'."""
        if not self.chunks[0]:
            return np.zeros((0, 0))
        parts = []
        for chunks in self.chunks:
            views = torch.cat(chunks)
            if n_images <= 0 or len(views) % n_images:
                raise ValueError(f"{len(views)} recorded views do not split over {n_images} images")
            parts.append(views.view(n_images, len(views) // n_images, -1).mean(dim=1))
        return torch.cat(parts, dim=1).double().numpy()


@dataclass(frozen=True)
class Novelty:
    """Where each known class sits in the classifier's embedding space, and how far from all
    of them an image may lie before it is novel (see the module's docstring).

    ``means`` (K, D) per class of ``classes``; ``precision`` (D, D) the inverse of their
    shared within-class covariance (Ledoit-Wolf shrunk: a few thousand training crops do not
    pin down 1280 dimensions), or a tuple of the diagonal blocks of one (an ensemble's members,
    each with its own embedding: :func:`combine_novelty`). ``threshold``: the largest
    min-over-classes Mahalanobis distance that is not novel (None: not calibrated, nothing is
    novel). ``record``: what it was fitted and calibrated on."""

    classes: tuple[str, ...]
    means: np.ndarray
    precision: np.ndarray | tuple[np.ndarray, ...]
    threshold: float | None = None
    record: Mapping[str, Any] = field(default_factory=dict)

    @property
    def blocks(self) -> tuple[np.ndarray, ...]:
        """The precision's diagonal blocks (one for a single network's statistics)."""
        return self.precision if isinstance(self.precision, tuple) else (self.precision,)

    def distances(self, embeddings: np.ndarray) -> np.ndarray:
        """(N, D) -> (N,): the Mahalanobis distance to the nearest class mean."""
        x = np.asarray(embeddings, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.means.shape[1]:
            raise ValueError(
                f"embeddings of shape {x.shape} for novelty statistics of dimension "
                f"{self.means.shape[1]}"
            )
        squared = np.zeros((len(x), len(self.means)))  # (N, K)
        start = 0
        for block in self.blocks:
            part = slice(start, start + len(block))
            diff = x[:, None, part] - self.means[None, :, part]  # (N, K, D_block)
            squared += ((diff @ block) * diff).sum(axis=-1)
            start += len(block)
        return np.sqrt(np.maximum(squared, 0.0)).min(axis=1)

    def novel(self, embeddings: np.ndarray) -> np.ndarray:
        """(N, D) -> (N,) bool: farther than ``threshold`` from every known class."""
        distances = self.distances(embeddings)
        if self.threshold is None:
            return np.zeros(len(distances), dtype=bool)
        return distances > self.threshold

    def calibrated(
        self, real_embeddings: np.ndarray, fpr: float = NOVELTY_FPR, on: str = ""
    ) -> Novelty:
        """A copy whose threshold lets at most ``fpr`` of these real images be novel: the
        (1 - fpr) point of their distances, taken as an observed value ("higher")."""
        if not 0.0 < fpr < 1.0:
            raise ValueError(f"fpr must lie in (0, 1), got {fpr}")
        distances = self.distances(real_embeddings)
        if len(distances) == 0:
            raise ValueError("no real images to calibrate the novelty threshold on")
        threshold = float(np.quantile(distances, 1.0 - fpr, method="higher"))
        record = dict(self.record) | {
            "threshold_on": on or f"{len(distances)} real images",
            "n_real": len(distances),
            "fpr": fpr,
            "novel_reals": int((distances > threshold).sum()),
        }
        return replace(self, threshold=threshold, record=record)

    def save(self, directory: str | os.PathLike) -> Path:
        from safetensors.numpy import save_file

        path = Path(directory) / NOVELTY_NAME
        tensors = {"means": np.ascontiguousarray(self.means, dtype=np.float32)}
        if isinstance(self.precision, tuple):  # an ensemble's blocks, in member order
            for i, block in enumerate(self.precision):
                tensors[f"precision.{i}"] = np.ascontiguousarray(block, dtype=np.float32)
        else:
            tensors["precision"] = np.ascontiguousarray(self.precision, dtype=np.float32)
        save_file(
            tensors,
            str(path),
            metadata={
                "classes": json.dumps(list(self.classes)),
                "threshold": json.dumps(self.threshold),
                "record": json.dumps(dict(self.record), default=str),
            },
        )
        return path

    @classmethod
    def load(cls, directory: str | os.PathLike) -> Novelty | None:
        """The statistics saved in a detector directory; None where there are none (a
        detector from before the rule keeps the family-score rule alone)."""
        from safetensors import safe_open

        path = Path(directory) / NOVELTY_NAME
        if not path.is_file():
            return None
        try:
            with safe_open(str(path), framework="numpy") as handle:
                meta = handle.metadata() or {}
                means = handle.get_tensor("means").astype(np.float64)
                keys = set(handle.keys())
                if "precision" in keys:
                    precision: np.ndarray | tuple[np.ndarray, ...] = handle.get_tensor(
                        "precision"
                    ).astype(np.float64)
                else:
                    precision = tuple(
                        handle.get_tensor(f"precision.{i}").astype(np.float64)
                        for i in range(sum(k.startswith("precision.") for k in keys))
                    )
            classes = tuple(json.loads(meta["classes"]))
            threshold = json.loads(meta.get("threshold", "null"))
            record = json.loads(meta.get("record", "{}"))
        except Exception as err:  # safetensors and json raise several types for one cause
            raise ValueError(f"{path}: unreadable novelty statistics ({err})") from err
        blocks = precision if isinstance(precision, tuple) else (precision,)
        if (
            means.shape[0] != len(classes)
            or not blocks
            or any(b.ndim != 2 or b.shape[0] != b.shape[1] for b in blocks)
            or sum(len(b) for b in blocks) != means.shape[1]
        ):
            raise ValueError(
                f"{path}: means {means.shape} and precision {[b.shape for b in blocks]} "
                f"do not fit {len(classes)} classes"
            )
        return cls(classes, means, precision, threshold, record)


def fit_novelty(
    embeddings: np.ndarray, labels: np.ndarray, classes: Sequence[str], on: str = ""
) -> Novelty:
    """Class means and the shared within-class covariance of training embeddings (N, D) with
    labels (N,) indexing ``classes``; uncalibrated (:meth:`Novelty.calibrated` sets the
    threshold on held-out reals). Every class needs at least one embedding."""
    from sklearn.covariance import LedoitWolf

    x = np.asarray(embeddings, dtype=np.float64)
    y = np.asarray(labels).astype(int).ravel()
    if x.ndim != 2 or len(x) != len(y):
        raise ValueError(f"embeddings {x.shape} and labels {y.shape} do not match")
    missing = [c for i, c in enumerate(classes) if not (y == i).any()]
    if missing:
        raise ValueError(f"no training embeddings of class(es) {', '.join(missing)}")
    means = np.stack([x[y == i].mean(axis=0) for i in range(len(classes))])
    centred = x - means[y]
    shrunk = LedoitWolf(assume_centered=True).fit(centred)
    return Novelty(
        tuple(classes),
        means,
        shrunk.precision_,
        None,
        {
            "fitted_on": on or f"{len(x)} training embeddings",
            "per_class": {c: int((y == i).sum()) for i, c in enumerate(classes)},
            "shrinkage": float(shrunk.shrinkage_),
            "distance": "Mahalanobis, class means, shared covariance (Lee et al. 2018)",
        },
    )


def combine_novelty(members: Sequence[Novelty]) -> Novelty:
    """An ensemble's novelty statistics from its members' (:class:`Novelty`, in member
    order): the class means side by side and each member's precision a diagonal block, so the
    squared distance to a class is the sum of the members' squared distances to it (each
    member's embedding read with its own covariance; no cross-member covariance is assumed,
    as none was fitted). Uncalibrated: ``ldmdetect calibrate`` sets the threshold on real
    images at the ensemble's views."""
    if not members:
        raise ValueError("no novelty statistics to combine")
    classes = members[0].classes
    if any(m.classes != classes for m in members):
        raise ValueError(
            "novelty statistics over different classes cannot be combined: "
            + ", ".join(str(m.classes) for m in members)
        )
    return Novelty(
        classes,
        np.concatenate([m.means for m in members], axis=1),
        tuple(block for m in members for block in m.blocks),
        None,
        {"combined": [dict(m.record) for m in members]},
    )
