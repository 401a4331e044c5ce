"""The demo's side of the method packages' demo recipes: finding them through the registry
and running the training each describes (``ldmdetect.methods.demo_recipe``).

A method joins the demo by shipping a recipe in its own package; nothing here names one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ldmdetect.engine.demo_config import DemoConfig, demo_recipes
from ldmdetect.engine.train import TrainConfig, train_detector
from ldmdetect.methods.demo_recipe import DEMO_VAL_FRACTION, DemoRun

__all__ = ["demo_recipes", "demo_train_config", "train_with_recipe"]


def _train_config(cfg: DemoConfig, method: str, **fields: Any) -> TrainConfig:
    """A recipe's TrainConfig: the demo's batch size, seed, workers and device, and a 20%
    validation split (which also calibrates the thresholds) unless the recipe says otherwise."""
    fields.setdefault("val_fraction", DEMO_VAL_FRACTION)
    return TrainConfig(
        method=method,
        batch_size=cfg.batch_size,
        seed=cfg.seed,
        num_workers=cfg.num_workers,
        device=cfg.device,
        # The demo's Lite0 towers train 1.7x faster in channels-last on a CPU (TrainConfig).
        channels_last=True,
        **fields,
    )


def demo_train_config(cfg: DemoConfig, method: str) -> TrainConfig:
    """How the demo trains ``method`` with ``cfg``'s settings, as far as that needs no run:
    the base of the benchmarks that vary one recipe (curves, ablations)."""
    return _train_config(cfg, method, **cfg.recipe(method).train_fields(cfg))


def train_with_recipe(cfg: DemoConfig, run: DemoRun, name: str, output: Path) -> None:
    """Write the data method ``name``'s recipe trains on and train it into ``output``
    (``cfg`` is the run's: its shared settings and its recipe for ``name``)."""
    training = cfg.recipe(name).training(run)
    fields = dict(training.fields)
    fields["val_fraction"] = (
        TrainConfig.val_fraction if training.val_fraction is None else training.val_fraction
    )
    train_detector(
        list(training.pairs),
        output,
        _train_config(cfg, name, **fields),
        examples=training.examples,
        pipeline=training.pipeline,
        feature_cache=training.feature_cache,
        progress=run.progress,
    )
