"""Scan throughput vs. classifier-only throughput, 1-try and 10-try, and vs. decoding alone
on phone-size photos; prints JSON.

The classifier-only rate runs the model on crops already in memory; the scan rate includes
decoding, cropping and batching from files. Their ratio is the data-loading overhead
(target: scan >= 80% of the classifier-only rate).

The 12 Mpx row asks the converse question for a light detector (the demo's ``ae``:
EfficientNet-Lite0 on 64 px crops), where the model is cheap and decoding a 4000x3000 JPEG
is most of the work: ``Detector.decision_function`` (the "predict" columns) and
``score_files`` (one process) against Pillow decoding the same files,
``Image.open(path).convert("RGB")`` per file (target: >= 80% of that rate; ``load_only`` is
the decode without the copy that ``convert`` makes). Weights are random, as above. A quarter
of the photos carry an EXIF orientation that needs a rotation, as portrait phone photos do;
the rest are tagged upright.

    python benchmarks/scan.py --threads 1    # more images than one batch, as in any real scan
    python benchmarks/scan.py --rows 12mpx   # the phone-photo row only
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ldmdetect.config import DetectorConfig
from ldmdetect.detector import Detector
from ldmdetect.engine.scan import score_files
from ldmdetect.generative.loading import resolve_device
from ldmdetect.io.images import load_image
from ldmdetect.io.samples import sample_photos
from ldmdetect.methods import get
from ldmdetect.models.classifier import backbone_normalization


def write_images(folder: Path, count: int, side: int) -> list[Path]:
    """``count`` JPEGs of ``side`` px cut from the bundled photos (uploads are mostly JPEG)."""
    photos = [load_image(path) for _, path in sample_photos()]
    paths = []
    for i in range(count):
        photo = photos[i % len(photos)]
        scale = side / min(photo.size)
        image = photo.resize(
            (max(side, round(photo.width * scale)), max(side, round(photo.height * scale)))
        )
        offset = (i // len(photos)) * 7 % max(1, image.width - side)
        image = image.crop((offset, 0, offset + side, side))
        path = folder / f"img{i:04d}.jpg"
        image.save(path, quality=90)
        paths.append(path)
    return paths


# Orientations of the rotated photos, cycled: 6 and 8 are portrait shots, 3 is upside down.
_ROTATED = (6, 8, 3)


def write_photos(folder: Path, count: int, width: int, height: int) -> list[Path]:
    """``count`` phone-size JPEGs: bundled photos upscaled to ``width`` x ``height``, with
    sensor-like noise (so each file is a few MB, as a camera writes), quality 90, every
    fourth tagged with an orientation that needs a rotation and the rest tagged upright."""
    photos = [load_image(path) for _, path in sample_photos()]
    rng = np.random.default_rng(0)
    noise = rng.integers(-12, 13, size=(height, width, 3), dtype=np.int16)
    paths = []
    for i in range(count):
        base = np.asarray(photos[i % len(photos)].resize((width, height), Image.BICUBIC))
        pixels = np.clip(base + np.roll(noise, 97 * i, axis=1), 0, 255).astype(np.uint8)
        exif = Image.Exif()
        exif[0x0112] = _ROTATED[(i // 4) % len(_ROTATED)] if i % 4 == 3 else 1
        path = folder / f"photo{i:04d}.jpg"
        Image.fromarray(pixels).save(path, quality=90, exif=exif.tobytes())
        paths.append(path)
    return paths


def decode_only(paths: list[Path]) -> None:
    """What Pillow alone does per file: decode to RGB, no orientation, nothing else."""
    for path in paths:
        Image.open(path).convert("RGB")


def load_only(paths: list[Path]) -> None:
    """Decoding and nothing else: ``convert("RGB")`` above also copies an RGB image."""
    for path in paths:
        with Image.open(path) as image:
            image.load()


def crop_rows(args: argparse.Namespace) -> dict:
    """Scan from files against the classifier on crops already in memory, 1-try and 10-try."""
    mean, std = backbone_normalization(args.backbone)
    config = DetectorConfig(backbone=args.backbone, input_size=args.input_size, mean=mean, std=std)
    model = get(config.method).build_model(config)  # random weights: speed does not depend on them
    detector = Detector(config, model, device=args.device)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_images(Path(tmp), args.images, args.image_side)
        for tries in (1, 10):
            prepared = [detector.prepare(load_image(p), tries) for p in paths]

            def classifier_only(prepared=prepared):
                detector.score_prepared(prepared, args.batch_size)

            def scan_files(tries=tries):
                score_files(
                    detector,
                    paths,
                    tries=tries,
                    batch_size=args.batch_size,
                    num_workers=args.workers,
                )

            t_model = timed(classifier_only, args.repeats)
            t_scan = timed(scan_files, args.repeats)
            results[f"{tries}-try"] = {
                "classifier_only_images_per_s": round(args.images / t_model, 2),
                "scan_images_per_s": round(args.images / t_scan, 2),
                "scan_over_classifier": round(t_model / t_scan, 3),
            }
    return results


def photo_row(args: argparse.Namespace) -> dict:
    """Detector.decision_function (the "predict" keys) and score_files (one process) against
    decoding alone, 12 Mpx JPEGs."""
    mean, std = backbone_normalization(args.photo_backbone)
    config = DetectorConfig(
        backbone=args.photo_backbone, input_size=args.photo_input_size, mean=mean, std=std
    )
    detector = Detector(config, get(config.method).build_model(config), device=args.device)
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_photos(Path(tmp), args.photo_images, args.photo_width, args.photo_height)
        megabytes = sum(p.stat().st_size for p in paths) / len(paths) / 1e6
        t_decode, t_load, t_predict, t_score = timed_together(
            [
                lambda: decode_only(paths),
                lambda: load_only(paths),
                lambda: detector.decision_function(paths, batch_size=args.batch_size),
                lambda: score_files(detector, paths, batch_size=args.batch_size, num_workers=0),
            ],
            args.repeats,
        )
    n = args.photo_images
    return {
        "backbone": args.photo_backbone,
        "input_size": args.photo_input_size,
        "images": n,
        "image_size": [args.photo_width, args.photo_height],
        "mean_file_mb": round(megabytes, 2),
        "rotated_fraction": round(sum(1 for i in range(n) if i % 4 == 3) / n, 3),
        "decode_only_images_per_s": round(n / t_decode, 2),
        "load_only_images_per_s": round(n / t_load, 2),
        "predict_images_per_s": round(n / t_predict, 2),
        "score_files_images_per_s": round(n / t_score, 2),
        "predict_over_decode": round(t_decode / t_predict, 3),
        "score_files_over_decode": round(t_decode / t_score, 3),
        "predict_over_load": round(t_load / t_predict, 3),
        "target": "predict_over_decode >= 0.8",
    }


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best


def timed_together(fns: list, repeats: int) -> list[float]:
    """Best time of each of ``fns``, run in turn in every round: a ratio of two of them is
    then measured under the same load, which on a shared machine drifts between rounds."""
    for fn in fns:
        fn()  # warm-up
    best = [float("inf")] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            fn()
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            best[i] = min(best[i], time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="tf_efficientnetv2_b0")
    parser.add_argument("--input-size", type=int, default=256)
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--image-side", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=1, help="best of this many timed runs")
    parser.add_argument("--rows", nargs="+", choices=("crops", "12mpx"), default=["crops", "12mpx"])
    parser.add_argument("--photo-images", type=int, default=20)
    parser.add_argument("--photo-width", type=int, default=4000)
    parser.add_argument("--photo-height", type=int, default=3000)
    parser.add_argument("--photo-backbone", default="tf_efficientnet_lite0")
    parser.add_argument("--photo-input-size", type=int, default=64)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    setup, results = {}, {}
    if "crops" in args.rows:
        results.update(crop_rows(args))
        setup = {
            "backbone": args.backbone,
            "input_size": args.input_size,
            "images": args.images,
            "image_side": args.image_side,
            "workers": args.workers,
        }
    if "12mpx" in args.rows:
        results["12mpx"] = photo_row(args)
    print(
        json.dumps(
            {
                "benchmark": "scan",
                **setup,
                "batch_size": args.batch_size,
                "device": str(resolve_device(args.device)),
                "torch_threads": torch.get_num_threads(),
                "cpu_count": os.cpu_count(),
                # Other processes on the same cores slow both sides of every ratio, unevenly.
                "load_average_1_5_15min": [round(x, 2) for x in os.getloadavg()],
                "machine": platform.machine(),
                "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
                "repeats": args.repeats,
                "results": results,
                "target": "scan_over_classifier >= 0.8; 12mpx predict_over_decode >= 0.8",
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
