"""How ``ldmdetect demo`` fits ``vfm-probe`` (not in the default set): a probe on a frozen
ImageNet network whose weights ship offline, on the same real-vs-generated images as lare2."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ldmdetect.io.labeled import read_labeled
from ldmdetect.methods.demo_recipe import (
    DemoRecipe,
    DemoRun,
    DemoSettings,
    DemoTraining,
    real_vs_generated,
)


@dataclass(frozen=True)
class VFMProbeDemo(DemoRecipe):
    """vfm-probe's demo settings."""

    backbone: str = "timm:tf_efficientnet_lite0"
    input_size: int = 128

    def train_fields(self, cfg: DemoSettings) -> dict[str, Any]:
        return {"backbone": self.backbone, "input_size": self.input_size}

    def training(self, run: DemoRun) -> DemoTraining:
        run.log(
            f"[4/6] fit 'vfm-probe' (logistic regression on frozen {self.backbone}) on real "
            "crops vs. images generated from training captions"
        )
        data = real_vs_generated(run)
        return DemoTraining(
            self.train_fields(run.cfg),
            examples=read_labeled([data / "real"], [data / "generated"]),
            feature_cache=run.out / "features" / "vfm-probe-train",
        )
