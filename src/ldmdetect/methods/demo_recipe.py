"""What a method's demo recipe is, and the data helpers recipes share.

A method joins ``ldmdetect demo`` by shipping a recipe in its own package (``demo.py``,
returned by :meth:`Method.demo_recipe <ldmdetect.methods.registry.Method.demo_recipe>`): a
frozen dataclass of its demo settings (defaults written once, there) that says, for one run,
which data it trains on and with which ``TrainConfig`` fields (:class:`DemoTraining`).

Why the recipe *describes* its training instead of running it: training lives in
``ldmdetect.engine``, which sits above the method packages (io -> generative -> features ->
models -> methods -> engine -> cli/serve), so a method package cannot call it. The engine's
demo runs what the recipe describes, adding the settings every method shares (batch size,
seed, device, workers); the helpers that write a recipe's data (:func:`write_crops`,
:func:`real_vs_generated`) need only io and generative, so they live here, beside the recipes
that use them, and the demo's run reaches recipes as a :class:`DemoRun`, whose ``cfg`` is any
object with the shared settings of :class:`DemoSettings` (the engine's ``DemoConfig``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np

from ldmdetect.io.crops import crop, crop_boxes, ensure_min_size
from ldmdetect.io.images import load_image, save_png
from ldmdetect.io.labeled import Example, read_labeled

TRAIN_SEED_OFFSET = 50_000  # training generations: far from the test seeds (demo.SEED_OFFSET)
#: The validation share a recipe's training holds out unless it says otherwise (it also
#: calibrates the thresholds where the demo has no photo crops to calibrate on).
DEMO_VAL_FRACTION = 0.2
#: ``TrainConfig`` fields that a recipe's field of the same name sets, as it is
#: (:meth:`DemoRecipe.train_fields`): the training settings that differ between methods. The
#: demo sets the rest for every method (batch size, seed, workers, device), and a recipe
#: converts what it holds in another form (``feature``; ae's ``augment`` spec). Named here,
#: not read from ``TrainConfig``, because training lives in the engine above the method
#: packages; the recipe tests check the names against ``TrainConfig``.
PASSED_TRAIN_FIELDS = frozenset({"backbone", "pretrained", "input_size", "epochs", "lr"})


class DemoSettings(Protocol):
    """The demo's shared settings a recipe reads (``engine.demo_config.DemoConfig`` has them)."""

    seed: int
    device: str
    input_size: int  # the aligned pairs' crop side (``DemoRun.train_pairs``)
    eval_size: int  # every test image's side, and the real-vs-generated training images'
    generation_steps: int
    guidance_scale: float
    real_train_crops_per_image: int  # real-vs-generated training set: crops per photo
    generated_train_images: int  # ... and images the generator makes from training captions


@dataclass
class DemoRun:
    """What every method's recipe may use: the run's folders, settings, generator and photos."""

    out: Path
    cfg: DemoSettings
    pipeline: str  # the generator: a pipeline directory or hub id
    splits: dict[str, list[Path]]  # "train", "heldout": bundled photos, split by subject
    train_pairs: list[Path]  # aligned datasets of the training photos' reconstructions
    progress: bool
    log: Callable[[str], None]


@dataclass(frozen=True)
class DemoTraining:
    """How the demo trains a method on one run: what ``engine.train.train_detector`` gets.

    ``fields`` are ``TrainConfig`` fields beyond those the demo sets for every method (its
    method name, batch size, seed, workers, device); ``val_fraction`` None keeps
    ``TrainConfig``'s own default.
    """

    fields: dict[str, Any]
    pairs: Sequence[Path] = ()
    examples: Sequence[Example] = ()
    pipeline: str | None = None
    feature_cache: Path | None = None
    val_fraction: float | None = DEMO_VAL_FRACTION


@dataclass(frozen=True)
class DemoRecipe(ABC):
    """Base of every method's demo recipe: its demo settings (a subclass's fields, with the
    published demo's values as defaults) and how it trains on a run."""

    #: Views per image when the demo calibrates this method's thresholds on photo crops (the
    #: thresholds hold for that many views, which scans then default to).
    calibration_tries: int = 1

    #: JPEG and format-control rows, and the photo table's JPEG q85 row, feed new pixels, so a
    #: generator-backed method recomputes its features for them; False where that would break
    #: the demo's time budget (``ldmdetect evaluate`` and ``benchmarks/real_photo_fpr.py`` give
    #: those rows for any detector).
    robustness: ClassVar[bool] = True
    #: Features that run the generator on every image (a UNet pass per noise draw, an
    #: inversion): calibrated and tested on a subset of the photo crops
    #: (``DemoConfig.costly_photo_limit``), as those passes are most of the demo's time.
    costly: ClassVar[bool] = False

    def label(self, name: str) -> str:
        """The method's name in the demo's tables, with the settings that matter there."""
        return name

    def train_fields(self, cfg: DemoSettings) -> dict[str, Any]:
        """``TrainConfig`` fields of this recipe that need no run (benchmarks start there):
        its fields named in :data:`PASSED_TRAIN_FIELDS`, in their order; a recipe adds what
        it converts."""
        return {
            f.name: getattr(self, f.name) for f in fields(self) if f.name in PASSED_TRAIN_FIELDS
        }

    @abstractmethod
    def training(self, run: DemoRun) -> DemoTraining:
        """Write what this method trains on into ``run.out`` and say how to train on it."""


