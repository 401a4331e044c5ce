"""How often do detectors' stored thresholds flag real photographs from sources they never saw?

The number an operator meets on a first scan: at ``--fpr 0.01`` about one real photo in a
hundred should be flagged. This benchmark takes the photo corpus's held-out **test** sources
(``ldmdetect data photos --output DIR --split test``: phone and camera photos from 0.1 to
20+ Mpx, JPEG as published) and, for each detector, reports the share of crops flagged at its
stored 1% and 5% thresholds, with Clopper-Pearson intervals, per source and per resolution
bucket of the photo, under three conditions:

- ``native``: 128 px crops at native resolution, cut on the 16-pixel JPEG grid (no resize);
- ``jpeg:85``: the whole photo recompressed at JPEG quality 85 first, then cut the same way;
- ``downscaled:1024``: the photo resized (antialiased) so its long side is 1024 px first.

Beside each, the AUC of those real crops against a folder of generated images (the demo's),
so that a detector that flags nothing because it ranks nothing shows. ``--ablate-alignment``
first trains the demo's ``ae`` twice, with and without frequency alignment of its JPEG
training pairs (``ReconstructConfig.align_jpeg``), and measures both. Prints JSON.

    ldmdetect data photos --output runs/photos --split test
    ldmdetect demo --output runs/demo
    python benchmarks/real_photo_fpr.py --photos runs/photos --demo runs/demo \\
        --output benchmarks/results/real_photo_fpr.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ldmdetect.detector import Detector
from ldmdetect.engine.flagged import flagged_at
from ldmdetect.engine.metrics import roc_auc
from ldmdetect.engine.scan import score_files
from ldmdetect.io.crops import grid_boxes
from ldmdetect.io.datasets import find_images
from ldmdetect.io.images import load_image, save_png

CROP = 128  # the demo's evaluation size: LaRE and inversion see these crops unresized
# The demo method that trains on the aligned pairs, whose JPEG alignment is compared.
PAIRS_METHOD = "ae"
FPRS = (0.01, 0.05)
BUCKETS = (
    (0.0, 1.0, "<1 Mpx"),
    (1.0, 4.0, "1-4 Mpx"),
    (4.0, 12.0, "4-12 Mpx"),
    (12.0, 1e9, ">12 Mpx"),
)
CONDITIONS = ("native", "jpeg:85", "downscaled:1024")


def bucket(megapixels: float) -> str:
    return next(name for low, high, name in BUCKETS if low <= megapixels < high)


def _condition(image: Image.Image, condition: str) -> Image.Image:
    if condition == "native":
        return image
    if condition == "jpeg:85":
        from ldmdetect.io.perturb import jpeg

        return jpeg(image, 85)
    side = 1024
    scale = side / max(image.size)
    if scale >= 1:
        return image
    size = (round(image.width * scale), round(image.height * scale))
    return image.resize(size, Image.Resampling.LANCZOS)


def write_crops(photos: Path, output: Path, per_photo: int, condition: str) -> list[dict[str, Any]]:
    """``per_photo`` crops of every test photo, spread over it on the 16-px grid, as PNG (the
    decoded pixels, JPEG traces and all); one record per crop with its source and bucket."""
    manifest = json.loads((photos / "manifest.json").read_text())
    records = []
    for entry in manifest["files"]:
        if entry["split"] != "test":
            continue
        image = _condition(load_image(photos / entry["path"]), condition)
        if min(image.size) < CROP:
            continue
        boxes = grid_boxes(image.width, image.height, CROP, per_photo)
        # On the 16-pixel grid, where the photo's own JPEG blocks start.
        boxes = sorted({(x - x % 16, y - y % 16, x - x % 16 + CROP, y - y % 16 + CROP)
                        for x, y, _, _ in boxes})  # fmt: skip
        for k, box in enumerate(boxes):
            target = output / condition / entry["source"] / f"{Path(entry['path']).stem}_{k}.png"
            if not target.is_file():
                save_png(image.crop(box), target)
            records.append(
                {
                    "path": str(target),
                    "source": entry["source"],
                    "bucket": bucket(entry["megapixels"]),
                }
            )
    return records


def measure(
    detector: Detector, records: list[dict[str, Any]], generated: list[Path], workers: int
) -> dict[str, Any]:
    scores, errors = score_files(detector, [r["path"] for r in records], num_workers=workers)
    ok = ~np.isnan(scores)
    kept = [r for r, good in zip(records, ok, strict=True) if good]
    real = scores[ok]
    out: dict[str, Any] = {"n": int(ok.sum()), "errors": errors}
    resolved = detector.config.resolved_fprs()
    for fpr in FPRS:
        if f"fpr_{fpr:g}" not in resolved:
            out[f"fpr_{fpr:g}"] = "unresolved"
            continue
        by_source = flagged_at(real, detector.config, fpr, [r["source"] for r in kept])
        by_bucket = flagged_at(real, detector.config, fpr, [r["bucket"] for r in kept])
        out[f"fpr_{fpr:g}"] = by_source.to_dict() | {"per_bucket": by_bucket.per_source}
    if generated:
        fake, _ = score_files(detector, generated, num_workers=workers)
        fake = fake[~np.isnan(fake)]
        labels = np.r_[np.zeros(real.size), np.ones(fake.size)]
        out["auc_vs_generated"] = roc_auc(labels, np.r_[real, fake])
        for fpr in FPRS:
            if f"fpr_{fpr:g}" in resolved:
                out[f"generated_flagged@fpr={fpr:g}"] = flagged_at(fake, detector.config, fpr).share
    return out


def train_alignment_pair(output: Path, seed: int) -> dict[str, Path]:
    """The demo's ``ae`` (``PAIRS_METHOD``) trained with and without frequency alignment
    (same seed and data)."""
    from ldmdetect.engine.demo import DemoConfig, run_demo

    dirs = {}
    for aligned in (True, False):
        name = "aligned" if aligned else "unaligned"
        cfg = replace(
            DemoConfig(),
            methods=(PAIRS_METHOD,),
            synris=False,
            align_jpeg=aligned,
            seed=seed,
            other_generator=None,
        )
        result = run_demo(output / name, cfg, log=lambda message: print(message, file=sys.stderr))
        dirs[f"{PAIRS_METHOD} ({name})"] = result.detector_dirs[PAIRS_METHOD]
    return dirs


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--photos", type=Path, required=True, help="`ldmdetect data photos` DIR")
    parser.add_argument("--demo", type=Path, help="a demo run: its detectors and generations")
    parser.add_argument("--detector", type=Path, action="append", default=[], help="more")
    parser.add_argument("--generated", type=Path, help="generated images (default: the demo's)")
    parser.add_argument("--per-photo", type=int, default=8)
    parser.add_argument("--ablate-alignment", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--work", type=Path, default=Path("runs/real_photo_fpr"))
    parser.add_argument("--output", type=Path)
    args = parser.parse_args(argv)

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    detectors: dict[str, Path] = {}
    if args.demo is not None:
        detectors |= {d.name: d for d in sorted((args.demo / "detectors").iterdir())}
    detectors |= {d.name: d for d in args.detector}
    generated_dir = args.generated or (args.demo / "data" / "generated" if args.demo else None)
    if args.ablate_alignment:
        detectors |= train_alignment_pair(args.work / "ablation", args.seed)
        # Both runs generate the same images (same seed); score against them if none given.
        generated_dir = generated_dir or args.work / "ablation" / "aligned" / "data" / "generated"
    generated = find_images([generated_dir]) if generated_dir else []
    crops = {
        c: write_crops(args.photos, args.work / "crops", args.per_photo, c) for c in CONDITIONS
    }
    results: dict[str, Any] = {}
    for name, directory in detectors.items():
        detector = Detector.from_pretrained(directory, device="cpu")
        results[name] = {
            "detector": str(directory),
            "calibration": {
                k: detector.config.calibration.get(k) for k in ("on", "n_real", "n_sources")
            },
            **{c: measure(detector, crops[c], generated, args.workers) for c in CONDITIONS},
        }
    report = {
        "benchmark": "real_photo_fpr",
        "setup": {
            "photos": str(args.photos),
            "crop": CROP,
            "per_photo": args.per_photo,
            "crops": {c: len(v) for c, v in crops.items()},
            "sources": sorted({r["source"] for r in crops["native"]}),
            "buckets": {b: sum(r["bucket"] == b for r in crops["native"]) for _, _, b in BUCKETS},
            "generated": str(generated_dir) if generated_dir else None,
            "seconds": round(time.perf_counter() - start, 1),
        },
        "results": results,
    }
    text = json.dumps(report, indent=2)
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text + "\n")
    print(text)
    return report


if __name__ == "__main__":
    main()
