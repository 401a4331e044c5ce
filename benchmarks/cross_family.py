"""Cross-family benchmark: does a detector trained with one generator family catch another's?

Detection papers report that detectors built on one LDM's traces carry over to other
generators. This measures that claim in miniature with two generators of different
families: A (default ``mini``, the shipped SD-format mini LDM) and B (default ``mini-flow``,
an SD3-format flow-matching pipeline; any pipeline directory works for either). For every
method, seed and direction (A -> B and B -> A):

1. the demo trains the method with the training generator X (``engine.demo.run_demo``, one
   run per family and seed for all methods: real photos vs. X's reconstructions or
   generations, X's features);
2. both generators make images from the demo's unseen prompts and seeds (``UNSEEN_PROMPTS``,
   ``SEED_OFFSET``: the same prompt and seed for A's and B's image i);
3. the detector is scored (``engine.evaluate``, 1 try) on the held-out reals of X's demo run
   against X's images (the same-family row) and against the other family's (the cross-family
   row): AUC, AP and TPR at 1% FPR, each with 95% bootstrap intervals (reals and fakes
   resampled separately; both rows share the reals' resamples). The reals are photos of the
   subjects X's demo run held out (the generator's own held-out subjects where it names
   them), so the two directions score different reals.

Training-free references, on the very same images, through the training generator X:

- ``inversion_error``: FakeInversion's re-generation error, the mean absolute pixel difference
  (pixels in [0, 1]) between an image and its re-generation after deterministic inversion
  (``features.inversion.invert_and_regenerate``; DDIM for SD, the flow's Euler ODE for SD3),
  with the demo's fakeinversion settings (whole image, 4 steps each way, "a photo").
  Generated images sit on the generator's manifold, so they re-generate closer: the score is
  the error negated. It is also what ``dire`` classifies (|x - x'| per pixel).
- ``lare_mean``: LaRE's map (``lare2.features.lare_maps``, t = 200, 4 noise draws, the empty
  prompt as ``lare2`` uses on unlabelled images) averaged to one number, negated likewise.
- ``aeroblade_distance``: AEROBLADE is training-free already; its rows are the ``aeroblade``
  method's (its score is the negated LPIPS distance; the demo calibrates thresholds only).

``comparison`` pairs each learned method with the score it is built on (``lare2`` with
``lare_mean``, ``fakeinversion`` and ``dire`` with ``inversion_error``, ``ae`` with
``aeroblade_distance``): AUC(learned) - AUC(reference) per seed with a paired bootstrap
interval (the same resampled images for both), so it answers "does the learned detector beat
the training-free score it is built on, on the unseen family" with a sign and an interval.

    python benchmarks/cross_family.py [--generator-a mini] [--generator-b mini-flow]
        [--methods ae lare2 ...] [--seeds 0 1 2] [--budget cpu-clean] [--quick]
        [--device cpu] [--work runs/cross_family] [--output seed2.json]
    python benchmarks/cross_family.py --merge seed0.json seed1.json seed2.json
        [--output benchmarks/results/cross_family-cpu.json] [--markdown]

The JSON (printed; ``--output`` writes it too) has, under ``cross_family``: ``families``
(each generator's family and, per seed, its reals, images and stage times), ``rows`` (one
per method, training family, test family and seed: metrics, ``n_real``, ``n_fake``,
``ci95``), ``aggregated`` (over seeds: mean, sample std and per-seed values of each metric,
and each seed's intervals), ``training_free`` (``rows`` and ``aggregated`` per reference the
same way) and ``comparison`` (per seed and aggregated); beside it ``budget`` and, per seed,
``budgets`` (the budget each seed ran with) and ``config`` (the demo's settings).

The default budget is the demo's settings (SynRIS rows off, 64 crops per held-out photo so
that TPR at 1% FPR is resolved) for three seeds and six methods: hours on a CPU. ``--quick``
is one seed with fewer crops, images, sampling steps and ``ae`` epochs: a smoke run whose
numbers mean little. ``cpu`` is the published CPU table's settings, pinned field by field.
A ``-clean`` budget (``cpu-clean``, ``quick-clean``) trains exactly as the budget it is named
after, and scores the same rows, without the demo's own evaluation (10-try, JPEG and
format-control rows) or a second generation of the unseen images: about half the time.
``--merge`` joins per-seed runs whose training settings agree, of either.
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
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from mini_ldm_detection import EVAL_CROPS_PER_IMAGE, INTERVAL_METRICS, METRICS, aggregate

from ldmdetect.detector import Detector
from ldmdetect.engine.demo import (
    SEED_OFFSET,
    UNSEEN_PROMPTS,
    DemoConfig,
    resolve_generator,
    run_demo,
)
from ldmdetect.engine.demo_config import default_method_settings
from ldmdetect.engine.evaluate import Evaluation, evaluate
from ldmdetect.engine.metrics import compute_metrics, generator_intervals, roc_auc
from ldmdetect.features.inversion import InversionConfig, invert_and_regenerate, resize_uint8
from ldmdetect.generative.components import SDComponents, load_sd_components
from ldmdetect.generative.families import pipeline_family
from ldmdetect.generative.sampling import load_pipeline, write_generated
from ldmdetect.io.datasets import find_images
from ldmdetect.io.files import atomic_write_text
from ldmdetect.io.images import load_image, pil_to_uint8
from ldmdetect.methods import get as get_method
from ldmdetect.methods import list_methods
from ldmdetect.methods.demo_recipe import DemoRecipe
from ldmdetect.methods.lare2.features import LareConfig, image_seed, lare_maps, resize_for_lare

#: Every registered method, so a new method package joins the study by default.
METHODS = tuple(list_methods())
REFERENCE_SCORES = {
    "inversion_error": "minus the mean absolute pixel error (pixels in [0, 1]) between the "
    "image and its re-generation after inversion through the training family's generator",
    "lare_mean": "minus the mean of the image's LaRE map through the training family's generator",
    "aeroblade_distance": "the aeroblade method's score: minus the LPIPS distance to the "
    "training family's autoencoder reconstruction",
}
# The training-free score each learned method is built on.
BUILT_ON = {
    "ae": "aeroblade_distance",  # both read the autoencoder's reconstruction of the image
    "lare2": "lare_mean",
    "fakeinversion": "inversion_error",
    "dire": "inversion_error",
}


#: The row a training-free method's own score takes among the reference scores (by default
#: its name): AEROBLADE's is the autoencoder distance ``ae`` is built on.
TRAINING_FREE_ROWS = {"aeroblade": "aeroblade_distance"}


def reference_name(method: str) -> str:
    """The training-free table's row for a training-free method's score."""
    return TRAINING_FREE_ROWS.get(method, method)


@dataclass(frozen=True)
class Reference:
    """Settings of the training-free scores: the demo's fakeinversion and lare2 settings, so
    that each reference is the signal its learned method starts from."""

    inversion_steps: int = 4
    inversion_prompt: str = "a photo"  # the demo's fixed captioner
    lare_timestep: int = 200
    lare_ensemble: int = 4
    lare_prompt: str = ""  # lare2's prompt for an image with no class or caption
    batch_size: int = 8


@dataclass(frozen=True)
class Budget:
    """Seeds, methods and the demo settings (only its method-independent fields) to run.

    With ``demo.evaluate`` off (the ``-clean`` budgets) the demo trains exactly as with it on
    but scores nothing itself (its 10-try, JPEG and format-control rows, which this table never
    reads), and each family's test images are the demo's own (``write_unseen`` makes the same
    prompts, seeds and settings): the same detectors and the same rows in a fraction of the
    time."""

    name: str = "full"  # recorded in the JSON, so that merged seeds say what each ran with
    seeds: tuple[int, ...] = (0, 1, 2)
    methods: tuple[str, ...] = METHODS
    demo: DemoConfig = field(
        default_factory=lambda: DemoConfig(
            synris=False, eval_crops_per_image=EVAL_CROPS_PER_IMAGE, other_generator=None
        )
    )
    reference: Reference = field(default_factory=Reference)
    n_boot: int = 1000


def _fewer_epochs(method: str, epochs: int) -> dict[str, DemoRecipe]:
    """Every method's demo recipe with its defaults, but ``method`` trained ``epochs``."""
    recipes = dict(default_method_settings())
    recipes[method] = replace(recipes[method], epochs=epochs)
    return recipes


