"""Settings of ``ae``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ldmdetect.methods.settings import MethodSettings


@dataclass(frozen=True)
class AESettings(MethodSettings):
    """None: the classifier reads raw crops, whose size is the config's ``input_size``."""


#: ``TrainConfig`` fields for a run of seconds on tiny components (the contract test's);
#: ``"<tiny>"`` stands for a tiny Stable Diffusion pipeline's directory.
TINY: dict[str, Any] = {"backbone": "resnet10t", "input_size": 64, "epochs": 2}
