"""FakeInversion's ablation: which of the paper's inputs makes its detector transfer?

FakeInversion (CVPR 2024) classifies an image stacked with its DDIM-inverted noise map and
its re-generation. Trained with one generator, does the learned detector catch another
family's images, and does it beat the training-free score it is built on, the pixel error
between an image and its re-generation through the same inversion (``cross_family``'s
``inversion_error``)? This trains the demo's ``fakeinversion`` recipe with generator A
(default ``mini``) in several variants of the paper's knobs and scores each on A's held-out
reals vs. A's images (same family) and B's (default ``mini-flow``, the other family; same
prompts and seeds), with the reference on the very same images:

- ``demo``: the demo's recipe (4 inversion steps each way, the fixed caption "a photo",
  9 channels);
- ``steps-10``: 10 steps each way (the paper inverts with 50 at 512 px);
- ``residual``: three more channels, |x - D(z_0')| (the re-generation's error map);
- ``steps-10+residual``: both.

The paper's caption (BLIP-2 on every image) has no offline stand-in; every variant uses the
demo's fixed caption. Each variant's reference inverts with its own steps.

    python benchmarks/fakeinversion_ablation.py [--variants demo steps-10 ...] [--seed 0]
        [--generator-a mini] [--generator-b mini-flow] [--quick] [--threads N]
        [--work runs/fakeinversion_ablation] [--output benchmarks/results/....json]

Printed JSON (``--output`` writes it too): per variant, the detector's AUC, AP and TPR at 1%
FPR with 95% bootstrap intervals on each family, the reference's, and AUC(learned) -
AUC(reference) with a paired bootstrap interval. ``--quick``: a smoke run on fewer images.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch
from cross_family import (
    Reference,
    detector_rows,
    emit,
    inversion_error,
    paired_auc_difference,
    score_rows,
    write_unseen,
)

from ldmdetect.detector import Detector
from ldmdetect.engine.demo import DemoConfig, resolve_generator, split_photos
from ldmdetect.engine.demo_recipes import demo_train_config
from ldmdetect.engine.evaluate import evaluate
from ldmdetect.engine.train import train_detector
from ldmdetect.generative.components import load_sd_components
from ldmdetect.io.datasets import find_images
from ldmdetect.io.samples import write_sample_photos
from ldmdetect.methods.demo_recipe import DemoRun, write_crops

METHOD = "fakeinversion"
#: Each variant's changes to the demo's fakeinversion recipe (methods/fakeinversion/demo.py).
VARIANTS: dict[str, dict[str, Any]] = {
    "demo": {},
    "steps-10": {"steps": 10},
    "residual": {"residual": True},
    "steps-10+residual": {"steps": 10, "residual": True},
}
HELDOUT_CROPS = 32  # per held-out photo, as cross_family's cpu budget

BASE = DemoConfig(synris=False, other_generator=None, photo_crops=False)
QUICK = replace(
    BASE,
    real_train_crops_per_image=2,
    generated_train_images=8,
    generated_images=8,
    generation_steps=10,
)


def variant_config(cfg: DemoConfig, changes: Mapping[str, Any]) -> DemoConfig:
    """``cfg`` with the fakeinversion recipe changed as a variant says."""
    recipes = dict(cfg.method_settings)
    recipes[METHOD] = replace(cfg.recipe(METHOD), **changes)
    return replace(cfg, method_settings=recipes, methods=(METHOD,))


def run(
    work: Path,
    cfg: DemoConfig,
    variants: Sequence[str],
    generator_a: str,
    generator_b: str,
    *,
    heldout_crops: int = HELDOUT_CROPS,
    n_boot: int = 1000,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Train every variant with A, score it and its reference on A's reals vs. both families."""
    log = log or (lambda message: print(message, file=sys.stderr))
    start = time.perf_counter()
    pipeline_a, heldout = resolve_generator(generator_a, work, cfg.seed)
    pipeline_b, _ = resolve_generator(generator_b, work, cfg.seed)
    photos = write_sample_photos(work / "photos")
    splits = split_photos(photos, cfg.heldout_subjects or heldout, cfg.heldout_count, cfg.seed)
    log("held-out subjects' crops, and both generators' images from the unseen prompts")
    reals = write_crops(
        splits["heldout"], work / "heldout-real", cfg.eval_size, heldout_crops, cfg.seed + 1
    )
    tests = {
        "same family": write_unseen(pipeline_a, work / "generated-a", cfg),
        "other family": write_unseen(pipeline_b, work / "generated-b", cfg),
    }
    files = {"real": find_images([reals])} | {k: find_images([v]) for k, v in tests.items()}
    components = load_sd_components(pipeline_a, device=cfg.device)
    references: dict[int, dict[str, Any]] = {}
    rows: dict[str, Any] = {}
    for name in variants:
        vcfg = variant_config(cfg, VARIANTS[name])
        recipe = vcfg.recipe(METHOD)
        if recipe.steps not in references:
            log(f"reference: re-generation error, {recipe.steps} steps each way")
            ref = Reference(inversion_steps=recipe.steps)
            t0 = time.perf_counter()
            scores = {
                k: inversion_error(v, components, cfg.eval_size, ref) for k, v in files.items()
            }
            seconds = (time.perf_counter() - t0) / sum(len(v) for v in files.values())
            fakes = {k: scores[k] for k in tests}
            references[recipe.steps] = {
                "scores": scores,
                "rows": score_rows(scores["real"], fakes, n_boot=n_boot, seconds_per_image=seconds),
            }
        log(f"[{name}] train {recipe.label(METHOD)} with {generator_a}")
        run_a = DemoRun(work / "train", vcfg, pipeline_a, splits, [], False, log)
        training = recipe.training(run_a)  # the shared real-vs-generated set, written once
        target = work / "detectors" / name
        t0 = time.perf_counter()
        train_detector(
            [],
            target,
            demo_train_config(vcfg, METHOD),
            examples=training.examples,
            pipeline=training.pipeline,
            feature_cache=work / "features" / name,
        )
        train_seconds = time.perf_counter() - t0
        evaluation = evaluate(
            Detector.from_pretrained(target, device=cfg.device),
            [reals],
            {k: [v] for k, v in tests.items()},
            tries=(1,),
            n_boot=n_boot,
            settings={"detector": str(target)},
        )
        if evaluation.errors:
            raise RuntimeError(f"[{name}] files failed: {evaluation.errors}")
        learned = {"real": evaluation.scores["real"]} | evaluation.scores["generators"]
        reference = references[recipe.steps]
        rows[name] = {
            "changes": VARIANTS[name],
            "label": recipe.label(METHOD),
            "train_seconds": round(train_seconds, 1),
            "learned": detector_rows(evaluation),
            "reference": reference["rows"],
            "learned_minus_reference": {
                test: paired_auc_difference(
                    learned, reference["scores"], test, n_boot=n_boot, seed=cfg.seed
                )
                for test in tests
            },
        }
        log(f"[{name}] " + json.dumps({k: v["auc"] for k, v in rows[name]["learned"].items()}))
    return {
        "benchmark": "fakeinversion_ablation",
        "generators": {"A (training)": generator_a, "B (other family)": generator_b},
        "reference": "minus the mean absolute pixel error (pixels in [0, 1]) between the whole "
        "image and its re-generation after inversion through A, the variant's steps, prompt "
        f"{Reference.inversion_prompt!r}",
        "n_real": len(files["real"]),
        "n_fake": {k: len(files[k]) for k in tests},
        "variants": rows,
        "seconds_total": round(time.perf_counter() - start, 1),
        "config": {k: v for k, v in asdict(cfg).items() if k != "method_settings"}
        | {"recipe": asdict(cfg.recipe(METHOD)), "heldout_crops": heldout_crops},
        "n_boot": n_boot,
        "torch_threads": cfg.threads or torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generator-a", default="mini", help="the training generator")
    parser.add_argument("--generator-b", default="mini-flow", help="another family's")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="a smoke run on fewer images")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--work", type=Path, default=None, help="keep the run here (default: temp)")
    parser.add_argument("--output", type=Path, default=None, help="write the JSON here too")
    args = parser.parse_args(argv)
    cfg = replace(QUICK if args.quick else BASE, seed=args.seed, device=args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
        cfg = replace(cfg, threads=args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        result = run(
            work,
            cfg,
            args.variants,
            args.generator_a,
            args.generator_b,
            heldout_crops=4 if args.quick else HELDOUT_CROPS,
            n_boot=200 if args.quick else 1000,
        )
    return emit(result, args.output)


if __name__ == "__main__":
    main()