# The demo settings the CPU table's seeds train with (its JSON's "config"), every field
# written out, recipes included: a later change of DemoConfig's or a recipe's defaults must
# not change what a new seed of that table trains. The full protocol at the cost a CPU
# affords: the shipped photo crops are left out (they only add ae training data and the
# threshold calibration; AUC and TPR at a threshold set on the held-out reals do not need
# them) and 32 crops per held-out photo instead of 64.
CPU_DEMO: dict[str, Any] = {
    "other_generator": None,
    "input_size": 64,
    "train_crops_per_image": 32,
    "eval_size": 128,
    "eval_crops_per_image": 32,
    "generated_images": 48,
    "generation_steps": 25,
    "guidance_scale": 3.0,
    "heldout_subjects": None,
    "heldout_count": 3,
    "batch_size": 16,
    "perturbations": ("jpeg:75",),
    "format_control": 90,
    "synris": False,
    "real_train_crops_per_image": 5,
    "generated_train_images": 48,
    "num_workers": 0,
    "device": "cpu",
    "photo_crops": False,
    "pair_scales": (1.0, 0.5),
    "align_jpeg": True,
    "photo_limit": 0,
    "costly_photo_limit": 200,
}
CPU_RECIPES: dict[str, dict[str, Any]] = {
    "ae": {
        "calibration_tries": 20,
        "backbone": "tf_efficientnet_lite0",
        "pretrained": True,
        "lr": 0.002,
        "augment": "jpeg_prob=0.3,jpeg_quality=65-100,jpeg_grid_shift=0",
        "epochs": 20,
    },
    "lare2": {
        "calibration_tries": 1,
        "backbone": "timm:tf_efficientnet_lite0",
        "pretrained": True,
        "input_size": 112,
        "timestep": 200,
        "ensemble": 4,
        "epochs": 6,
    },
    "fakeinversion": {
        "calibration_tries": 1,
        "backbone": "tf_efficientnet_lite0",
        "pretrained": True,
        "input_size": 112,
        "steps": 4,
        "captioner": "fixed:a photo",
        "epochs": 6,
        "residual": False,
    },
    "aeroblade": {"calibration_tries": 1},
    "dire": {
        "calibration_tries": 1,
        "backbone": "tf_efficientnet_lite0",
        "pretrained": True,
        "input_size": 112,
        "steps": 5,
        "epochs": 6,
    },
    "vfm-probe": {
        "calibration_tries": 1,
        "backbone": "timm:tf_efficientnet_lite0",
        "input_size": 128,
    },
}
# Settings that change what a run scores but not what it trains: runs that differ only in
# these merge (each seed's budget is recorded).
EVALUATION_ONLY = ("evaluate",)
# Settings added after a JSON may have been recorded, with the value that does what the code
# did before they existed: a recorded "config" without one ran with that value.
ADDED_SETTINGS: dict[str, Any] = {"evaluate": True}
ADDED_RECIPE_SETTINGS: dict[str, dict[str, Any]] = {"fakeinversion": {"residual": False}}


