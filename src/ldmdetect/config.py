"""The detector's ``config.json``: everything needed to run a detector the way it was trained.

Like timm's PretrainedCfg, it carries the preprocessing contract (input size, normalisation,
crop policy) next to the weights' provenance, so a detector is never run with the wrong one.
"""

from __future__ import annotations

import dataclasses
import json
import os
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


@dataclass
class DetectorConfig:
    """Serialisable description of a trained detector (see DESIGN section 3)."""

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
    # Where the model's starting weights came from ("random", a timm tag, a file...).
    weights_source: str = "random"
    training: dict[str, Any] = field(default_factory=dict)
    # Fake iff score > threshold. "0.5" is the raw decision rule; "fpr_X" are calibrated on
    # held-out real images so that at most a fraction X of them is flagged.
    thresholds: dict[str, float] = field(default_factory=lambda: {"0.5": 0.5})
    ldmdetect_version: str = __version__

    def threshold(self, fpr: float | None = None) -> tuple[str, float]:
        """(name, value) of the threshold for a target FPR; None means the raw 0.5 rule."""
        if fpr is None:
            return "0.5", self.thresholds.get("0.5", 0.5)
        key = fpr_key(fpr)
        if key not in self.thresholds:
            known = ", ".join(k for k in self.thresholds if k.startswith("fpr_")) or "none"
            raise ValueError(
                f"this detector has no threshold calibrated at FPR {fpr:g} (calibrated: {known})"
            )
        return key, self.thresholds[key]

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
