"""How ``ldmdetect demo`` fits ``vfm-probe`` (not in the default set): a probe on a frozen
ImageNet network whose weights ship offline, on the same real-vs-generated images as lare2."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ldmdetect.methods.demo_recipe import RealVsGeneratedRecipe


@dataclass(frozen=True)
class VFMProbeDemo(RealVsGeneratedRecipe):
    """vfm-probe's demo settings."""

    cache_name: ClassVar[str] = "vfm-probe"
    uses_generator: ClassVar[bool] = False  # a frozen ImageNet network, no generator

    backbone: str = "timm:tf_efficientnet_lite0"
    input_size: int = 128

    def training_log(self) -> str:
        return (
            f"[4/6] fit 'vfm-probe' (logistic regression on frozen {self.backbone}) on real "
            "crops vs. images generated from training captions"
        )