def _pinned_demo(fields: Mapping[str, Any], recipes: Mapping[str, Mapping[str, Any]]) -> DemoConfig:
    """A DemoConfig with these fields and each listed method's recipe set field by field."""
    defaults = default_method_settings()
    unknown = set(recipes) - set(defaults)
    if unknown:
        raise ValueError(f"no demo recipe for {sorted(unknown)}")
    settings = {name: replace(defaults[name], **values) for name, values in recipes.items()}
    return DemoConfig(**fields, method_settings=settings)


_CPU = _pinned_demo(CPU_DEMO, CPU_RECIPES)
_QUICK = DemoConfig(
    synris=False,
    other_generator=None,
    photo_crops=False,
    train_crops_per_image=8,
    eval_crops_per_image=8,
    generated_images=8,
    generation_steps=10,
    method_settings=_fewer_epochs("ae", 3),
)
BUDGETS: dict[str, Budget] = {
    "full": Budget(),
    "cpu": Budget(name="cpu", demo=_CPU),
    # cpu's detectors and rows without the demo's own evaluation (about half cpu's time).
    "cpu-clean": Budget(name="cpu-clean", demo=replace(_CPU, evaluate=False)),
    # Minutes per method on a CPU, to check the whole chain; the numbers mean little. The
    # shipped photo crops (extra ae training data, calibration) are left out: AUC does not
    # depend on thresholds.
    "quick": Budget(name="quick", seeds=(0,), demo=_QUICK, n_boot=200),
    "quick-clean": Budget(
        name="quick-clean", seeds=(0,), demo=replace(_QUICK, evaluate=False), n_boot=200
    ),
}


@dataclass(frozen=True)
class FamilyRun:
    """One generator's side of one seed: its demo run's detectors and held-out reals, and its
    images from the unseen prompts and seeds."""

    label: str
    pipeline: str
    family: str
    reals: Path
    generated: Path
    detectors: dict[str, Path]
    seconds: dict[str, float]  # the demo's stages, then "generate_unseen"


def family_labels(generator_a: str, generator_b: str) -> tuple[str, str]:
    """Names for the two generators in the JSON: the --generator value, or a directory's name."""

    def label(name: str) -> str:
        return Path(name).name if os.sep in name or Path(name).is_dir() else name

    a, b = label(generator_a), label(generator_b)
    if a == b:
        a, b = f"{a} (A)", f"{b} (B)"
    return a, b


def write_prompted(
    pipeline: str,
    output: Path,
    cfg: DemoConfig,
    prompts: Sequence[str],
    seed_offset: int,
    count: int,
) -> Path:
    """``count`` images of the generator, image i from prompt i (cycling) and seed
    ``seed_offset + cfg.seed * 1000 + i``, at the demo's size, steps and guidance: the one way
    the benchmarks make a generator's images, so two families' image i share prompt and seed."""
    write_generated(
        load_pipeline(pipeline, device=cfg.device),
        [prompts[i % len(prompts)] for i in range(count)],
        [seed_offset + cfg.seed * 1000 + i for i in range(count)],
        output,
        size=cfg.eval_size,
        steps=cfg.generation_steps,
        guidance_scale=cfg.guidance_scale,
    )
    return output


def write_unseen(pipeline: str, output: Path, cfg: DemoConfig) -> Path:
    """The generator's images for ``cfg.seed`` from the demo's unseen prompts and seeds (as
    ``engine.demo`` makes its test set), so A's and B's image i share prompt and seed."""
    return write_prompted(pipeline, output, cfg, UNSEEN_PROMPTS, SEED_OFFSET, cfg.generated_images)


