"""The main job on the embedded default: the whole chain on bundled photos, no download.

zoo tiny -> reconstruct (train photos) -> train -> reconstruct (held-out photos) -> evaluate
-> scan. Held-out photos never reach training: the split is by source photo.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ldmdetect.detector import Detector
from ldmdetect.engine.evaluate import Evaluation, evaluate
from ldmdetect.engine.reconstruct import ReconstructConfig, build_aligned_dataset
from ldmdetect.engine.scan import scan, write_rows
from ldmdetect.engine.train import TrainConfig, train_detector
from ldmdetect.generative.tiny import write_tiny_pipeline
from ldmdetect.io.samples import write_sample_photos


@dataclass
class DemoConfig:
    backbone: str = "tf_efficientnetv2_b0"
    input_size: int = 64
    train_crops_per_image: int = 24
    eval_crop_size: int = 128  # larger than the input, so 10-try inference has room to move
    eval_crops_per_image: int = 8
    heldout_photos: int = 3  # subjects held out of training
    epochs: int = 4
    batch_size: int = 16
    seed: int = 0
    num_workers: int = 0
    # The demo's models are tiny: intra-op thread sync costs more than it saves. Measured on a
    # 2-vCPU VM: reconstruct 18.4 s -> 1.3 s, train 42 s -> 14 s with 1 thread instead of 2.
    threads: int | None = 1


@dataclass
class DemoResult:
    evaluation: Evaluation
    detector_dir: Path
    scan_path: Path
    seconds: dict[str, float]


def run_demo(
    output: str | os.PathLike,
    config: DemoConfig | None = None,
    *,
    progress: bool = False,
    log=print,
) -> DemoResult:
    cfg = config or DemoConfig()
    previous_threads = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        return _run(Path(output), cfg, progress, log)
    finally:
        torch.set_num_threads(previous_threads)


def _run(out: Path, cfg: DemoConfig, progress: bool, log) -> DemoResult:
    seconds: dict[str, float] = {}
    clock = time.perf_counter()

    def step(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        seconds[name] = round(now - clock, 2)
        clock = now

    log(f"[1/6] zoo tiny -> {out / 'tiny-sd'}")
    pipeline = write_tiny_pipeline(out / "tiny-sd", seed=cfg.seed)
    photos = write_sample_photos(out / "photos" / "all")
    # Split by subject, not by file: motorcycle_left/right are a stereo pair of one scene.
    subjects = sorted({p.stem.split("_")[0] for p in photos})
    rng = np.random.default_rng(cfg.seed)
    held = set(rng.permutation(subjects)[: cfg.heldout_photos].tolist())
    splits: dict[str, list[Path]] = {"train": [], "heldout": []}
    for photo in photos:
        splits["heldout" if photo.stem.split("_")[0] in held else "train"].append(photo)
    for split, files in splits.items():
        folder = out / "photos" / split
        folder.mkdir(parents=True, exist_ok=True)
        for f in files:
            shutil.copyfile(f, folder / f.name)
    step("zoo")

    log(f"[2/6] reconstruct {len(splits['train'])} training photos through the autoencoder")
    train_data = out / "data" / "train"
    build_aligned_dataset(
        [out / "photos" / "train"],
        train_data,
        autoencoder=pipeline,
        subfolder="vae",
        config=ReconstructConfig(
            crop_size=cfg.input_size, crops_per_image=cfg.train_crops_per_image, seed=cfg.seed
        ),
        device="cpu",
        num_workers=cfg.num_workers,
        progress=progress,
    )
    step("reconstruct")

    log(f"[3/6] train the 'ae' detector ({cfg.backbone}, {cfg.input_size}px)")
    detector_dir = out / "detector"
    train_detector(
        [train_data],
        detector_dir,
        TrainConfig(
            backbone=cfg.backbone,
            epochs=cfg.epochs,
            batch_size=cfg.batch_size,
            val_fraction=0.25,
            seed=cfg.seed,
            num_workers=cfg.num_workers,
            device="cpu",
        ),
        progress=progress,
    )
    step("train")

    log(f"[4/6] reconstruct {len(splits['heldout'])} held-out photos (never seen in training)")
    heldout = out / "data" / "heldout"
    build_aligned_dataset(
        [out / "photos" / "heldout"],
        heldout,
        autoencoder=pipeline,
        subfolder="vae",
        config=ReconstructConfig(
            crop_size=cfg.eval_crop_size,
            crops_per_image=cfg.eval_crops_per_image,
            seed=cfg.seed + 1,
        ),
        device="cpu",
        num_workers=cfg.num_workers,
        progress=progress,
    )
    step("reconstruct_heldout")

    log("[5/6] evaluate: held-out reals vs. their reconstructions, 1-try and 10-try")
    detector = Detector.from_pretrained(detector_dir, device="cpu")
    fake_dir = heldout / "tiny-sd-vae"
    if not fake_dir.exists():
        (heldout / "reconstructed").rename(fake_dir)
    evaluation = evaluate(
        detector,
        [heldout / "real"],
        [fake_dir],
        perturbations=["jpeg:75", "resize:0.5"],
        format_control=90,
        tries=(1, 10),
        output=out / "report",
        num_workers=cfg.num_workers,
        progress=progress,
        settings={"detector": str(detector_dir)},
    )
    step("evaluate")

    log("[6/6] scan the held-out folder (one deliberately corrupt file included)")
    scan_dir = out / "scan-input"
    scan_dir.mkdir(exist_ok=True)
    for f in sorted((heldout / "real").glob("*.png"))[:4] + sorted(fake_dir.glob("*.png"))[:4]:
        shutil.copyfile(f, scan_dir / f"{f.parent.name}-{f.name}")
    (scan_dir / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    rows = scan(detector, sorted(scan_dir.iterdir()), tries=1, fpr=0.05)
    scan_path = write_rows(rows, out / "scan.csv")
    step("scan")
    return DemoResult(evaluation, detector_dir, scan_path, seconds)
