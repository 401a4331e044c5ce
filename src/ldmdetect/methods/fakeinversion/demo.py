"""How ``ldmdetect demo`` trains ``fakeinversion``: on the same real-vs-generated images as
lare2, inverted whole by the same generator. No BLIP-2 offline, so one fixed caption for all.
It inverts every training and test image, so its steps are what keeps the demo in its time
budget and its robustness rows (new pixels, new inversions) are left to evaluate and the
benchmark."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from ldmdetect.methods.demo_recipe import DemoSettings, FeatureClassifierRecipe


@dataclass(frozen=True)
class FakeInversionDemo(FeatureClassifierRecipe):
    """fakeinversion's demo settings."""

    cache_name: ClassVar[str] = "fakeinversion"
    robustness: ClassVar[bool] = False

    steps: int = 4
    captioner: str = "fixed:a photo"
    residual: bool = False  # |x - D(z_0')| as three more channels (the ablation's variant)

    def label(self, name: str) -> str:
        return f"{name} ({self.steps}+{self.steps} DDIM steps)"

    def feature(self, cfg: DemoSettings) -> dict[str, Any]:
        # The whole eval_size image is inverted; views are input_size crops of it and of its
        # maps at one offset.
        feature = {
            "inversion": {"image_size": cfg.eval_size, "steps": self.steps},
            "captioner": self.captioner,
            "map_size": cfg.eval_size,
        }
        if self.residual:
            feature["residual"] = True
        return feature

    def training_log(self) -> str:
        return (
            f"[4/6] train 'fakeinversion' ({self.backbone}, {self.steps} DDIM steps each way "
            f"with the generator, captioner {self.captioner!r}) on real crops vs. images "
            "generated from training captions"
        )
