"""Settings of ``aeroblade``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ldmdetect.methods.aeroblade.features import DEFAULT_AUTOENCODERS
from ldmdetect.methods.settings import MethodSettings


@dataclass(frozen=True)
class AerobladeConfig:
    """``config.feature["aeroblade"]``: what changes the score."""

    #: hub ids or directories (pipelines or autoencoder folders), or source dicts
    autoencoders: tuple[Any, ...] = DEFAULT_AUTOENCODERS
    #: LPIPS VGG layer: 1..5 (relu1_2 .. relu5_3) or 0 for the sum of all (original LPIPS)
    layer: int = 2
    #: view offsets are multiples of this (the latent cell of the autoencoders)
    grid: int = 8
    #: seeds the posterior samples (with each image's id)
    seed: int = 1

    def __post_init__(self) -> None:
        if not 0 <= self.layer <= 5:
            raise ValueError(f"layer must be 0 (all) or 1..5, got {self.layer}")
        if self.grid < 1:
            raise ValueError(f"grid must be positive, got {self.grid}")

    @classmethod
    def from_config(cls, config) -> AerobladeConfig:
        """The settings of a detector config (``DetectorConfig``)."""
        return AerobladeSettings.from_feature(config.feature, method="aeroblade").aeroblade

    def to_dict(self) -> dict[str, Any]:
        return {
            "autoencoders": list(self.autoencoders),
            "layer": self.layer,
            "grid": self.grid,
            "seed": self.seed,
        }


@dataclass(frozen=True)
class AerobladeSettings(MethodSettings):
    """``config.feature`` of an ``aeroblade`` detector: the autoencoders are recorded as
    exact source dicts when the config is made."""

    aeroblade: AerobladeConfig = field(default_factory=AerobladeConfig)


#: ``TrainConfig`` fields for a run of seconds on tiny components (the contract test's);
#: ``"<tiny>"`` stands for a tiny Stable Diffusion pipeline's directory.
TINY: dict[str, Any] = {
    "input_size": 32,
    # the tiny pipeline's VAE
    "feature": {"aeroblade": {"autoencoders": ["<tiny>"]}},
}