def run_family(
    work: Path, label: str, generator: str, cfg: DemoConfig, log: Callable[[str], None]
) -> FamilyRun:
    """Train every method with ``generator`` (the demo) and make its unseen images (or, when
    the demo does not evaluate, take its test images: the same prompts, seeds and settings)."""
    cfg = replace(cfg, generator=generator)
    result = run_demo(work / "demo", cfg, log=log)
    pipeline, _ = resolve_generator(generator, work / "demo", cfg.seed)
    seconds = dict(result.seconds)
    if cfg.evaluate:
        # The held-out reals the demo scored its detectors on (never seen in training).
        real_dirs = {tuple(e.settings["real"]) for e in result.evaluations.values()}
        if len(real_dirs) != 1 or len(next(iter(real_dirs))) != 1:
            raise RuntimeError(
                f"expected one held-out real folder in the demo run, got {real_dirs}"
            )
        reals = Path(next(iter(real_dirs))[0])
        start = time.perf_counter()
        generated = write_unseen(pipeline, work / "generated", cfg)
        seconds["generate_unseen"] = round(time.perf_counter() - start, 2)
    else:  # the demo's held-out reals and test images, where its evaluation would read them
        reals, generated = (
            work / "demo" / "data" / "heldout" / "real",
            work / "demo" / "data" / "generated",
        )
        for folder in (reals, generated):
            if not find_images([folder]):
                raise RuntimeError(f"{folder}: the demo run left no images there")
    return FamilyRun(
        label=label,
        pipeline=pipeline,
        family=pipeline_family(pipeline).name,
        reals=reals,
        generated=generated,
        detectors=dict(result.detector_dirs),
        seconds=seconds,
    )


# ----------------------------------------------------------------------- training-free scores


def _batches(paths: Sequence[Path], size: int) -> list[list[Path]]:
    return [list(paths[i : i + size]) for i in range(0, len(paths), size)]


def inversion_error(
    paths: Sequence[Path], components: SDComponents, image_size: int, ref: Reference
) -> np.ndarray:
    """Negated mean absolute pixel error (in [0, 1]) between each whole image, resized to
    ``image_size``, and its re-generation after inversion through ``components``."""
    config = InversionConfig(image_size=image_size, steps=ref.inversion_steps)
    scores = []
    for batch in _batches(paths, ref.batch_size):
        pixels = torch.stack(
            [resize_uint8(pil_to_uint8(load_image(p))[None], image_size)[0] for p in batch]
        )
        _, regenerated = invert_and_regenerate(
            pixels, [ref.inversion_prompt] * len(batch), components, config
        )
        error = (pixels.float() / 255 - regenerated).abs().mean(dim=(1, 2, 3))
        scores.append(-error.numpy())
    return np.concatenate(scores).astype(np.float64)


def lare_mean(
    paths: Sequence[Path], components: SDComponents, image_size: int, ref: Reference
) -> np.ndarray:
    """Negated mean of each image's LaRE map (whole image resized to ``image_size``), each
    image's noise seeded by its file name."""
    config = LareConfig(
        image_size=image_size, timestep=ref.lare_timestep, ensemble=ref.lare_ensemble
    )
    scores = []
    for batch in _batches(paths, ref.batch_size):
        images = torch.stack([resize_for_lare(load_image(p), image_size) for p in batch])
        seeds = [image_seed(p.name, config.seed) for p in batch]
        maps = lare_maps(images, [ref.lare_prompt] * len(batch), seeds, components, config)
        scores.append(-maps.mean(dim=(1, 2, 3)).numpy())
    return np.concatenate(scores).astype(np.float64)


SCORERS = {"inversion_error": inversion_error, "lare_mean": lare_mean}


def reference_scores(
    train: FamilyRun, test_sets: Mapping[str, Path], cfg: DemoConfig, ref: Reference
) -> dict[str, dict[str, Any]]:
    """{reference: {"real": scores, test label: scores, "seconds_per_image": s}} through the
    training generator's components, on its held-out reals and each family's images."""
    components = load_sd_components(train.pipeline, device=cfg.device)
    files = {"real": find_images([train.reals])} | {
        name: find_images([folder]) for name, folder in test_sets.items()
    }
    out: dict[str, dict[str, Any]] = {}
    for name, scorer in SCORERS.items():
        start = time.perf_counter()
        out[name] = {
            key: scorer(paths, components, cfg.eval_size, ref) for key, paths in files.items()
        }
        n_images = sum(len(p) for p in files.values())
        out[name]["seconds_per_image"] = (time.perf_counter() - start) / n_images
    return out


# --------------------------------------------------------------------------------------- rows


def score_rows(
    real: np.ndarray,
    fakes: Mapping[str, np.ndarray],
    *,
    n_boot: int,
    seconds_per_image: float,
) -> dict[str, dict[str, Any]]:
    """Per test set: AUC, AP, TPR@1%FPR, counts and 95% bootstrap intervals of a score (higher
    = generated) on shared reals, computed as ``engine.evaluate`` computes a detector's."""
    intervals = generator_intervals(real, fakes, n_boot=n_boot)["generators"]
    rows = {}
    for name, fake in fakes.items():
        y = np.r_[np.zeros(real.size), np.ones(fake.size)]
        metrics = compute_metrics(y, np.r_[real, fake], threshold=None)
        rows[name] = _row(metrics, intervals[name], seconds_per_image)
    return rows


