"""Does LaRE separate the shipped mini LDM's images from real photos, and at which settings?

Three image sets, all 128 px before LaRE's own resize (the demo's evaluation size):
- held-out real: random 128 px crops, at native resolution, of the photos the mini LDM never
  trained on (``mini_ldm_heldout_subjects``);
- training-subject real: the same of the photos it trained on;
- generated: images the mini LDM makes from prompts it never saw (the demo's unseen prompts and
  seed range; 25 DDIM steps, guidance 3).

For each setting (image size, timestep, prompt) it reports the mean LaRE per set, the spread of
the per-image means, and the ROC AUC of the per-image mean as a detector score (lower LaRE =
generated; AUC 0.5 = no signal, below 0.5 = generated images have *higher* error). Prints JSON.

    python benchmarks/lare_signal.py               # ~10 min on one CPU thread
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from typing import Any

import numpy as np
import torch
from PIL import Image
from sklearn.metrics import roc_auc_score

from ldmdetect.engine.demo import SEED_OFFSET, UNSEEN_PROMPTS
from ldmdetect.generative.components import load_sd_components
from ldmdetect.generative.mini import CAPTIONS, mini_ldm_dir, mini_ldm_heldout_subjects
from ldmdetect.generative.sampling import generate_images, load_pipeline
from ldmdetect.io.crops import random_boxes
from ldmdetect.io.images import load_image
from ldmdetect.io.samples import sample_photos
from ldmdetect.methods.lare2.features import LareConfig, image_seed, lare_maps, resize_for_lare

SIZE = 128  # every image is this size before LaRE's resize: the demo's evaluation size


def real_crops(names: list[str], per_photo: int, seed: int) -> list[tuple[str, Image.Image, str]]:
    """(id, 128 px native-resolution crop, caption) for each photo, seeded random positions."""
    paths = dict(sample_photos())
    paths["motorcycle"] = paths.pop("motorcycle_left")
    rng = np.random.default_rng(seed)
    out = []
    for name in names:
        photo = load_image(paths[name])
        for k, box in enumerate(random_boxes(*photo.size, SIZE, per_photo, rng)):
            out.append((f"{name}/{k}", photo.crop(box), CAPTIONS[name]))
    return out


def generated(per_prompt: int, steps: int, guidance: float) -> list[tuple[str, Image.Image, str]]:
    pipeline = load_pipeline(mini_ldm_dir(), device="cpu")
    prompts = [p for p in UNSEEN_PROMPTS for _ in range(per_prompt)]
    seeds = [SEED_OFFSET + i for i in range(len(prompts))]
    images = generate_images(
        pipeline, prompts, seeds, size=SIZE, steps=steps, guidance_scale=guidance
    )
    return [(f"generated/{s}", im, p) for s, im, p in zip(seeds, images, prompts, strict=True)]


def auc(generated_scores: np.ndarray, real_scores: np.ndarray) -> float:
    """AUC of -LaRE as the score of "generated" (lower error = generated)."""
    labels = np.r_[np.ones(len(generated_scores)), np.zeros(len(real_scores))]
    return float(roc_auc_score(labels, -np.r_[generated_scores, real_scores]))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--heldout-crops", type=int, default=8, help="crops per held-out photo")
    parser.add_argument("--train-crops", type=int, default=2, help="crops per training photo")
    parser.add_argument("--generated-per-prompt", type=int, default=3)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256])
    parser.add_argument("--timesteps", type=int, nargs="+", default=[50, 200, 500])
    # A 256 px setting costs ~8x a 64 px one (VAE attention over 64x64 cells), so by default
    # the subject prompt is compared with "" at the smaller sizes only.
    parser.add_argument("--subject-prompt-sizes", type=int, nargs="*", default=[64, 128])
    parser.add_argument("--ensemble", type=int, default=LareConfig.ensemble)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    clock = time.perf_counter()

    heldout = list(mini_ldm_heldout_subjects())
    training = [n for n in CAPTIONS if n not in heldout]
    sets = {
        "heldout_real": real_crops(heldout, args.heldout_crops, args.seed),
        "train_real": real_crops(training, args.train_crops, args.seed + 1),
    }
    start = time.perf_counter()
    sets["generated"] = generated(args.generated_per_prompt, steps=25, guidance=3.0)
    generation_seconds = time.perf_counter() - start

    components = load_sd_components(mini_ldm_dir(), device="cpu")
    rows = []
    for size, timestep, prompt_mode in itertools.product(
        args.sizes, args.timesteps, ("empty", "subject")
    ):
        if prompt_mode == "subject" and size not in args.subject_prompt_sizes:
            continue
        config = LareConfig(image_size=size, timestep=timestep, ensemble=args.ensemble)
        scores: dict[str, np.ndarray] = {}
        for set_name, items in sets.items():
            means = []
            for begin in range(0, len(items), args.batch_size):
                chunk = items[begin : begin + args.batch_size]
                images = torch.stack([resize_for_lare(im, size) for _, im, _ in chunk])
                prompts = [caption if prompt_mode == "subject" else "" for _, _, caption in chunk]
                seeds = [image_seed(image_id, config.seed) for image_id, _, _ in chunk]
                maps = lare_maps(images, prompts, seeds, components, config)
                means.append(maps.mean(dim=(1, 2, 3)))
            scores[set_name] = torch.cat(means).numpy()
        row: dict[str, Any] = {
            "image_size": size,
            "timestep": timestep,
            "prompt": "" if prompt_mode == "empty" else "a photo of a {subject}",
        }
        for set_name, values in scores.items():
            row[set_name] = {
                "mean": round(float(values.mean()), 5),
                "std": round(float(values.std()), 5),
                "n": len(values),
            }
        row["auc_generated_vs_heldout_real"] = round(
            auc(scores["generated"], scores["heldout_real"]), 3
        )
        row["auc_generated_vs_train_real"] = round(
            auc(scores["generated"], scores["train_real"]), 3
        )
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)  # progress; stdout: one JSON

    best = max(rows, key=lambda r: r["auc_generated_vs_heldout_real"])
    report = {
        "generator": "mini LDM (shipped), VAE factor 4",
        "sets": {name: len(items) for name, items in sets.items()},
        "image_preparation": f"{SIZE} px: native-resolution random crops of photos; generated "
        f"at {SIZE} px, 25 DDIM steps, guidance 3.0, unseen prompts",
        "subject_prompt": "reals: the photo's training caption; generated: its own prompt",
        "ensemble": args.ensemble,
        "threads": torch.get_num_threads(),
        "generation_seconds": round(generation_seconds, 1),
        "total_seconds": round(time.perf_counter() - clock, 1),
        "rows": rows,
        "best_by_auc_vs_heldout": {
            k: best[k]
            for k in ("image_size", "timestep", "prompt", "auc_generated_vs_heldout_real")
        },
    }
    print(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
