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
    ``ldmdetect calibrate`` would (``tries``: views per image, default the members'). Its
    novelty statistics are the members' combined (:func:`ldmdetect.attribution.combine_novelty`)
    where every member has them.
    """
    from ldmdetect.engine.calibrate import calibrate_detector

    if len(sources) < 1:
        raise ValueError("an ensemble needs detector directories to combine")
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
    novelties = [member.novelty for _, member in members]
    novelty: Novelty | None = (
        combine_novelty([n for n in novelties if n is not None])
        if all(n is not None for n in novelties)
        else None
    )
    model = Ensemble(networks, first.method.logits_per_view(config))
    output = Path(output)
    Detector(config, model, device="cpu", novelty=novelty).save_pretrained(output)
    if not reals:
        return Ensembled(Detector.from_pretrained(output, device=device), output)
    calibration = calibrate_detector(
        output, reals, output, fprs=fprs, tries=tries, batch_size=batch_size, device=device
    )
    return Ensembled(
        Detector.from_pretrained(output, device=device),
        output,
        calibration.errors,
        calibration.skipped,
    )
