"""Scan throughput vs. classifier-only throughput, 1-try and 10-try; prints JSON.

The classifier-only rate runs the model on crops already in memory; the scan rate includes
decoding, cropping and batching from files. Their ratio is the data-loading overhead
(target: scan >= 80% of the classifier-only rate).

    python benchmarks/scan.py --threads 1    # more images than one batch, as in any real scan
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from ldmdetect.config import DetectorConfig
from ldmdetect.detector import Detector
from ldmdetect.engine.scan import score_files
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="tf_efficientnetv2_b0")
    parser.add_argument("--input-size", type=int, default=256)
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--image-side", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    mean, std = backbone_normalization(args.backbone)
    config = DetectorConfig(backbone=args.backbone, input_size=args.input_size, mean=mean, std=std)
    model = get("ae").build_model(config)  # random weights: speed does not depend on them
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
    print(
        json.dumps(
            {
                "benchmark": "scan",
                "backbone": args.backbone,
                "input_size": args.input_size,
                "images": args.images,
                "image_side": args.image_side,
                "batch_size": args.batch_size,
                "workers": args.workers,
                "device": str(detector.device),
                "torch_threads": torch.get_num_threads(),
                "cpu_count": os.cpu_count(),
                "machine": platform.machine(),
                "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
                "results": results,
                "target": "scan_over_classifier >= 0.8",
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
