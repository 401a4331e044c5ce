"""The detector's ``config.json``: everything needed to run a detector the way it was trained.

Like timm's PretrainedCfg, it carries the preprocessing contract (input size, normalisation,
crop policy) next to the weights' provenance, so a detector is never run with the wrong one.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ldmdetect._version import __version__
from ldmdetect.io.files import atomic_write_text

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def fpr_key(fpr: float) -> str:
    """Key of the threshold calibrated at false-positive rate ``fpr`` (e.g. "fpr_0.01")."""
    return f"fpr_{fpr:g}"


def reals_needed(fpr: float) -> int:
    """The fewest exchangeable reals whose largest score bounds a new real's false-positive
    probability by ``fpr``: n with 1 / (n + 1) <= fpr, i.e. ceil(1 / fpr) - 1 (99 for 1%)."""
    if not 0.0 < fpr <= 1.0:
        raise ValueError(f"fpr must be in (0, 1], got {fpr}")
    return max(1, math.ceil(1.0 / fpr - 1e-9) - 1)


class UnresolvedThreshold(ValueError):
    """A threshold asked for at an FPR its calibration reals were too few to resolve."""


#: The three answers of a verdict, from most to least confident that an image is real.
VERDICTS = ("real", "uncertain", "generated")


@dataclass(frozen=True)
class DecisionRule:
    """How scores become answers, from one or two thresholds of a detector.

    ``label``: "generated" iff score > ``threshold`` (the rule at the chosen FPR). ``verdict``
    adds a band: "real" at or below ``real_threshold`` (a looser calibrated FPR's threshold),
    "uncertain" between the two, "generated" above ``threshold``. So at fpr 0.01 with the
    band at 0.05, about 95% of real images are "real", 4% "uncertain" and 1% "generated",
    and a score near the threshold is not announced with the confidence of one far from it.
    Without a band (``real_threshold == threshold``) the verdict is the label.
    """

    fpr: float | None
    threshold_name: str
    threshold: float
    uncertain_fpr: float | None = None
    real_threshold_name: str = ""
    real_threshold: float = math.nan

    def __post_init__(self) -> None:
        if math.isnan(self.real_threshold):
            object.__setattr__(self, "real_threshold", self.threshold)
            object.__setattr__(self, "real_threshold_name", self.threshold_name)
        if self.real_threshold > self.threshold:
            raise ValueError(
                f"the 'real' threshold ({self.real_threshold_name} = {self.real_threshold:g}) "
                f"lies above the 'generated' one ({self.threshold_name} = {self.threshold:g})"
            )

    def label(self, score: float) -> str:
        return "generated" if score > self.threshold else "real"

    def verdict(self, score: float) -> str:
        if score > self.threshold:
            return "generated"
        return "real" if score <= self.real_threshold else "uncertain"

    def describe(self) -> dict[str, Any]:
        """The rule as JSON-ready fields (for a scan's journal header and the service)."""
        return {
            "threshold": self.threshold_name,
            "threshold_value": self.threshold,
            "real_threshold": self.real_threshold_name,
            "real_threshold_value": self.real_threshold,
        }


@dataclass(frozen=True)
class DetectorConfig:
    """Serialisable description of a trained detector (see DESIGN section 3).

    Frozen: a config is made once (:func:`ldmdetect.methods.make_config`, or loaded) and a
    step that settles more of it (training, calibration, an ensemble) makes a new one with
    :func:`dataclasses.replace`, so a detector never runs on a config that changed under it.
    Its dict fields stay plain dicts, so that ``to_dict`` and ``config.json`` are exactly the
    JSON they always were; a replaced config may share them with the one it came from, so
    they are read, never written in place: build the new dict, then replace the field.
    """

    method: str = "ae"
    backbone: str = "tf_efficientnetv2_b0"
    input_size: int = 256
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    # 1 try = the center crop; N tries = mean probability over N seeded random crops.
    default_tries: int = 1
    try_seed: int = 0
    # Feature settings the method reads (e.g. LaRE's timestep and ensemble, the prompt template).
    feature: dict[str, Any] = field(default_factory=dict)
    # Generator components the feature step is built from, named like model_index.json:
    # {"vae": {"id": "stabilityai/stable-diffusion-2-1", "subfolder": "vae", "revision": null}}.
    # Loaded when the detector runs; never saved with its weights.
    components: dict[str, dict[str, Any]] = field(default_factory=dict)
    # The autoencoder the training data was reconstructed with (aligned datasets), if any.
    generator: dict[str, Any] | None = None
    # Family head (methods that attribute, trained on reconstructions through >= 2
    # autoencoders): the families it tells apart, its classes being ("real", *families).
    # Empty: a real/generated detector.
    families: tuple[str, ...] = ()
    # Open-set rule of the family head: a generated image whose family score (the best
    # family's share of the generated mass) is below this is "unknown"; calibrated on held-out
    # reconstructions (ldmdetect.attribution.calibrate_family_threshold). None: no rule.
    family_threshold: float | None = None
    # Where each family's reconstructions came from: {family: component source dict} of the
    # autoencoder that made them (the aligned datasets' dataset.json), so an evaluation can
    # ask AEROBLADE which of them reconstructs an image best. Empty: not recorded.
    family_sources: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Where the model's starting weights came from ("random", a timm tag, a file...).
    weights_source: str = "random"
    # Independently trained networks whose mean probability the detector reads (a deep
    # ensemble, ``ldmdetect ensemble``; ldmdetect.models.ensemble says why). 1: one network.
    members: int = 1
    training: dict[str, Any] = field(default_factory=dict)
    # Fake iff score > threshold. "0.5" is the raw decision rule; "fpr_X" are calibrated on
    # held-out real images so that at most a fraction X of them is flagged.
    # Only thresholds the calibration reals resolve are here (see ``calibration``).
    thresholds: dict[str, float] = field(default_factory=lambda: {"0.5": 0.5})
    # What the fpr_X thresholds were set on and how far to trust them: "n_real", "n_sources",
    # "on" (a description) and per threshold key its target, whether the reals resolve it,
    # "needs_n_real", the reals flagged and "fpr_upper_95" (one-sided Clopper-Pearson).
    calibration: dict[str, Any] = field(default_factory=dict)
    ldmdetect_version: str = __version__

    def threshold(self, fpr: float | None = None) -> tuple[str, float]:
        """(name, value) of the threshold for a target FPR; None means the raw 0.5 rule.

        An FPR the calibration could not resolve raises :class:`UnresolvedThreshold`, saying
        how many real images it needs: a threshold is never applied on a promise its reals
        cannot keep.
        """
        if fpr is None:
            return "0.5", self.thresholds.get("0.5", 0.5)
        key = fpr_key(fpr)
        needs = self._unresolved(fpr)
        if needs is not None:
            n_real = self.calibration.get("n_real", _legacy_n_real(self.training))
            raise UnresolvedThreshold(
                f"this detector's threshold at FPR {fpr:g} is unresolved: it was calibrated on "
                f"{n_real} real images and needs at least {needs}; recalibrate with "
                "`ldmdetect calibrate --detector DIR --real DIR` on more real images, or use a "
                f"larger --fpr (resolved: {', '.join(self.resolved_fprs()) or 'none'})"
            )
        if key not in self.thresholds:
            known = ", ".join(k for k in self.thresholds if k.startswith("fpr_")) or "none"
            raise ValueError(
                f"this detector has no threshold calibrated at FPR {fpr:g} (calibrated: {known})"
            )
        return key, self.thresholds[key]

    def _unresolved(self, fpr: float) -> int | None:
        """The reals an FPR's threshold needs when its calibration did not resolve it, else
        None. Detectors saved before calibration records are judged by the count their
        training summary gives."""
        key = fpr_key(fpr)
        record = self.calibration.get("thresholds", {}).get(key)
        if record is not None:
            return None if record.get("resolved", True) else record.get("needs_n_real")
        n_real = self.calibration.get("n_real", _legacy_n_real(self.training))
        if key in self.thresholds and n_real is not None and n_real < reals_needed(fpr):
            return reals_needed(fpr)
        return None

    def resolved_fprs(self) -> list[str]:
        """Keys of the fpr_X thresholds that may be applied (see :meth:`threshold`)."""
        return [
            key
            for key in self.thresholds
            if key.startswith("fpr_") and self._unresolved(float(key[len("fpr_") :])) is None
        ]

    def decision_rule(
        self, fpr: float | None = 0.01, uncertain_fpr: float | str | None = "auto"
    ) -> DecisionRule:
        """The rule that turns scores into labels and verdicts (see :class:`DecisionRule`).

        ``uncertain_fpr`` is the looser FPR whose threshold bounds the "uncertain" band from
        below; "auto" takes the next resolved FPR above ``fpr`` (none: no band), None no band.
        """
        name, value = self.threshold(fpr)
        if fpr is None or uncertain_fpr is None:
            return DecisionRule(fpr, name, value)
        if uncertain_fpr == "auto":
            looser = sorted(
                f for f in (float(k[len("fpr_") :]) for k in self.resolved_fprs()) if f > fpr
            )
            if not looser:
                return DecisionRule(fpr, name, value)
            uncertain_fpr = looser[0]
        uncertain_fpr = float(uncertain_fpr)
        if uncertain_fpr <= fpr:
            raise ValueError(
                f"the uncertain band's FPR ({uncertain_fpr:g}) must be larger than --fpr ({fpr:g})"
            )
        real_name, real_value = self.threshold(uncertain_fpr)
        return DecisionRule(fpr, name, value, uncertain_fpr, real_name, real_value)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DetectorConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            # A newer ldmdetect may add keys; an older one still runs the detector, and says so.
            warnings.warn(
                f"ignoring unknown detector config keys: {', '.join(unknown)}", stacklevel=2
            )
        data = {k: v for k, v in data.items() if k in known}
        for key in ("mean", "std"):
            if key in data:
                data[key] = tuple(float(v) for v in data[key])
        if "families" in data:
            data["families"] = tuple(str(f) for f in data["families"])
        return cls(**data)

    def save(self, directory: str | os.PathLike) -> Path:
        path = Path(directory) / CONFIG_NAME
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, directory: str | os.PathLike) -> DetectorConfig:
        path = Path(directory) / CONFIG_NAME
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError, ValueError, TypeError) as err:
            raise ValueError(f"{path}: not a valid detector config ({err})") from err


def _legacy_n_real(training: dict[str, Any]) -> int | None:
    """How many reals a detector saved before calibration records set its thresholds on, read
    from its training summary ("64 held-out real images"); None when it does not say."""
    match = re.match(r"(\d+) held-out real images", str(training.get("threshold_calibration", "")))
    return int(match.group(1)) if match else None
