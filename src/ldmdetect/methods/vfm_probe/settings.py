"""Settings of ``vfm-probe``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ldmdetect.methods.settings import MethodSettings


@dataclass(frozen=True)
class ProbeSettings:
    """The logistic regression's knobs."""

    #: inverse L2 strength on standardised embeddings (scikit-learn's ``C``)
    C: float = 1.0

    def __post_init__(self) -> None:
        if not self.C > 0:
            raise ValueError(f"C must be positive, got {self.C}")


@dataclass(frozen=True)
class VFMProbeSettings(MethodSettings):
    """``config.feature`` of a ``vfm-probe`` detector."""

    probe: ProbeSettings = field(default_factory=ProbeSettings)
    #: the foundation model's embedding width, from its architecture, recorded when the
    #: config is made (None: read from the architecture)
    embedding_dim: int | None = None


#: ``TrainConfig`` fields for a run of seconds on tiny components (the contract test's).
TINY: dict[str, Any] = {"backbone": "timm:tf_efficientnet_lite0", "input_size": 64}
