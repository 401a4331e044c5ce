"""How ``ldmdetect demo`` trains ``lare2``: on real crops of the training photos vs. images
the generator made from its training captions, LaRE computed by the same generator. Both
classes are ``eval_size`` squares, so LaRE's whole-image resize is the identity for both."""

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
class LaRE2Demo(DemoRecipe):
    """lare2's demo settings (also the base of benchmarks/lare2_ablation.py)."""

    backbone: str = "timm:tf_efficientnet_lite0"  # ImageNet weights ship offline
    pretrained: bool = True
    input_size: int = 112
    timestep: int = 200
    ensemble: int = 4
    epochs: int = 6

    def train_fields(self, cfg: DemoSettings) -> dict[str, Any]:
        return {
            "backbone": self.backbone,
            "pretrained": self.pretrained,
            "input_size": self.input_size,
            "epochs": self.epochs,
            "feature": {
                "lare": {
                    "image_size": cfg.eval_size,
                    "timestep": self.timestep,
                    "ensemble": self.ensemble,
                }
            },
        }

    def training(self, run: DemoRun) -> DemoTraining:
        run.log(
            f"[4/6] train 'lare2' ({self.backbone}, LaRE t={self.timestep} x{self.ensemble}"
            f" from the generator) on real crops vs. images generated from training captions"
        )
        data = real_vs_generated(run)
        return DemoTraining(
            self.train_fields(run.cfg),
            examples=read_labeled([data / "real"], [data / "generated"]),
            pipeline=run.pipeline,
            feature_cache=run.out / "features" / "lare2-train",
        )
