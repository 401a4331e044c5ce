"""How to train a detector: :class:`TrainConfig`, read by every training step (the data
loaders, the loop, the driver), so it sits below all of them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ldmdetect.engine.metrics import FPR_TARGETS
from ldmdetect.io.augment import AugmentConfig

__all__ = ["AugmentConfig", "TrainConfig"]


@dataclass
class TrainConfig:
    """How to train. ``None`` means the method's default (``Method.default_cfg``)."""

    method: str = "ae"
    backbone: str | None = None
    pretrained: bool | str = False
    input_size: int | None = None  # pairs: default the dataset's crop size
    epochs: int = 5
    batch_size: int = 16  # examples per batch (pairs count once: 2 images each)
    lr: float | None = None  # default: the method's, else 1e-4 pretrained / 1e-3 from scratch
    weight_decay: float | None = None
    grad_clip: float | None = None
    val_fraction: float = 0.1
    seed: int = 0
    num_workers: int = 0
    device: str = "auto"
    # Train in channels-last memory format. None: on a GPU (faster there for convolutions,
    # and what Detector uses for inference), not on a CPU, where whether it pays depends on
    # the network (benchmarks/results/NOTES.md). Only the memory layout changes; the saved
    # weights are contiguous either way.
    channels_last: bool | None = None
    # Keep an exponential moving average of the weights (timm's ModelEmaV3, batch-norm
    # statistics included) and save and validate that instead of the last step's weights.
    # After k optimizer steps the decay is min(ema_decay, 1 - k^(-2/3)) (a warm-up), so short
    # runs are not pinned to the initial weights. None: the last step's weights.
    ema_decay: float | None = None
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    fprs: tuple[float, ...] = FPR_TARGETS
    # Folders of real images the final model's thresholds are calibrated on instead of the
    # validation reals: images of many sources like those the detector will scan (first-level
    # subfolders count as sources). Empty: the validation split's reals.
    calibration_reals: tuple[str, ...] = ()
    feature: dict[str, Any] = field(default_factory=dict)  # overrides of the method's settings