def _row(
    metrics: Mapping[str, float], intervals: Mapping[str, list[float]], seconds: float
) -> dict[str, Any]:
    row: dict[str, Any] = {m: round(float(metrics[m]), 4) for m in METRICS}
    row["n_real"], row["n_fake"] = int(metrics["n_real"]), int(metrics["n_fake"])
    row["ci95"] = {k: [round(float(x), 4) for x in intervals[k]] for k in INTERVAL_METRICS}
    row["seconds_per_image"] = round(float(seconds), 4)
    return row


def detector_rows(evaluation: Evaluation) -> dict[str, dict[str, Any]]:
    """The clean 1-try condition's rows of an evaluation, per test set."""
    clean = evaluation.conditions()[0]
    return {
        name: _row(metrics, clean.intervals["generators"][name], clean.seconds_per_image)
        for name, metrics in clean.generators.items()
    }


def paired_auc_difference(
    a: Mapping[str, np.ndarray],
    b: Mapping[str, np.ndarray],
    test: str,
    *,
    n_boot: int,
    seed: int = 0,
) -> dict[str, Any]:
    """AUC(a) - AUC(b) on the same reals and test images, with a 95% paired percentile
    bootstrap interval: each replicate resamples reals and fakes (separately) and scores both
    on the same draw, so what the images share cancels."""
    ra, fa, rb, fb = a["real"], a[test], b["real"], b[test]
    if ra.shape != rb.shape or fa.shape != fb.shape:
        raise ValueError(f"{test}: the two scores cover different images")

    def auc(real: np.ndarray, fake: np.ndarray) -> float:
        return roc_auc(np.r_[np.zeros(real.size), np.ones(fake.size)], np.r_[real, fake])

    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(n_boot):
        i = rng.integers(0, ra.size, ra.size)
        j = rng.integers(0, fa.size, fa.size)
        diffs.append(auc(ra[i], fa[j]) - auc(rb[i], fb[j]))
    interval = np.percentile(diffs, [2.5, 97.5]) if diffs else [np.nan, np.nan]
    return {
        "auc_difference": round(auc(ra, fa) - auc(rb, fb), 4),
        "ci95": [round(float(x), 4) + 0.0 for x in interval],  # + 0.0: no "-0.0"
    }


class Table:
    """Rows keyed by (name, train family, test family, seed), where the name is a method or a
    reference (``kind``); aggregated over seeds with ``mini_ldm_detection.aggregate``."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.rows: list[dict[str, Any]] = []
        self._per_seed: dict[int, dict[str, dict[str, Any]]] = {}
        self._keys: dict[str, dict[str, str]] = {}

    def add(self, name: str, train: str, test: str, seed: int, row: dict[str, Any]) -> None:
        key = {self.kind: name, "train_family": train, "test_family": test}
        key["relation"] = "same family" if test == train else "cross family"
        label = f"{name} / trained with {train} / tested on {test}"
        self._keys[label] = key
        self._per_seed.setdefault(seed, {})[label] = row
        self.rows.append(key | {"seed": seed} | row)

    def aggregated(self) -> list[dict[str, Any]]:
        """Mean, sample std and per-seed values of each metric, and each seed's intervals."""
        if not self._per_seed:
            return []
        tables = {
            seed: {"table": rows, "intervals": {k: row["ci95"] for k, row in rows.items()}}
            for seed, rows in self._per_seed.items()
        }
        return [self._keys[label] | row for label, row in aggregate(tables).items()]


def score_direction(
    train: FamilyRun,
    test_sets: Mapping[str, Path],
    seed: int,
    budget: Budget,
    cfg: DemoConfig,
    tables: Mapping[str, Table],
    log: Callable[[str], None],
) -> None:
    """Every method trained with ``train``'s generator, and the training-free scores through
    it, on ``train``'s held-out reals vs. each family's images; then each learned method
    against the reference it is built on, on the same images."""
    log(f"[seed {seed}] score every method trained with {train.label} on both families")
    scores: dict[str, dict[str, np.ndarray]] = {}
    for method in budget.methods:
        evaluation = evaluate(
            Detector.from_pretrained(train.detectors[method], device=cfg.device),
            [train.reals],
            {name: [folder] for name, folder in test_sets.items()},
            tries=(1,),
            n_boot=budget.n_boot,
            num_workers=cfg.num_workers,
            settings={"detector": str(train.detectors[method])},
        )
        if not evaluation.errors:  # else the scores would not pair with the files
            scores[method] = {"real": evaluation.scores["real"]}
            scores[method] |= evaluation.scores["generators"]
        training_free = not get_method(method).trains  # its score is a reference already
        for test, row in detector_rows(evaluation).items():
            tables["learned"].add(method, train.label, test, seed, row)
            if training_free:
                tables["training_free"].add(reference_name(method), train.label, test, seed, row)
        if training_free and method in scores:
            scores[reference_name(method)] = scores[method]

    log(f"[seed {seed}] training-free scores through {train.label}'s generator")
    for name, ref in reference_scores(train, test_sets, cfg, budget.reference).items():
        seconds = ref.pop("seconds_per_image")
        scores[name] = ref
        fakes = {test: ref[test] for test in test_sets}
        rows = score_rows(ref["real"], fakes, n_boot=budget.n_boot, seconds_per_image=seconds)
        for test, row in rows.items():
            tables["training_free"].add(name, train.label, test, seed, row)

    for method, reference in BUILT_ON.items():
        if method in scores and reference in scores:
            for test in test_sets:
                paired = paired_auc_difference(
                    scores[method], scores[reference], test, n_boot=budget.n_boot, seed=seed
                )
                row = {"reference": reference, **paired}
                tables["comparison"].add(method, train.label, test, seed, row)


