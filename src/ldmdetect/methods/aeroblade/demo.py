"""How ``ldmdetect demo`` sets up ``aeroblade``: training-free, its thresholds calibrated on
real crops of the training photos, with the generator's own autoencoder and whole
``eval_size`` images as the view."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ldmdetect.io.labeled import read_labeled
from ldmdetect.methods.demo_recipe import (
    DemoRecipe,
    DemoRun,
    DemoSettings,
    DemoTraining,
    real_train_crops,
)


@dataclass(frozen=True)
class AerobladeDemo(DemoRecipe):
    """aeroblade's demo settings: none of its own (the generator's autoencoder, LPIPS layer 2)."""

    def train_fields(self, cfg: DemoSettings) -> dict[str, Any]:
        return {"input_size": cfg.eval_size}

    def training(self, run: DemoRun) -> DemoTraining:
        from ldmdetect.generative.components import pipeline_sources, vae_scale_factor

        run.log(
            "[4/6] calibrate 'aeroblade' (LPIPS layer 2 to the generator's autoencoder) on reals"
        )
        real = real_train_crops(run)
        grid = vae_scale_factor(pipeline_sources(run.pipeline, ["vae"])["vae"])
        feature = {"aeroblade": {"autoencoders": [run.pipeline], "grid": grid}}
        return DemoTraining(
            self.train_fields(run.cfg) | {"feature": feature},
            examples=read_labeled([real], []),
            val_fraction=None,  # TrainConfig's own: nothing trains on the rest
        )
