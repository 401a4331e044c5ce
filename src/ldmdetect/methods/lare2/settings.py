"""Settings of ``lare2``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ldmdetect.methods.lare2.features import LareConfig
from ldmdetect.methods.settings import MethodSettings

DEFAULT_PROMPT_TEMPLATE = "a photo of a {class}"
GUIDANCES = ("lare", "none")


@dataclass(frozen=True)
class Lare2Settings(MethodSettings):
    """``config.feature`` of a ``lare2`` detector."""

    #: LaRE's knobs (the official extraction script's defaults)
    lare: LareConfig = field(default_factory=LareConfig)
    #: the UNet's text condition per image (``{class}``: its class folder's name)
    prompt_template: str | None = DEFAULT_PROMPT_TEMPLATE
    #: "none" feeds EGRE an all-zero map: the paper's "without LaRE" ablation, an image-only
    #: baseline that needs no generator
    guidance: str = "lare"
    #: the VAE's downsampling factor: crops are taken at multiples of it, so a crop's map is a
    #: slice of the whole image's. Resolved from the VAE's config when the config is made;
    #: None (never resolved: unguided, or saved before it was recorded) reads as SD's 8.
    latent_factor: int | None = None
    #: channels of the LaRE map (4 for SD/SDXL, 16 for SD3/FLUX), resolved like the factor;
    #: None: the components' VAE's where reachable, else SD's 4
    latent_channels: int | None = None

    def __post_init__(self) -> None:
        if self.guidance not in GUIDANCES:
            raise ValueError(f"guidance must be 'lare' or 'none', not {self.guidance!r}")
        for name in ("latent_factor", "latent_channels"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be positive, got {value}")

    @property
    def unguided(self) -> bool:
        return self.guidance == "none"


#: ``TrainConfig`` fields for a run of seconds on tiny components (the contract test's);
#: ``"<tiny>"`` stands for a tiny Stable Diffusion pipeline's directory.
TINY: dict[str, Any] = {
    "backbone": "timm:resnet10t",
    "input_size": 64,
    "epochs": 3,
    "feature": {"lare": {"image_size": 64, "ensemble": 2}},
}
