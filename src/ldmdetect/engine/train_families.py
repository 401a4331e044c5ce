"""What a family head adds to training: the families it learns, its outlier class, each
generator's own images as family examples, the feature-space novelty rule and the open-set
family threshold, and where each family's autoencoder came from.

:func:`ldmdetect.engine.train.train_detector` calls these when the aligned datasets hold
reconstructions of two or more autoencoder families (see :mod:`ldmdetect.attribution`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ldmdetect import methods
from ldmdetect.attribution import OTHER, Novelty
from ldmdetect.config import DetectorConfig
from ldmdetect.detector import Detector
from ldmdetect.engine.reconstruct import AlignedPair, read_aligned_dataset
from ldmdetect.engine.train_loop import eval_pass
from ldmdetect.features.cache import FeatureCache
from ldmdetect.io.labeled import Example
from ldmdetect.methods.registry import FeatureStep, Method

__all__ = [
    "calibrate_families",
    "family_counts",
    "family_generations",
    "family_sources",
    "head_families",
    "novelty_statistics",
    "outlier_pairs",
]


def head_families(
    method_name: str, pairs: Sequence[AlignedPair], data: Sequence[str | os.PathLike]
) -> tuple[str, ...]:
    """The families a family head learns: every reconstruction family of the training pairs,
    in the order they first appear (the order of ``--autoencoder`` and ``--data``). Empty
    (a real/generated detector) for fewer than two, or a method that does not attribute."""
    families = tuple(dict.fromkeys(f for p in pairs for f in p.families))
    if len(families) < 2 or not methods.get(method_name).attributes_families:
        return ()
    if "" in families:
        raise ValueError(
            "these aligned datasets mix tagged and untagged reconstructions ("
            + ", ".join(map(str, data))
            + "), so the family head cannot name them all: rebuild the untagged ones with "
            "`ldmdetect reconstruct --autoencoder NAME=SRC`"
        )
    return families


def outlier_pairs(
    outliers: Sequence[str | os.PathLike], families: Sequence[str]
) -> list[AlignedPair]:
    """The pairs of the ``outliers`` aligned datasets with every reconstruction tagged
    ``"other"``: the Outlier Exposure class of a family head (an auxiliary autoencoder is
    there to stand for autoencoders the head does not know, not to be told apart). Refused
    for a detector without a family head, and for a dataset whose autoencoder is tagged as
    one of the head's families (its images would teach two classes at once)."""
    if not families:
        raise ValueError(
            "--outlier-data needs a family head: train `ae` on aligned datasets reconstructed "
            "through two or more autoencoders (`ldmdetect reconstruct --autoencoder NAME=SRC`)"
        )
    if OTHER in families:
        raise ValueError(
            f"a family is named {OTHER!r}, the name of the outlier class: rename it with "
            "`ldmdetect reconstruct --autoencoder NAME=SRC`"
        )
    out = []
    for directory in outliers:
        pairs = read_aligned_dataset(directory)
        if not pairs:
            raise ValueError(f"{os.fspath(directory)}: no aligned pairs in this dataset")
        clash = sorted({f for p in pairs for f in p.families} & set(families))
        if clash:
            raise ValueError(
                f"{os.fspath(directory)}: reconstructed through {', '.join(clash)}, a family "
                "the head learns; outlier data must come from other autoencoders"
            )
        out += [
            replace(
                p,
                pair_id=f"{OTHER}:{p.pair_id}",
                reconstructions=tuple((OTHER, path) for _, path in p.reconstructions),
            )
            for p in pairs
        ]
    return out


def family_generations(
    generated: Sequence[tuple[str, str | os.PathLike]], families: Sequence[str]
) -> list[Example]:
    """Each generator's own images as family-labelled training examples (label 1 + the
    family's index in ``families``), each image its own group for the validation split.

    Why: reconstructions of photographs teach the family head an autoencoder's trace on
    photographic content only, while a generator's images carry it on everything it draws;
    a few of them per family show the head that trace on other content. Only a family head
    takes them, and only for families its aligned datasets have (the binary score stays
    anchored to real crops and their reconstructions)."""
    from ldmdetect.io.datasets import find_images

    if not families:
        raise ValueError(
            "generated images per family need a family head: train `ae` on aligned "
            "datasets reconstructed through two or more autoencoders"
        )
    examples = []
    for family, folder in generated:
        if family not in families:
            raise ValueError(
                f"{os.fspath(folder)}: tagged with family {family!r}, which no aligned "
                f"dataset has (families: {', '.join(families)})"
            )
        if not Path(folder).is_dir():
            raise FileNotFoundError(f"{os.fspath(folder)}: no such folder of generated images")
        files = find_images([folder])
        if not files:
            raise ValueError(f"{os.fspath(folder)}: no images in this folder")
        label = 1 + list(families).index(family)
        examples += [Example(str(path), label, f"{family}:{path}") for path in files]
    return examples


