"""ldmdetect: tell whether an image was made by a latent diffusion model.

``Detector.from_pretrained(dir)``, ``detector.decision_function(images)`` (scores),
``detector.predict(images)`` (decisions), ``ldmdetect.reconstruct(...)``,
``ldmdetect.train(...)``, ``ldmdetect.evaluate(...)``, ``ldmdetect.scan(...)``. Imports are lazy so
that ``import ldmdetect`` (and the CLI's --help) stays fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ldmdetect._version import __version__

_EXPORTS = {
    "Detector": ("ldmdetect.detector", "Detector"),
    "DetectorConfig": ("ldmdetect.config", "DetectorConfig"),
    "reconstruct": ("ldmdetect.engine.reconstruct", "build_aligned_dataset"),
    "ReconstructConfig": ("ldmdetect.engine.reconstruct", "ReconstructConfig"),
    "train": ("ldmdetect.engine.train", "train_detector"),
    "TrainConfig": ("ldmdetect.engine.train", "TrainConfig"),
    "evaluate": ("ldmdetect.engine.evaluate", "evaluate"),
    "scan": ("ldmdetect.engine.scan", "scan"),
}

if TYPE_CHECKING:
    from ldmdetect.config import DetectorConfig
    from ldmdetect.detector import Detector
    from ldmdetect.engine.evaluate import evaluate
    from ldmdetect.engine.reconstruct import ReconstructConfig
    from ldmdetect.engine.reconstruct import build_aligned_dataset as reconstruct
    from ldmdetect.engine.scan import scan
    from ldmdetect.engine.train import TrainConfig
    from ldmdetect.engine.train import train_detector as train


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'ldmdetect' has no attribute {name!r}")
    module, attribute = _EXPORTS[name]
    return getattr(importlib.import_module(module), attribute)


__all__ = [
    "Detector",
    "DetectorConfig",
    "ReconstructConfig",
    "TrainConfig",
    "__version__",
    "evaluate",
    "reconstruct",
    "scan",
    "train",
]
