"""Settings of ``fakeinversion``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ldmdetect.features.inversion import InversionConfig
from ldmdetect.methods.settings import MethodSettings

DEFAULT_CAPTIONER = "blip2"  # Salesforce/blip2-opt-2.7b, the paper's
DEFAULT_MAP_SIZE = 224


@dataclass(frozen=True)
class FakeInversionSettings(MethodSettings):
    """``config.feature`` of a ``fakeinversion`` detector."""

    #: the inverted crop's size, DDIM steps and guidance of both walks
    inversion: InversionConfig = field(default_factory=InversionConfig)
    #: "blip2", "fixed:TEXT" or "prompt" (the sidecar prompt); see ``parse_captioner``
    captioner: str = DEFAULT_CAPTIONER
    #: side the image and its decoded inversions are resized to (and cached at)
    map_size: int = DEFAULT_MAP_SIZE
    #: add |x - D(z_0')| as three more input channels (12 instead of 9)
    residual: bool = False
    #: the prompt a "prompt" captioner reads per image
    prompt_template: str | None = None

    def __post_init__(self) -> None:
        if self.map_size < 1:
            raise ValueError(f"map_size must be positive, got {self.map_size}")


#: ``TrainConfig`` fields for a run of seconds on tiny components (the contract test's);
#: ``"<tiny>"`` stands for a tiny Stable Diffusion pipeline's directory.
TINY: dict[str, Any] = {
    "backbone": "resnet10t",
    "input_size": 64,
    "epochs": 3,
    "feature": {
        "inversion": {"image_size": 64, "steps": 2},
        "captioner": "fixed:a photo",
        "map_size": 32,
    },
}