def novelty_statistics(
    detector: Detector,
    train_pairs: Sequence[AlignedPair],
    train_generated: Sequence[Example] = (),
    val_pairs: Sequence[AlignedPair] = (),
    batch_size: int = 64,
) -> Novelty | None:
    """A family head's feature-space open-set rule (:class:`ldmdetect.attribution.Novelty`):
    class means and shared covariance of the penultimate embeddings of the training split
    (real crops, each family's reconstructions and generations; one centred view each, no
    augmentation), its threshold at ``NOVELTY_FPR`` of the validation split's real crops
    (``ldmdetect calibrate`` re-derives it on the calibration reals at their views). None
    where the classifier has no linear head to read, or no validation reals."""
    from ldmdetect.attribution import NOVELTY_FPR, classifier_heads, fit_novelty
    from ldmdetect.engine.scan import score_files_embedded

    try:
        classifier_heads(detector.model)
    except ValueError:
        return None
    # Every class of the head, the outlier class included, has its mean.
    families = list(detector.classes[1:])
    members = [(p.real, 0) for p in train_pairs] + [
        (path, 1 + families.index(family))
        for p in train_pairs
        for family, path in p.reconstructions
    ]
    members += [(Path(e.path), e.label) for e in train_generated]
    scores, _, embeddings, _ = score_files_embedded(
        detector, [m for m, _ in members], tries=1, batch_size=batch_size
    )
    ok = ~np.isnan(scores)
    labels = np.array([label for _, label in members])[ok]
    novelty = fit_novelty(
        embeddings[ok],
        labels,
        detector.classes,
        on=f"{len(labels)} training crops (one view each)",
    )
    scores, _, reals, _ = score_files_embedded(
        detector, [p.real for p in val_pairs], batch_size=batch_size
    )
    reals = reals[~np.isnan(scores)]
    if not len(reals):
        return novelty
    return novelty.calibrated(reals, NOVELTY_FPR, on=f"{len(reals)} held-out validation real crops")


def family_sources(
    infos: Sequence[Mapping[str, Any]], families: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """{family: the component source of its autoencoder} from aligned datasets' dataset.json
    (their ``families`` maps), the first dataset naming a family winning. Families whose
    autoencoder was a loaded module (no source) or whose dataset predates the map are left
    out: what is recorded can be loaded again, what is not is said to be missing."""
    found: dict[str, dict[str, Any]] = {}
    for info in infos:
        recorded = info.get("families") if isinstance(info, Mapping) else None
        if not isinstance(recorded, Mapping):
            continue
        for family, source in recorded.items():
            if family in families and family not in found and isinstance(source, Mapping):
                found[family] = dict(source)
    return {f: found[f] for f in families if f in found}


def calibrate_families(
    method: Method,
    model: nn.Module,
    config: DetectorConfig,
    val_loader: torch.utils.data.DataLoader | None,
    device: torch.device,
    features: FeatureStep | None,
    cache: FeatureCache | None,
) -> tuple[float | None, dict]:
    """The family head's open-set threshold, from the validation split's reconstructions of
    its known families (:func:`ldmdetect.attribution.calibrate_family_threshold`: their 1st
    percentile of family score) and a record of it for the training summary. Without a
    validation split there is nothing to calibrate on: no threshold (the best family always
    answers)."""
    from ldmdetect.attribution import (
        FAMILY_QUANTILE,
        calibrate_family_threshold,
        has_other,
        share_quantiles,
    )

    classes = list(method.classes_for(config))
    if val_loader is None:
        return None, {"classes": classes, "threshold_on": None}
    scored = eval_pass(
        method, model.to(device), config, val_loader, device, features=features, cache=cache
    )
    probabilities, labels = scored.probabilities, scored.labels
    other = has_other(classes)
    known = (labels > 0) & (labels < len(classes) - int(other))
    held_out = probabilities[known]
    threshold = calibrate_family_threshold(held_out, other=other)
    n_families = len(classes) - 1 - int(other)
    record = {
        "classes": classes,
        "threshold_on": f"{len(held_out)} held-out reconstructions",
        "quantile": FAMILY_QUANTILE,
        "share_quantiles": share_quantiles(held_out, other=other),
        # Share of the held-out reconstructions the head gives their own family.
        "val_family_accuracy": float(
            (held_out[:, 1 : 1 + n_families].argmax(axis=1) + 1 == labels[known]).mean()
        )
        if len(held_out)
        else None,
    }
    if other:
        # Held-out outlier reconstructions whose mass goes mostly to the outlier class.
        outlier = probabilities[labels == len(classes) - 1]
        record["val_other_share"] = (
            float((outlier[:, -1] >= outlier[:, 1:-1].max(axis=1)).mean()) if len(outlier) else None
        )
    return threshold, record


def family_counts(examples: Sequence[Example], families: Sequence[str]) -> dict[str, int]:
    """How many of ``examples`` each family labels (label 1 + its index)."""
    return {family: sum(e.label == 1 + i for e in examples) for i, family in enumerate(families)}
