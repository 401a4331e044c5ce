"""How the demo trains each method: one recipe per method, on the demo's photos and the
generator's images. A method joins the demo by adding its recipe to ``RECIPES``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ldmdetect.engine.train import TrainConfig, train_detector
from ldmdetect.generative.sampling import load_pipeline, write_generated
from ldmdetect.io.augment import AugmentConfig
from ldmdetect.io.crops import crop, crop_boxes, ensure_min_size
from ldmdetect.io.images import load_image, save_png
from ldmdetect.io.labeled import read_labeled

if TYPE_CHECKING:
    from ldmdetect.engine.demo_config import DemoConfig


@dataclass
class DemoRun:
    """What every method's recipe may use: the run's folders, config, generator and photos."""

    out: Path
    cfg: DemoConfig
    pipeline: str
    splits: dict[str, list[Path]]
    train_pairs: list[Path]
    progress: bool
    log: Callable[[str], None]


def _train_config(cfg: DemoConfig, **fields: Any) -> TrainConfig:
    """A recipe's TrainConfig: the demo's batch size, seed, workers and device, and a 20%
    validation split (which also calibrates the thresholds) unless the recipe says otherwise."""
    fields.setdefault("val_fraction", 0.2)
    return TrainConfig(
        batch_size=cfg.batch_size,
        seed=cfg.seed,
        num_workers=cfg.num_workers,
        device=cfg.device,
        # The demo's Lite0 towers train 1.7x faster in channels-last on a CPU (TrainConfig).
        channels_last=True,
        **fields,
    )


def ae_train_config(cfg: DemoConfig) -> TrainConfig:
    """How the demo trains ``ae`` (also the benchmark's base for its curve and ablations)."""
    return _train_config(
        cfg,
        method="ae",
        backbone=cfg.backbone,
        pretrained=cfg.pretrained,
        lr=cfg.lr,
        epochs=cfg.epochs,
        augment=AugmentConfig.from_spec(cfg.augment),
    )


def _train_ae(run: DemoRun, output: Path) -> None:
    cfg = run.cfg
    run.log(f"[4/6] train 'ae' ({cfg.backbone}, {cfg.input_size}px) on reconstructions only")
    train_detector(run.train_pairs, output, ae_train_config(cfg), progress=run.progress)


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


def _real_vs_generated(run: DemoRun) -> Path:
    """Real crops of the training photos and images the generator made from their captions
    (``real/``, ``generated/``), written once and shared by the recipes that train on them."""
    cfg = run.cfg
    data = run.out / "data" / "lare2-train"
    write_crops(
        run.splits["train"], data / "real", cfg.eval_size, cfg.lare_train_crops_per_image, cfg.seed
    )
    prompts = training_prompts(run.pipeline, run.splits["train"])
    count = cfg.lare_train_generated
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


def lare2_train_config(cfg: DemoConfig) -> TrainConfig:
    """How the demo trains ``lare2`` (also the base of benchmarks/lare2_ablation.py)."""
    return _train_config(
        cfg,
        method="lare2",
        backbone=cfg.lare_backbone,
        pretrained=cfg.lare_pretrained,
        input_size=cfg.lare_input_size,
        epochs=cfg.lare_epochs,
        feature={
            "lare": {
                "image_size": cfg.eval_size,
                "timestep": cfg.lare_timestep,
                "ensemble": cfg.lare_ensemble,
            }
        },
    )


def _train_lare2(run: DemoRun, output: Path) -> None:
    cfg = run.cfg
    run.log(
        f"[4/6] train 'lare2' ({cfg.lare_backbone}, LaRE t={cfg.lare_timestep} x{cfg.lare_ensemble}"
        f" from the generator) on real crops vs. images generated from training captions"
    )
    data = _real_vs_generated(run)
    train_detector(
        [],
        output,
        lare2_train_config(cfg),
        examples=read_labeled([data / "real"], [data / "generated"]),
        pipeline=run.pipeline,
        feature_cache=run.out / "features" / "lare2-train",
        progress=run.progress,
    )


def _train_aeroblade(run: DemoRun, output: Path) -> None:
    """Training-free: thresholds calibrated on real crops of the training photos, with the
    generator's own autoencoder, whole eval-size images as the view."""
    from ldmdetect.generative.components import pipeline_sources, vae_scale_factor

    cfg = run.cfg
    run.log("[4/6] calibrate 'aeroblade' (LPIPS layer 2 to the generator's autoencoder) on reals")
    real = write_crops(
        run.splits["train"],
        run.out / "data" / "lare2-train" / "real",
        cfg.eval_size,
        cfg.lare_train_crops_per_image,
        cfg.seed,
    )
    grid = vae_scale_factor(pipeline_sources(run.pipeline, ["vae"])["vae"])
    train_detector(
        [],
        output,
        _train_config(
            cfg,
            method="aeroblade",
            input_size=cfg.eval_size,
            feature={"aeroblade": {"autoencoders": [run.pipeline], "grid": grid}},
            val_fraction=TrainConfig.val_fraction,
        ),
        examples=read_labeled([real], []),
        progress=run.progress,
    )


def _train_vfm_probe(run: DemoRun, output: Path) -> None:
    cfg = run.cfg
    run.log(
        f"[4/6] fit 'vfm-probe' (logistic regression on frozen {cfg.vfm_backbone}) on real "
        "crops vs. images generated from training captions"
    )
    data = _real_vs_generated(run)
    train_detector(
        [],
        output,
        _train_config(
            cfg,
            method="vfm-probe",
            backbone=cfg.vfm_backbone,
            input_size=cfg.vfm_input_size,
        ),
        examples=read_labeled([data / "real"], [data / "generated"]),
        feature_cache=run.out / "features" / "vfm-probe-train",
        progress=run.progress,
    )


def _train_fakeinversion(run: DemoRun, output: Path) -> None:
    cfg = run.cfg
    run.log(
        f"[4/6] train 'fakeinversion' ({cfg.fakeinversion_backbone}, {cfg.fakeinversion_steps} "
        f"DDIM steps each way with the generator, captioner {cfg.fakeinversion_captioner!r}) on "
        "real crops vs. images generated from training captions"
    )
    data = _real_vs_generated(run)
    train_detector(
        [],
        output,
        _train_config(
            cfg,
            method="fakeinversion",
            backbone=cfg.fakeinversion_backbone,
            pretrained=cfg.fakeinversion_pretrained,
            input_size=cfg.fakeinversion_input_size,
            epochs=cfg.fakeinversion_epochs,
            feature={
                # The whole eval_size image is inverted; views are input_size crops of it
                # and of its maps at one offset.
                "inversion": {"image_size": cfg.eval_size, "steps": cfg.fakeinversion_steps},
                "captioner": cfg.fakeinversion_captioner,
                "map_size": cfg.eval_size,
            },
        ),
        examples=read_labeled([data / "real"], [data / "generated"]),
        pipeline=run.pipeline,
        feature_cache=run.out / "features" / "fakeinversion-train",
        progress=run.progress,
    )


def _train_dire(run: DemoRun, output: Path) -> None:
    cfg = run.cfg
    run.log(
        f"[4/6] train 'dire' ({cfg.dire_backbone}, |x - x'| after {cfg.dire_steps} DDIM steps "
        "each way through the generator) on real crops vs. images generated from training "
        "captions"
    )
    data = _real_vs_generated(run)
    train_detector(
        [],
        output,
        _train_config(
            cfg,
            method="dire",
            backbone=cfg.dire_backbone,
            pretrained=cfg.dire_pretrained,
            input_size=cfg.dire_input_size,
            epochs=cfg.dire_epochs,
            # The whole eval_size image is reconstructed; views are input_size crops of its map.
            feature={"dire": {"image_size": cfg.eval_size, "steps": cfg.dire_steps}},
        ),
        examples=read_labeled([data / "real"], [data / "generated"]),
        pipeline=run.pipeline,
        feature_cache=run.out / "features" / "dire-train",
        progress=run.progress,
    )


@dataclass(frozen=True)
class Recipe:
    """How the demo trains one method and which of the demo's conditions it is scored under."""

    train: Callable[[DemoRun, Path], None]
    # JPEG and format-control rows feed new pixels, so a generator-backed method recomputes
    # its features for them; off where that would break the demo's time budget.
    robustness: bool = True
    # Features that invert every image: calibrated and tested on a subset of the photo crops
    # (DemoConfig.costly_photo_limit).
    costly: bool = False
    label: Callable[[DemoConfig], str] | None = None  # the table's name, with key settings


# How the demo trains each method; a method joins the demo by adding its recipe here.
RECIPES: dict[str, Recipe] = {
    "ae": Recipe(_train_ae),
    "lare2": Recipe(_train_lare2),
    "fakeinversion": Recipe(
        _train_fakeinversion,
        robustness=False,
        costly=True,
        label=lambda cfg: (
            f"fakeinversion ({cfg.fakeinversion_steps}+{cfg.fakeinversion_steps} DDIM steps)"
        ),
    ),
    "aeroblade": Recipe(_train_aeroblade),
    "vfm-probe": Recipe(_train_vfm_probe),
    # Opt-in, so its JPEG rows (new pixels, new reconstructions) stay: JPEG is DIRE's known
    # weak point.
    "dire": Recipe(
        _train_dire,
        costly=True,
        label=lambda cfg: f"dire ({cfg.dire_steps}+{cfg.dire_steps} DDIM steps)",
    ),
}
TRAIN_SEED_OFFSET = 50_000  # training generations: far from the test seeds (SEED_OFFSET)
