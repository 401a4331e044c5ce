"""How ``ldmdetect demo`` trains ``lare2``: on real crops of the training photos vs. images
the generator made from its training captions, LaRE computed by the same generator. Both
classes are ``eval_size`` squares, so LaRE's whole-image resize is the identity for both."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from ldmdetect.methods.demo_recipe import DemoSettings, FeatureClassifierRecipe


@dataclass(frozen=True)
class LaRE2Demo(FeatureClassifierRecipe):
    """lare2's demo settings (also the base of benchmarks/lare2_ablation.py)."""

    cache_name: ClassVar[str] = "lare2"
    # Four UNet passes and a VAE encoding per image (0.25 CPU-s at 128 px): its JPEG rows, a
    # second LaRE pass over new pixels, are left to evaluate as fakeinversion's are.
    robustness: ClassVar[bool] = False

    # lare2's backbones are named by library (its default is a CLIP tower, "openclip:RN50").
    backbone: str = "timm:tf_efficientnet_lite0"
    timestep: int = 200
    ensemble: int = 4

    def feature(self, cfg: DemoSettings) -> dict[str, Any]:
        lare = {"image_size": cfg.eval_size, "timestep": self.timestep, "ensemble": self.ensemble}
        return {"lare": lare}

    def training_log(self) -> str:
        return (
            f"[4/6] train 'lare2' ({self.backbone}, LaRE t={self.timestep} x{self.ensemble}"
            f" from the generator) on real crops vs. images generated from training captions"
        )