@dataclass(frozen=True)
class RealVsGeneratedRecipe(DemoRecipe):
    """Base of the recipes that train on :func:`real_vs_generated`'s labelled images: real
    crops vs. the generator's images from training captions. A method says what it logs and
    its ``train_fields``; the data, the labels and the feature cache are the same for all."""

    #: the feature cache's folder under ``features/`` (``<name>-train``)
    cache_name: ClassVar[str]
    #: the features run the demo's generator (the training gets its pipeline)
    uses_generator: ClassVar[bool] = True

    @abstractmethod
    def training_log(self) -> str:
        """The demo's log line for this method's training step."""

    def training(self, run: DemoRun) -> DemoTraining:
        run.log(self.training_log())
        data = real_vs_generated(run)
        return DemoTraining(
            self.train_fields(run.cfg),
            examples=read_labeled([data / "real"], [data / "generated"]),
            pipeline=run.pipeline if self.uses_generator else None,
            feature_cache=run.out / "features" / f"{self.cache_name}-train",
        )


@dataclass(frozen=True)
class FeatureClassifierRecipe(RealVsGeneratedRecipe):
    """Base of the recipes that train a backbone classifier on features the generator
    computes for every image (dire, fakeinversion, lare2). Those features are what costs (a
    UNet pass per noise draw, an inversion), so the demo reads them on a subset of the photo
    crops; the classifier's defaults are shared: EfficientNet-Lite0, whose ImageNet weights
    ship offline, on 112 px views for 6 epochs."""

    costly: ClassVar[bool] = True

    backbone: str = "tf_efficientnet_lite0"
    pretrained: bool = True
    input_size: int = 112
    epochs: int = 6

    @abstractmethod
    def feature(self, cfg: DemoSettings) -> dict[str, Any]:
        """The method's feature settings (``TrainConfig.feature``) in the demo."""

    def train_fields(self, cfg: DemoSettings) -> dict[str, Any]:
        return super().train_fields(cfg) | {"feature": self.feature(cfg)}


def training_prompts(pipeline: str, photos: list[Path]) -> list[str]:
    """Captions the generator was trained with, for the training photos' subjects."""
    from ldmdetect.generative.mini import CAPTIONS, mini_ldm_dir

    subjects = sorted({p.stem.split("_")[0] for p in photos})
    if Path(pipeline) == mini_ldm_dir():
        by_subject = {name.split("_")[0]: text for name, text in CAPTIONS.items()}
        return [by_subject[s] for s in subjects if s in by_subject]
    return [f"a photo of a {s}" for s in subjects]


def write_crops(photos: list[Path], output: Path, size: int, per_image: int, seed: int) -> Path:
    """``per_image`` random ``size`` crops of each photo, as PNG (real training images)."""
    output.mkdir(parents=True, exist_ok=True)
    for i, photo in enumerate(photos):
        image = ensure_min_size(load_image(photo), size)
        rng = np.random.default_rng([seed, i])
        boxes = crop_boxes(image.width, image.height, size, policy="random", n=per_image, rng=rng)
        for j, box in enumerate(boxes):
            target = output / f"{photo.stem}_{j:02d}.png"
            if not target.is_file():
                save_png(crop(image, box), target)
    return output


def real_train_crops(run: DemoRun) -> Path:
    """Real crops of the training photos (``eval_size`` squares): the real half of
    :func:`real_vs_generated`, alone for recipes that calibrate on reals only."""
    cfg = run.cfg
    return write_crops(
        run.splits["train"],
        real_vs_generated_dir(run.out) / "real",
        cfg.eval_size,
        cfg.real_train_crops_per_image,
        cfg.seed,
    )


def real_vs_generated_dir(out: Path) -> Path:
    """Where :func:`real_vs_generated` writes under a demo's output folder ``out``. A folder
    from before it was named for what it holds (``lare2-train``, when LaRE² was the only
    recipe reading it) is kept, so a rerun reuses the images already generated there."""
    legacy = out / "data" / "lare2-train"
    return legacy if legacy.is_dir() else out / "data" / "real-vs-generated"


def real_vs_generated(run: DemoRun) -> Path:
    """Real crops of the training photos and images the generator made from their captions
    (``real/``, ``generated/``), written once and shared by the recipes that train on them."""
    from ldmdetect.generative.sampling import load_pipeline, write_generated

    cfg = run.cfg
    data = real_vs_generated_dir(run.out)
    real_train_crops(run)
    prompts = training_prompts(run.pipeline, run.splits["train"])
    count = cfg.generated_train_images
    write_generated(
        load_pipeline(run.pipeline, device=cfg.device),
        [prompts[i % len(prompts)] for i in range(count)],
        [TRAIN_SEED_OFFSET + cfg.seed * 1000 + i for i in range(count)],
        data / "generated",
        size=cfg.eval_size,
        steps=cfg.generation_steps,
        guidance_scale=cfg.guidance_scale,
    )
    return data


__all__ = [
    "DEMO_VAL_FRACTION",
    "PASSED_TRAIN_FIELDS",
    "TRAIN_SEED_OFFSET",
    "DemoRecipe",
    "DemoRun",
    "DemoSettings",
    "DemoTraining",
    "FeatureClassifierRecipe",
    "RealVsGeneratedRecipe",
    "real_train_crops",
    "real_vs_generated",
    "real_vs_generated_dir",
    "training_prompts",
    "write_crops",
]
