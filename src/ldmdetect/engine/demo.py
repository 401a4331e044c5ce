"""The main job: the papers' claim in miniature, on bundled photos, with no download.

A detector is trained only on real photos vs. their reconstructions through an LDM's
autoencoder, then tested on (a) reconstructions of held-out photos and (b) images *generated*
by that LDM from prompts and seeds it never saw. Held-out photos never reach training: the
split is by subject. The generator is the shipped mini LDM by default; any SD-format pipeline
(a local directory or a hub id, e.g. real Stable Diffusion weights) runs the same chain.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ldmdetect.detector import Detector
from ldmdetect.engine.calibrate import calibrate_detector
from ldmdetect.engine.demo_config import DemoConfig
from ldmdetect.engine.demo_photos import PHOTO_COLUMNS, photo_rows, photo_sets, photo_subject
from ldmdetect.engine.demo_recipes import demo_recipes, demo_train_config, train_with_recipe
from ldmdetect.engine.evaluate import Evaluation, evaluate
from ldmdetect.engine.reconstruct import ReconstructConfig, build_aligned_dataset
from ldmdetect.engine.scan import scan, write_rows
from ldmdetect.features.cache import FeatureCache
from ldmdetect.generative.sampling import load_pipeline, write_generated
from ldmdetect.generative.tiny import write_tiny_pipeline
from ldmdetect.io.datasets import find_images
from ldmdetect.io.samples import write_sample_photos
from ldmdetect.methods.demo_recipe import (
    TRAIN_SEED_OFFSET,
    DemoRecipe,
    DemoRun,
    training_prompts,
    write_crops,
)

__all__ = [  # the recipes live in the method packages, the photo sets beside; named here too
    "PHOTO_COLUMNS",
    "SEED_OFFSET",
    "SUMMARY_COLUMNS",
    "TRAIN_SEED_OFFSET",
    "UNSEEN_PROMPTS",
    "DemoConfig",
    "DemoRecipe",
    "DemoResult",
    "DemoRun",
    "demo_recipes",
    "demo_train_config",
    "resolve_generator",
    "run_demo",
    "split_photos",
    "summary_table",
    "training_prompts",
    "write_crops",
]

# Prompts the mini LDM never saw in training (its captions name the bundled photos' subjects).
UNSEEN_PROMPTS = (
    "a photo of a dog",
    "a photo of a red car",
    "a photo of a bird on a branch",
    "a photo of a mountain lake",
    "a photo of a bowl of fruit",
    "a photo of a city street",
)
SEED_OFFSET = 10_000  # generation seeds far from any seed used in training


@dataclass
class DemoResult:
    evaluations: dict[str, Evaluation]  # per method
    table: dict[str, dict[str, float]]
    detector_dirs: dict[str, Path]
    scan_path: Path
    seconds: dict[str, float] = field(default_factory=dict)  # wall seconds per stage
    # CPU seconds (user + system, every thread) per stage: what the stage costs, whatever
    # else holds the cores.
    cpu_seconds: dict[str, float] = field(default_factory=dict)
    # Per method and image set: the share its stored thresholds flag (PHOTO_COLUMNS).
    photo_table: dict[str, dict[str, float]] = field(default_factory=dict)
    flagged: dict[str, dict[str, dict]] = field(default_factory=dict)  # method: set: Flagged


def resolve_generator(name: str, output: Path, seed: int) -> tuple[str, tuple[str, ...]]:
    """(pipeline source, subjects it held out of its own training) for a --generator value."""
    if name == "mini":
        from ldmdetect.generative.mini import mini_ldm_dir, mini_ldm_heldout_subjects

        return str(mini_ldm_dir()), mini_ldm_heldout_subjects()
    if name == "mini-flow":
        from ldmdetect.generative.mini import mini_flow_dir, mini_flow_heldout_subjects

        return str(mini_flow_dir()), mini_flow_heldout_subjects()
    if name == "tiny":
        return str(write_tiny_pipeline(output / "tiny-sd", seed=seed)), ()
    return name, ()


def split_photos(
    photos: list[Path], heldout: tuple[str, ...] | None, count: int, seed: int
) -> dict[str, list[Path]]:
    """Split by subject (``motorcycle_left``/``_right`` are one scene), never by file."""
    subjects = sorted({photo_subject(p) for p in photos})
    if heldout:
        heldout = tuple(photo_subject(Path(name)) for name in heldout)  # "grace_hopper" -> "grace"
    else:
        rng = np.random.default_rng(seed)
        heldout = tuple(rng.permutation(subjects)[:count].tolist())
    unknown = set(heldout) - set(subjects)
    if unknown:
        raise ValueError(f"held-out subjects not among the photos: {', '.join(sorted(unknown))}")
    split: dict[str, list[Path]] = {"train": [], "heldout": []}
    for photo in photos:
        split["heldout" if photo_subject(photo) in heldout else "train"].append(photo)
    return split


def run_demo(
    output: str | os.PathLike,
    config: DemoConfig | None = None,
    *,
    progress: bool = False,
    log: Callable[[str], None] = print,
) -> DemoResult:
    cfg = config or DemoConfig()
    previous_threads = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        return _run(Path(output), cfg, progress, log)
    finally:
        torch.set_num_threads(previous_threads)


def _run(out: Path, cfg: DemoConfig, progress: bool, log: Callable[[str], None]) -> DemoResult:
    seconds: dict[str, float] = {}
    cpu_seconds: dict[str, float] = {}
    clock = [time.perf_counter(), time.process_time()]

    def step(name: str) -> None:
        now = [time.perf_counter(), time.process_time()]
        seconds[name] = round(now[0] - clock[0], 2)
        cpu_seconds[name] = round(now[1] - clock[1], 2)
        clock[:] = now

    pipeline, generator_heldout = resolve_generator(cfg.generator, out, cfg.seed)
    log(f"[1/6] generator: {pipeline}; bundled photos split by subject")
    photos = write_sample_photos(out / "photos" / "all")
    splits = split_photos(
        photos, cfg.heldout_subjects or generator_heldout, cfg.heldout_count, cfg.seed
    )
    for split, files in splits.items():
        folder = out / "photos" / split
        folder.mkdir(parents=True, exist_ok=True)
        for f in files:
            shutil.copyfile(f, folder / f.name)
    log("      held out: " + ", ".join(sorted(p.stem for p in splits["heldout"])))
    step("setup")

    def reconstruct(split: str, size: int, crops: int, seed: int) -> Path:
        target = out / "data" / split
        training = split != "heldout"  # held-out reconstructions stay the former test set
        build_aligned_dataset(
            [out / "photos" / split],
            target,
            autoencoder=pipeline,
            subfolder="vae",
            config=ReconstructConfig(
                crop_size=size,
                crops_per_image=crops,
                seed=seed,
                scales=cfg.pair_scales if training else (1.0,),
                align_jpeg=cfg.align_jpeg and training,
            ),
            device=cfg.device,
            num_workers=cfg.num_workers,
            progress=progress,
        )
        return target

    photos = photo_sets(out, cfg, splits) if cfg.photo_crops else None
    log(f"[2/6] reconstruct {len(splits['train'])} training photos through the autoencoder")
    train_data = [reconstruct("train", cfg.input_size, cfg.train_crops_per_image, cfg.seed)]
    if photos is not None:
        log(
            f"      and {photos.train_count} native-resolution crops of other sources' photos "
            f"(scales {', '.join(f'{s:g}' for s in cfg.pair_scales)}"
            f"{', JPEG-aligned' if cfg.align_jpeg else ''})"
        )
        train_data.append(reconstruct("train-crops", cfg.input_size, 1, cfg.seed + 2))
    log(f"      and {len(splits['heldout'])} held-out photos (never seen by the detector)")
    heldout = reconstruct("heldout", cfg.eval_size, cfg.eval_crops_per_image, cfg.seed + 1)
    step("reconstruct")

    log(f"[3/6] generate {cfg.generated_images} images from unseen prompts and seeds")
    generated = out / "data" / "generated"
    pipe = load_pipeline(pipeline, device=cfg.device)
    prompts = [UNSEEN_PROMPTS[i % len(UNSEEN_PROMPTS)] for i in range(cfg.generated_images)]
    seeds = [SEED_OFFSET + cfg.seed * 1000 + i for i in range(cfg.generated_images)]
    sample = {"size": cfg.eval_size, "steps": cfg.generation_steps}
    write_generated(pipe, prompts, seeds, generated, guidance_scale=cfg.guidance_scale, **sample)
    generated_sets = {"generated": generated}
    other = cfg.other_family()
    if other:
        other_pipeline, _ = resolve_generator(other, out, cfg.seed)
        other_name = f"generated by {Path(other).name} (other family)"
        log(f"      and the same with {other}, another family's generator no detector trains on")
        generated_sets[other_name] = out / "data" / "generated-other"
        other_pipe = load_pipeline(other_pipeline, device=cfg.device)
        write_generated(
            other_pipe,
            prompts,
            seeds,
            generated_sets[other_name],
            guidance_scale=cfg.guidance_scale,
            **sample,
        )
        del other_pipe
    step("generate")

    detector_dirs: dict[str, Path] = {}
    evaluations: dict[str, Evaluation] = {}
    fakes = {"reconstructed (held-out)": [heldout / "reconstructed"]}
    fakes |= {name: [folder] for name, folder in generated_sets.items()}
    run = DemoRun(out, cfg, pipeline, splits, train_data, progress, log)
    known = demo_recipes() | dict(cfg.method_settings)
    unknown = [name for name in cfg.methods if name not in known]
    if unknown:
        raise ValueError(f"the demo has no recipe for {unknown} ({', '.join(known)})")
    synris_rows: dict[str, dict[str, float]] = {}
    labels: dict[str, str] = {}
    photo_table: dict[str, dict[str, float]] = {}
    flagged: dict[str, dict[str, dict]] = {}
    for name in cfg.methods:
        recipe = cfg.recipe(name)
        labels[name] = recipe.label(name)
        detector_dirs[name] = out / "detectors" / name
        train_with_recipe(cfg, run, name, detector_dirs[name])
        step(f"train_{name}")
        if photos is not None:
            reals = photos.calibration(recipe.costly)
            log(
                f"      calibrate '{name}' on {len(reals.files)} crops of "
                f"{len(set(reals.sources))} other sources' photos"
                + (f", {recipe.calibration_tries}-try" if recipe.calibration_tries > 1 else "")
            )
            calibrate_detector(
                detector_dirs[name],
                [reals.root],
                detector_dirs[name],
                tries=recipe.calibration_tries,
                device=cfg.device,
                num_workers=cfg.num_workers,
            )
            step(f"calibrate_{name}")
        if not cfg.evaluate:
            continue
        log(
            f"[5/6] evaluate '{name}': held-out reals vs. held-out reconstructions and "
            "generated images, 1-try and 10-try"
        )
        detector = Detector.from_pretrained(detector_dirs[name], device=cfg.device)
        if detector.features is not None:
            # Clean and 10-try conditions share pixels, so their features are computed once.
            detector.feature_cache = FeatureCache(
                out / "features" / f"{name}-eval", settings=detector.features.settings()
            )
        evaluations[name] = evaluate(
            detector,
            [heldout / "real"],
            fakes,
            perturbations=cfg.perturbations if recipe.robustness else (),
            format_control=cfg.format_control if recipe.robustness else None,
            tries=(1, 10),
            output=out / "reports" / name,
            num_workers=cfg.num_workers,
            progress=progress,
            settings={"detector": str(detector_dirs[name]), "generator": pipeline},
        )
        step(f"evaluate_{name}")
        if photos is not None:
            rows, flagged[name] = photo_rows(
                labels[name],
                detector,
                photos.test(recipe.costly),
                {name: find_images([folder]) for name, folder in generated_sets.items()},
                cfg,
                recompressed=recipe.robustness,
            )
            photo_table |= rows
            step(f"photos_{name}")
        if cfg.synris:
            synris_rows |= _synris_rows(run, name, labels[name], detector, generated, heldout)
        if detector.feature_cache is not None:
            detector.feature_cache.flush()
        step(f"synris_{name}")

    log("[6/6] scan a folder with a deliberately corrupt file in it")
    scan_dir = out / "scan-input"
    scan_dir.mkdir(exist_ok=True)
    samples = sorted((heldout / "real").glob("*.png"))[:3] + sorted(generated.glob("*.png"))[:3]
    for f in samples:
        shutil.copyfile(f, scan_dir / f"{f.parent.name}-{f.name}")
    (scan_dir / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    first = Detector.from_pretrained(next(iter(detector_dirs.values())), device=cfg.device)
    # At the 1% threshold where the calibration resolved it (the photo crops do), else the
    # raw 0.5 rule: a few validation reals resolve no threshold.
    fpr = 0.01 if "fpr_0.01" in first.config.resolved_fprs() else None
    scan_path = write_rows(scan(first, sorted(scan_dir.iterdir()), fpr=fpr), out / "scan.csv")
    step("scan")
    del pipe
    table = summary_table(evaluations, labels) | synris_rows
    return DemoResult(
        evaluations, table, detector_dirs, scan_path, seconds, cpu_seconds, photo_table, flagged
    )


def _synris_rows(
    run: DemoRun, name: str, label: str, detector: Detector, generated: Path, heldout: Path
) -> dict[str, dict[str, float]]:
    """SynRIS on the demo: each generated image paired with the held-out real crop a reverse
    image search finds closest to it, scored 1-try next to all held-out reals.

    The pool is the held-out photos' crops, never the training photos: a detector has seen
    crops of those as reals, which would flatter the matched row.
    """
    from ldmdetect.engine.synris import synris_row

    reals = heldout / "real"
    row = synris_row(
        detector,
        [generated],
        [reals],
        [reals],
        run.out / "synris" / name,
        num_workers=run.cfg.num_workers,
    )
    scored = len(row.synris.pairs) + len(list(reals.glob("*.png")))
    rows = row.table_rows(f"{label} / generated / 1-try")
    for values in rows.values():
        values["seconds_per_image"] = round(row.seconds["evaluate"] / scored, 4)
    return rows


SUMMARY_COLUMNS = ("auc", "ap", "tpr@fpr=0.01", "seconds_per_image")


def summary_table(
    evaluations: dict[str, Evaluation], labels: dict[str, str] | None = None
) -> dict[str, dict[str, float]]:
    """One row per (method, test set, condition): AUC, AP, TPR at 1% FPR, seconds per image."""
    rows: dict[str, dict[str, float]] = {}
    for name, evaluation in evaluations.items():
        method = (labels or {}).get(name, name)
        for condition in evaluation.conditions():
            for test_set, metrics in condition.generators.items():
                row = {k: metrics[k] for k in SUMMARY_COLUMNS[:3]}
                row["seconds_per_image"] = condition.seconds_per_image
                rows[f"{method} / {test_set} / {condition.name}"] = row
    return rows
