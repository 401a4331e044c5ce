"""Several trained detectors read as one: ``ldmdetect ensemble``.

Train a detector a few times with different seeds (``ldmdetect train --seed N``), then
combine them: the ensemble's score is the members' mean probability (a deep ensemble,
:mod:`ldmdetect.models.ensemble` says why). Its thresholds are its own, so it is saved
uncalibrated and calibrated like any detector, on real images (``reals`` here, or
``ldmdetect calibrate`` afterwards); for a family head, an aligned dataset among them also
sets the open-set family threshold and the novelty threshold at the ensemble's views.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from torch import nn

from ldmdetect.attribution import Novelty, combine_novelty
from ldmdetect.detector import Detector
from ldmdetect.engine.metrics import FPR_TARGETS
from ldmdetect.models.ensemble import Ensemble

__all__ = ["SHARED_FIELDS", "Ensembled", "ensemble_detectors"]

#: What every member must share: how an image becomes the networks' input, the networks'
#: kind and the classes they output. Weights, seeds, training records and thresholds differ.
SHARED_FIELDS = (
    "method",
    "backbone",
    "input_size",
    "mean",
    "std",
    "default_tries",
    "try_seed",
    "feature",
    "components",
    "families",
)


@dataclass(frozen=True)
class Ensembled:
    """What :func:`ensemble_detectors` wrote: the detector (calibrated where reals were
    given), its directory, and the calibration's unreadable and skipped files."""

    detector: Detector
    output: Path
    errors: dict[str, str] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)


def ensemble_detectors(
    sources: Sequence[str | os.PathLike],
    output: str | os.PathLike,
    *,
    reals: Sequence[str | os.PathLike] = (),
    fprs: Sequence[float] = FPR_TARGETS,
    tries: int | None = None,
    batch_size: int = 64,
    device: str = "auto",
) -> Ensembled:
    """Combine the detector directories ``sources`` (two or more networks in all; a member
    that is itself an ensemble adds its networks) into one detector at ``output``.

    Members must agree on :data:`SHARED_FIELDS`; a member that differs is named with the
    field. The ensemble keeps no member's thresholds or family threshold (they were set on
    another score), so it is saved uncalibrated and, with ``reals``, calibrated there as
    ``ldmdetect calibrate`` would (``tries``: views per image, default the members'): any
    reals set the thresholds and the novelty threshold, an aligned dataset among them also a
    family head's family threshold (without one the family-share rule is off, and a warning
    says so). Its novelty statistics are the members' combined
    (:func:`ldmdetect.attribution.combine_novelty`) where every member has them (a warning
    names the members without). Nothing is written when a source or a real is missing, a
    source is given twice, or ``output`` is one of the sources.
    """
    from ldmdetect.engine.calibrate import calibrate_detector
    from ldmdetect.io.datasets import search_images

    if len(sources) < 1:
        raise ValueError("an ensemble needs detector directories to combine")
    resolved = [Path(s).resolve() for s in sources]
    twice = sorted(
        {str(s) for s, r in zip(sources, resolved, strict=True) if resolved.count(r) > 1}
    )
    if twice:
        raise ValueError(f"{', '.join(twice)}: given twice; the same network twice adds nothing")
    if Path(output).resolve() in resolved:
        raise ValueError(f"{output}: is one of the members; write the ensemble elsewhere")
    missing = search_images(reals).missing
    if missing:
        raise ValueError(f"{missing[0]}: no such file or folder of real images")
    members = [(Path(s), Detector.from_pretrained(s, device="cpu")) for s in sources]
    first_source, first = members[0]
    for source, member in members[1:]:
        for name in SHARED_FIELDS:
            mine, theirs = getattr(member.config, name), getattr(first.config, name)
            if mine != theirs:
                raise ValueError(
                    f"{source}: {name} {mine!r} differs from {first_source}'s {theirs!r}; the "
                    "members of an ensemble must read the same input and give the same classes"
                )
    if not first.method.trains:
        raise ValueError(
            f"{first_source}: {first.config.method} does not train, so its detectors have no "
            "networks of their own to combine"
        )
    networks: list[nn.Module] = []
    for _, member in members:
        model = member.model
        networks += list(model.members) if isinstance(model, Ensemble) else [model]
    if len(networks) < 2:
        raise ValueError(f"an ensemble needs two or more networks, got {len(networks)}")
    config = replace(
        first.config,
        members=len(networks),
        thresholds={"0.5": 0.5},
        calibration={},
        family_threshold=None,
        training={
            "ensemble_of": [
                {"directory": str(source), "members": member.config.members}
                | {"training": member.config.training}
                for source, member in members
            ]
        },
    )
    without = [str(source) for source, member in members if member.novelty is None]
    novelty: Novelty | None = (
        None if without else combine_novelty([m.novelty for _, m in members if m.novelty])
    )
    if config.families and without and len(without) < len(members):
        warnings.warn(
            f"{', '.join(without)}: no novelty statistics, so the ensemble has none (its "
            "open set keeps the family-share and outlier rules only)",
            stacklevel=2,
        )
    model = Ensemble(networks, first.method.logits_per_view(config))
    output = Path(output)
    Detector(config, model, device="cpu", novelty=novelty).save_pretrained(output)
    if not reals:
        return Ensembled(Detector.from_pretrained(output, device=device), output)
    calibration = calibrate_detector(
        output, reals, output, fprs=fprs, tries=tries, batch_size=batch_size, device=device
    )
    if config.families and calibration.config.family_threshold is None:
        warnings.warn(
            f"{output}: no family threshold, so no image is called 'unknown' by its family "
            "share: calibrate with an aligned dataset (`ldmdetect reconstruct` output) among "
            "the reals to set one",
            stacklevel=2,
        )
    return Ensembled(
        Detector.from_pretrained(output, device=device),
        output,
        calibration.errors,
        calibration.skipped,
    )