def run(
    work: Path,
    budget: Budget,
    generator_a: str,
    generator_b: str,
    log: Callable[[str], None] | None = None,
    on_seed: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Every seed, family and method; returns the JSON's content. ``on_seed`` gets the content
    so far after each seed, so that an interrupted run keeps the seeds it finished."""
    start = time.perf_counter()
    log = log or (lambda message: print(message, file=sys.stderr))
    labels = family_labels(generator_a, generator_b)
    generators = dict(zip(labels, (generator_a, generator_b), strict=True))
    for tag, name in zip("AB", generators.values(), strict=True):
        try:  # a generator that cannot load fails now, not an hour into the run
            pipeline_family(resolve_generator(name, work / "check", 0)[0])
        except Exception as err:
            raise ValueError(f"generator {tag} ({name!r}) cannot be loaded: {err}") from err
    tables = {
        "learned": Table("method"),
        "training_free": Table("reference"),
        "comparison": Table("method"),
    }
    families: dict[str, dict[str, Any]] = {}
    for seed in budget.seeds:
        cfg = replace(budget.demo, seed=seed, methods=budget.methods)
        runs = {}
        for tag, label in zip("AB", labels, strict=True):
            runs[label] = run_family(
                work / f"seed-{seed}" / tag,
                label,
                generators[label],
                cfg,
                lambda message, seed=seed, label=label: log(f"[seed {seed}, {label}] {message}"),
            )
            family = families.setdefault(
                label, {"generator": generators[label], "family": runs[label].family, "runs": {}}
            )
            family["runs"][str(seed)] = {
                "reals": str(runs[label].reals),
                "generated": str(runs[label].generated),
                "seconds": runs[label].seconds,
            }
        test_sets = {label: r.generated for label, r in runs.items()}
        for train in runs.values():
            score_direction(train, test_sets, seed, budget, cfg, tables, log)
        log(f"seed {seed} done after {time.perf_counter() - start:.0f} s")
        if on_seed is not None:
            on_seed(_content(tables, families, budget, start, seeds_done=seed))
    return _content(tables, families, budget, start, seeds_done=None)


def _content(
    tables: Mapping[str, Table],
    families: dict[str, dict[str, Any]],
    budget: Budget,
    start: float,
    seeds_done: int | None,
) -> dict[str, Any]:
    """The JSON's content from the tables; ``seeds_done``: the last seed finished, when the
    run is not complete yet."""
    seeds = list(budget.seeds)
    if seeds_done is not None:
        seeds = seeds[: seeds.index(seeds_done) + 1]
    compared = {(r["method"], r["reference"]) for r in tables["comparison"].rows}
    return {
        "benchmark": "cross_family",
        "budget": budget.name,
        "budgets": {str(seed): budget.name for seed in seeds},
        "cross_family": {
            "families": families,
            "seeds": seeds,
            "complete": seeds_done is None,
            "methods": list(budget.methods),
            "rows": tables["learned"].rows,
            "aggregated": tables["learned"].aggregated(),
            "training_free": {
                "scores": REFERENCE_SCORES,
                "rows": tables["training_free"].rows,
                "aggregated": tables["training_free"].aggregated(),
            },
            "comparison": {
                "built_on": dict(sorted(compared)),
                "rows": tables["comparison"].rows,
                "aggregated": _aggregate_comparisons(tables["comparison"].rows),
            },
        },
        "seconds_total": round(time.perf_counter() - start, 1),
        # The demo's settings for both families (each run sets its own generator).
        "config": demo_settings(budget.demo, budget.methods),
        "reference": asdict(budget.reference),
        "n_boot": budget.n_boot,
        "torch_threads": budget.demo.threads or torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
    }


def demo_settings(demo: DemoConfig, methods: Sequence[str]) -> dict[str, Any]:
    """The JSON's "config": the demo's settings for both families (each run sets its own
    generator)."""
    settings = asdict(replace(demo, methods=tuple(methods)))
    return {k: v for k, v in settings.items() if k != "generator"}


def completed_settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON's "config" with the settings added since it was recorded (``ADDED_SETTINGS``,
    ``ADDED_RECIPE_SETTINGS``) at the values it ran with."""
    out = ADDED_SETTINGS | dict(config)
    # Which methods ran, not in what order: each trains from its own seed (set_seed), so the
    # order changes no result, and METHODS follows the registry's (sorted) order.
    if "methods" in out:
        out["methods"] = sorted(out["methods"])
    recipes = dict(out.get("method_settings") or {})
    for method, added in ADDED_RECIPE_SETTINGS.items():
        if method in recipes:
            recipes[method] = added | recipes[method]
    return out | {"method_settings": recipes}


def training_settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """What a JSON's "config" trains: completed, without the settings that change only what
    is scored (``EVALUATION_ONLY``)."""
    return {k: v for k, v in completed_settings(config).items() if k not in EVALUATION_ONLY}


def budget_names(content: Mapping[str, Any]) -> dict[str, str]:
    """{seed: budget name} of a run's JSON. A JSON recorded before the budget's name was
    gets the budget whose settings its "config" equals (with its threads and device),
    else "unrecorded"."""
    seeds = [str(s) for s in content["cross_family"]["seeds"]]
    if "budgets" in content:
        return dict(content["budgets"])
    config = content["config"]
    recorded = _canonical(completed_settings(config))
    for name, budget in BUDGETS.items():
        demo = replace(budget.demo, threads=config.get("threads"), device=config.get("device"))
        expected = completed_settings(demo_settings(demo, config.get("methods", ())))
        if _canonical(expected) == recorded:
            return dict.fromkeys(seeds, name)
    return dict.fromkeys(seeds, "unrecorded")


def merge(contents: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One JSON from runs of the same training settings on different seeds (say, one process
    per seed), aggregated over all their seeds as one run would have. Runs whose budgets
    differ only in what the demo itself scores (a ``-clean`` budget and its full one) merge;
    "budgets" says which each seed ran with."""
    if not contents:
        raise ValueError("nothing to merge")
    first = contents[0]
    keys = ("config", "reference", "n_boot")

    def comparable(content: Mapping[str, Any], key: str) -> str:
        value = content.get(key)
        return _canonical(training_settings(value) if key == "config" else value)

    for other in contents[1:]:
        differing = [k for k in keys if comparable(other, k) != comparable(first, k)]
        if differing:
            raise ValueError(f"the runs differ in {differing}: only one setting's seeds merge")
    seeds = [s for c in contents for s in c["cross_family"]["seeds"]]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"a seed appears in more than one run: {sorted(seeds)}")
    tables = {
        "learned": Table("method"),
        "training_free": Table("reference"),
        "comparison": Table("method"),
    }
    families: dict[str, dict[str, Any]] = {}
    for content in contents:
        part = content["cross_family"]
        sources = {
            "learned": part["rows"],
            "training_free": part["training_free"]["rows"],
            "comparison": part["comparison"]["rows"],
        }
        for name, rows in sources.items():
            kind = tables[name].kind
            for row in rows:
                rest = {
                    k: v
                    for k, v in row.items()
                    if k not in (kind, "train_family", "test_family", "relation", "seed")
                }
                tables[name].add(
                    row[kind], row["train_family"], row["test_family"], row["seed"], rest
                )
        for label, family in part["families"].items():
            merged = families.setdefault(label, {**family, "runs": {}})
            merged["runs"] |= family["runs"]
    budget = Budget(
        seeds=tuple(sorted(seeds)),
        methods=tuple(first["cross_family"]["methods"]),
        n_boot=first["n_boot"],
    )
    content = _content(tables, families, budget, time.perf_counter(), seeds_done=None)
    content["cross_family"]["complete"] = all(c["cross_family"]["complete"] for c in contents)
    content["seconds_total"] = round(sum(c["seconds_total"] for c in contents), 1)
    budgets = {seed: name for c in contents for seed, name in budget_names(c).items()}
    names = sorted(set(budgets.values()))
    content["budget"] = names[0] if len(names) == 1 else "+".join(names)
    content["budgets"] = dict(sorted(budgets.items(), key=lambda item: int(item[0])))
    config = first["config"]
    if any(_canonical(c["config"]) != _canonical(config) for c in contents):
        config = training_settings(config)  # the settings every seed shares
    content |= {
        k: first[k] for k in ("reference", "n_boot", "torch_threads", "cpu_count", "machine")
    }
    return content | {"config": config}


def _auc_cell(row: Mapping[str, Any], metric: str = "auc") -> str:
    """ "mean ± std (lo-hi)": the mean over seeds, their sample spread, and the span of the
    seeds' 95% bootstrap intervals (lowest lower bound to highest upper bound)."""
    value = row[metric]
    intervals = [ci[metric] for ci in row["ci95_per_seed"] if ci and metric in ci]
    spread = f" ± {value['std']:.3f}" if value["std"] is not None else ""
    span = (
        f" ({min(i[0] for i in intervals):.2f}-{max(i[1] for i in intervals):.2f})"
        if intervals
        else ""
    )
    return f"{value['mean']:.3f}{spread}{span}"


def markdown(content: Mapping[str, Any]) -> str:
    """The README's tables: per method (learned) and reference (training-free) and training
    family, AUC on the same family's images and on the other family's; then each learned
    method minus the score it is built on."""
    part = content["cross_family"]
    out = [
        f"seeds {', '.join(map(str, part['seeds']))}; AUC mean ± std over seeds "
        "(span of the seeds' 95% bootstrap intervals); TPR at 1% FPR: mean over seeds\n"
    ]
    for title, rows, kind in (
        ("learned detectors", part["aggregated"], "method"),
        ("training-free scores", part["training_free"]["aggregated"], "reference"),
    ):
        cells: dict[tuple[str, str], dict[str, str]] = {}
        for row in rows:
            key = (row[kind], row["train_family"])
            side = "same" if row["relation"] == "same family" else "other"
            cells.setdefault(key, {})[side] = _auc_cell(row)
            cells[key][f"{side}_tpr"] = f"{row['tpr@fpr=0.01']['mean']:.2f}"
        out.append(f"{title}:\n")
        out.append(
            f"| {kind} | trained with | AUC, same family | AUC, other family "
            "| TPR@1%, same | TPR@1%, other |"
        )
        out.append("|---|---|---:|---:|---:|---:|")
        for (name, train), c in cells.items():
            out.append(
                f"| {name} | {train} | {c.get('same', '')} | {c.get('other', '')} "
                f"| {c.get('same_tpr', '')} | {c.get('other_tpr', '')} |"
            )
        out.append("")
    out.append(
        "learned minus the training-free score it is built on (AUC; seeds whose paired "
        "95% interval lies above / below 0):\n"
    )
    out.append("| method | reference | trained with | tested on | AUC difference | above / below |")
    out.append("|---|---|---|---|---:|---:|")
    for row in part["comparison"]["aggregated"]:
        diff = row["auc_difference"]
        above = sum(ci[0] > 0 for ci in row["ci95_per_seed"])
        below = sum(ci[1] < 0 for ci in row["ci95_per_seed"])
        spread = f" ± {diff['std']:.3f}" if diff["std"] is not None else ""
        out.append(
            f"| {row['method']} | {row['reference']} | {row['train_family']} "
            f"| {row['test_family']} | {diff['mean']:+.3f}{spread} "
            f"| {above} / {below} of {len(row['seeds'])} |"
        )
    return "\n".join(out) + "\n"


def _canonical(value: Any) -> str:
    """A JSON value as text, so that a tuple and the list it was written as compare equal."""
    return json.dumps(value, sort_keys=True, default=str)


def _aggregate_comparisons(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean, sample std and per-seed AUC differences, with each seed's paired interval."""
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    fields = ("method", "reference", "train_family", "test_family", "relation")
    for row in rows:
        groups.setdefault(tuple(row[f] for f in fields), []).append(row)
    out = []
    for key, group in groups.items():
        diffs = [r["auc_difference"] for r in group]
        out.append(
            dict(zip(fields, key, strict=True))
            | {
                "auc_difference": {
                    "mean": round(float(np.mean(diffs)), 4),
                    "std": round(float(np.std(diffs, ddof=1)), 4) if len(diffs) > 1 else None,
                    "per_seed": diffs,
                },
                "ci95_per_seed": [r["ci95"] for r in group],
                "seeds": [r["seed"] for r in group],
            }
        )
    return out


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generator-a", default="mini", help="an SD-format pipeline")
    parser.add_argument("--generator-b", default="mini-flow", help="another family's")
    parser.add_argument("--methods", nargs="+", default=None, help=f"default: {' '.join(METHODS)}")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="default: 0 1 2")
    parser.add_argument(
        "--budget",
        choices=sorted(BUDGETS),
        default="full",
        help="full: the demo's settings; cpu: without the shipped photo crops, 32 crops per "
        "held-out photo; quick: one seed, small, a smoke run; NAME-clean: NAME's detectors and "
        "rows without the demo's own evaluation (what the table does not read)",
    )
    parser.add_argument("--quick", action="store_true", help="the same as --budget quick")
    parser.add_argument(
        "--merge",
        type=Path,
        nargs="+",
        default=None,
        help="combine these JSON files (one setting, different seeds) instead of running",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument(
        "--markdown", action="store_true", help="print the README's tables instead of the JSON"
    )
    parser.add_argument("--device", default=None, help="where the models run (default: cpu)")
    parser.add_argument(
        "--work", type=Path, default=None, help="keep the runs here (default: temp)"
    )
    parser.add_argument("--output", type=Path, default=None, help="write the JSON here too")
    args = parser.parse_args(argv)
    if args.merge:
        merged = merge([json.loads(p.read_text()) for p in args.merge])
        return emit(merged, args.output, as_markdown=args.markdown)
    budget = BUDGETS["quick" if args.quick else args.budget]
    if args.methods:
        from ldmdetect.methods import get

        for name in args.methods:
            get(name)  # an unknown name fails now, with the known ones, not after training
        budget = replace(budget, methods=tuple(dict.fromkeys(args.methods)))
    if args.seeds:
        budget = replace(budget, seeds=tuple(dict.fromkeys(args.seeds)))
    if args.device:
        budget = replace(budget, demo=replace(budget.demo, device=args.device))
    if args.threads:
        budget = replace(budget, demo=replace(budget.demo, threads=args.threads))

    def partial(content: dict[str, Any]) -> None:
        if args.output:
            _write(content, args.output)

    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        result = run(work, budget, args.generator_a, args.generator_b, on_seed=partial)
    return emit(result, args.output, as_markdown=args.markdown)


def _write(content: Mapping[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(content, indent=2) + "\n")


def emit(content: dict[str, Any], output: Path | None, as_markdown: bool = False) -> dict[str, Any]:
    """Write the JSON to ``output`` (if given) and print it, or the README's tables."""
    if output:
        _write(content, output)
    print(markdown(content) if as_markdown else json.dumps(content, indent=2))
    return content


if __name__ == "__main__":
    main()
