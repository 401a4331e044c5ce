"""Settings of ``dire``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from ldmdetect.methods.dire.features import SPACES, DireConfig
from ldmdetect.methods.settings import MethodSettings


@dataclass(frozen=True)
class DireSettings(MethodSettings):
    """``config.feature`` of a ``dire`` detector."""

    # Detectors saved before ``fit_short_side`` existed cut native-resolution squares; they
    # keep doing so. New configs always record the field.
    legacy_nested_defaults: ClassVar[dict[str, dict[str, Any]]] = {
        "dire": {"fit_short_side": False}
    }

    #: the reconstructed square's size, DDIM steps, how the square is cut
    dire: DireConfig = field(default_factory=DireConfig)
    #: "pixel" (a ``UNet2DModel``, as in the paper), "latent" (an LDM) or "auto": told apart
    #: from the UNet's config, once, when the config is made, and recorded
    space: str = "auto"

    def __post_init__(self) -> None:
        if self.space not in SPACES:
            raise ValueError(f"space must be one of {', '.join(SPACES)}, not {self.space!r}")


#: ``TrainConfig`` fields for a run of seconds on tiny components (the contract test's);
#: ``"<tiny>"`` stands for a tiny Stable Diffusion pipeline's directory.
TINY: dict[str, Any] = {
    "backbone": "resnet10t",
    "input_size": 64,
    "epochs": 3,
    "feature": {"dire": {"image_size": 64, "steps": 2}},
}
