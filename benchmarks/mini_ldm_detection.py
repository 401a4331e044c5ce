"""In-house benchmark: the main job's detection table over seeds, with intervals and a curve.

Runs the demo (``engine.demo.run_demo``) once per seed: a detector trained on real photos vs.
their reconstructions through the shipped mini LDM's autoencoder, scored on held-out photos'
reconstructions and on images the mini LDM generated from unseen prompts and seeds. The seed
drives training, crop sampling and generation. Each row (method / test set / condition) gets the
mean and standard deviation over seeds of AUC, AP and TPR at 1% FPR, plus every seed's 95%
bootstrap intervals (reals and fakes resampled separately, as ``engine.evaluate`` computes them).
Held-out reals are crops of the held-out photos only (``eval_crops_per_image`` of each), enough
of them that TPR at 1% FPR is resolved.

Then a learning curve for ``ae`` (``CURVE_METHOD``) on the first seed's data: held-out AUC and
TPR at 1% FPR against the number of training pairs (crops per training photo) and of epochs,
written as ``learning_curve.png`` (and the numbers in the JSON), plus optional ablations
(backbone, pretrained ImageNet weights, learning rate, augmentation) scored the same way, and
under the demo's perturbations (JPEG-75).

    python benchmarks/mini_ldm_detection.py [--budget demo|full] [--seeds 0 1 2]
        [--methods ae lare2] [--output DIR]

``--budget demo`` (default) is the demo's settings with more held-out crops; ``full`` adds
points to the curve and the ablations (up to ~30 min on 2 CPU cores for ``ae``; ``lare2`` adds
several minutes per seed).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ldmdetect.detector import Detector
from ldmdetect.engine.demo import (
    DemoConfig,
    DemoRecipe,
    demo_train_config,
    resolve_generator,
    run_demo,
)
from ldmdetect.engine.evaluate import Evaluation, evaluate
from ldmdetect.engine.reconstruct import ReconstructConfig, build_aligned_dataset
from ldmdetect.engine.train import TrainConfig, train_detector
from ldmdetect.io.augment import AugmentConfig
from ldmdetect.io.files import atomic_path, atomic_write_text

METRICS = ("auc", "ap", "tpr@fpr=0.01")
INTERVAL_METRICS = ("auc", "tpr@fpr=0.01")
# >= 100 held-out reals: the held-out photos (2 for the mini LDM) x this many crops each.
EVAL_CROPS_PER_IMAGE = 64
# The method the learning curve and the ablations are of: one that trains on the demo's
# aligned pairs (their count is the curve's x axis).
CURVE_METHOD = "ae"


def _curve_recipe(**settings: Any) -> dict[str, DemoRecipe]:
    """``DemoConfig.method_settings`` with the curve method's demo recipe changed."""
    return {CURVE_METHOD: replace(DemoConfig().recipe(CURVE_METHOD), **settings)}


@dataclass(frozen=True)
class Budget:
    """How much of the benchmark to run: the seeds' demo rows, then the ``ae`` curve."""

    seeds: tuple[int, ...] = (0, 1, 2)
    methods: tuple[str, ...] = (CURVE_METHOD,)
    # Learning curve: crops per training photo (at the demo's epochs), and epochs (at the
    # demo's crops); the demo's own point comes from the first seed's run.
    curve_crops: tuple[int, ...] = (8, 16)
    curve_epochs: tuple[int, ...] = (3, 5)
    # Ablations: TrainConfig overrides, each trained on the demo's pairs and scored 1-try.
    ablations: tuple[dict[str, Any], ...] = ()
    demo: DemoConfig = field(
        default_factory=lambda: DemoConfig(eval_crops_per_image=EVAL_CROPS_PER_IMAGE)
    )


BUDGETS: dict[str, Budget] = {
    "demo": Budget(),
    # Twice the demo's training crops, its epochs; the curve shows what crops and epochs
    # buy, and the ablations the demo's former backbone (resnet18 from random weights), the
    # library's default augmentation and the former learning rate on the same pairs.
    "full": Budget(
        curve_crops=(8, 16, 32),
        curve_epochs=(1, 5, 10),
        ablations=(
            {"backbone": "resnet18", "pretrained": False, "lr": None},
            # The library's default augmentation (AugmentConfig): more and stronger JPEG,
            # its grid shifted, where the demo's ae uses lighter JPEG (AEDemo.augment).
            {"augment": "jpeg_prob=0.5,jpeg_quality=50-100,jpeg_grid_shift=1"},
            {"lr": 1e-3},
        ),
        demo=DemoConfig(eval_crops_per_image=EVAL_CROPS_PER_IMAGE, train_crops_per_image=64),
    ),
    # Seconds, to check the benchmark itself (tiny crops, one epoch); numbers mean nothing.
    "smoke": Budget(
        seeds=(0, 1),
        curve_crops=(2,),
        curve_epochs=(1,),
        demo=DemoConfig(
            train_crops_per_image=4,
            eval_crops_per_image=6,
            generated_images=6,
            generation_steps=2,
            method_settings=_curve_recipe(epochs=2),
            # Enough shipped photo crops to resolve the 1% threshold (99), not all 1,384.
            photo_limit=100,
        ),
    ),
}


# ----------------------------------------------------------------------------------- seed rows


def row_intervals(evaluation: Evaluation, method: str) -> dict[str, dict[str, list[float]]]:
    """Bootstrap intervals per row, labelled like ``engine.demo.summary_table``'s rows."""
    rows = {}
    for condition in evaluation.conditions():
        intervals = condition.intervals or {"generators": {}}
        for test_set, values in intervals["generators"].items():
            rows[f"{method} / {test_set} / {condition.name}"] = {
                k: [round(x, 4) for x in values[k]] for k in INTERVAL_METRICS if k in values
            }
    return rows


def aggregate(per_seed: dict[int, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Mean and sample standard deviation (ddof=1) over seeds, per row and metric."""
    seeds = sorted(per_seed)
    rows: dict[str, dict[str, Any]] = {}
    for label in per_seed[seeds[0]]["table"]:
        values = {m: [per_seed[s]["table"][label][m] for s in seeds] for m in METRICS}
        row: dict[str, Any] = {}
        for metric, v in values.items():
            row[metric] = {
                "mean": round(float(np.mean(v)), 4),
                "std": round(float(np.std(v, ddof=1)), 4) if len(v) > 1 else None,
                "per_seed": [round(float(x), 4) for x in v],
            }
        row["ci95_per_seed"] = [per_seed[s]["intervals"].get(label) for s in seeds]
        row["seconds_per_image"] = round(
            float(np.mean([per_seed[s]["table"][label]["seconds_per_image"] for s in seeds])), 4
        )
        rows[label] = row
    return rows


# ------------------------------------------------------------------------------ learning curve


def _curve_train_config(cfg: DemoConfig, **overrides: Any) -> TrainConfig:
    """The demo's training settings of the curve's method (its demo recipe), with overrides
    (``augment`` as a ``--augment`` spec string, so that the JSON states it)."""
    if isinstance(overrides.get("augment"), str):
        overrides = overrides | {"augment": AugmentConfig.from_spec(overrides["augment"])}
    return replace(demo_train_config(cfg, CURVE_METHOD), **overrides)


def _score_point(
    run_dir: Path, detector_dir: Path, perturbations: tuple[str, ...] = ()
) -> dict[str, Any]:
    """1-try held-out AUC / TPR@1%FPR of a detector on the seed run's test sets, clean and
    under each of ``perturbations`` (keyed by the perturbation)."""
    data = run_dir / "data"
    evaluation = evaluate(
        Detector.from_pretrained(detector_dir, device="cpu"),
        [data / "heldout" / "real"],
        {
            "generated": [data / "generated"],
            "reconstructed (held-out)": [data / "heldout" / "reconstructed"],
        },
        perturbations=perturbations,
        tries=(1,),
        n_boot=200,
    )
    point: dict[str, Any] = {}
    clean, *perturbed = evaluation.conditions()
    for test_set, metrics in clean.generators.items():
        point[test_set] = {m: round(metrics[m], 4) for m in METRICS}
        intervals = clean.intervals["generators"][test_set]
        for metric, key in (("auc", "auc_ci95"), ("tpr@fpr=0.01", "tpr_ci95")):
            point[test_set][key] = [round(x, 4) for x in intervals[metric]]
    for condition in perturbed:
        point[condition.name.removesuffix(", 1-try")] = {
            test_set: {m: round(metrics[m], 4) for m in METRICS}
            for test_set, metrics in condition.generators.items()
        }
    return point


def _train_point(
    run_dir: Path,
    pairs: Path,
    output: Path,
    train: TrainConfig,
    perturbations: tuple[str, ...] = (),
) -> dict[str, Any]:
    start = time.perf_counter()
    detector = train_detector([pairs], output, train)
    point = _score_point(run_dir, output, perturbations)
    point["train_pairs"] = detector.config.training["pairs"]["train"]
    point["epochs"] = train.epochs
    point["seconds"] = round(time.perf_counter() - start, 1)
    return point


def learning_curve(
    run_dir: Path, cfg: DemoConfig, budget: Budget, demo_point: dict[str, Any]
) -> dict[str, Any]:
    """Held-out AUC against training pairs and against epochs, the curve's method, first
    seed's data."""
    pipeline, _ = resolve_generator(cfg.generator, run_dir, cfg.seed)
    train_photos = run_dir / "photos" / "train"
    work = run_dir / "curve"
    by_pairs = [demo_point]
    for crops in budget.curve_crops:
        pairs = work / f"pairs-{crops}"
        build_aligned_dataset(
            [train_photos],
            pairs,
            autoencoder=pipeline,
            subfolder="vae",
            config=ReconstructConfig(
                crop_size=cfg.input_size, crops_per_image=crops, seed=cfg.seed
            ),
            device="cpu",
        )
        point = _train_point(
            run_dir, pairs, work / f"{CURVE_METHOD}-crops-{crops}", _curve_train_config(cfg)
        )
        by_pairs.append(point | {"crops_per_image": crops})
    by_epochs = [demo_point]
    for epochs in budget.curve_epochs:
        point = _train_point(
            run_dir,
            run_dir / "data" / "train",
            work / f"{CURVE_METHOD}-epochs-{epochs}",
            _curve_train_config(cfg, epochs=epochs),
        )
        by_epochs.append(point | {"crops_per_image": cfg.train_crops_per_image})
    ablations = []
    for i, overrides in enumerate(budget.ablations):
        point = _train_point(
            run_dir,
            run_dir / "data" / "train",
            work / f"{CURVE_METHOD}-ablation-{i}",
            _curve_train_config(cfg, **overrides),
            cfg.perturbations,  # JPEG-75 too: one ablation is the augmentation
        )
        ablations.append(point | {"overrides": overrides})
    return {
        "by_pairs": sorted(by_pairs, key=lambda p: p["train_pairs"]),
        "by_epochs": sorted(by_epochs, key=lambda p: p["epochs"]),
        "ablations": ablations,
    }


def plot_learning_curve(curve: dict[str, Any], path: Path) -> Path:
    """Held-out AUC (top) and TPR at 1% FPR (bottom) against training pairs (left) and epochs
    (right), for generated images and held-out reconstructions, each with its 95% bootstrap
    band. TPR gets its own row because AUC sits near 1 well before the headline TPR does."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 6.4), layout="constrained")
    FigureCanvasAgg(fig)
    panels = (("by_pairs", "train_pairs", "training pairs"), ("by_epochs", "epochs", "epochs"))
    rows = (("auc", "auc_ci95", "AUC"), ("tpr@fpr=0.01", "tpr_ci95", "TPR@1%FPR"))
    for r, (metric, band, name) in enumerate(rows):
        for c, (key, x_key, x_label) in enumerate(panels):
            ax = fig.add_subplot(2, 2, 2 * r + c + 1)
            points = curve[key]
            x = [p[x_key] for p in points]
            lows = []
            for test_set, marker in (("generated", "o"), ("reconstructed (held-out)", "s")):
                y = np.array([p[test_set][metric] for p in points])
                ax.plot(x, y, marker=marker, label=test_set)
                if all(band in p[test_set] for p in points):  # older JSON: AUC bands only
                    ci = np.array([p[test_set][band] for p in points])
                    ax.fill_between(x, ci[:, 0], ci[:, 1], alpha=0.15)
                    lows.append(ci[:, 0].min())
                lows.append(y.min())
            ax.set_xscale("log", base=2)
            ax.set_xlabel(f"{x_label} (log scale)")
            ax.set_ylabel(f"held-out {name}, 1-try")
            ax.set_ylim(max(0.0, min(0.5, min(lows)) - 0.02), 1.0)
            ax.grid(alpha=0.3)
            ax.legend(loc="lower right", fontsize=8)
    fig.suptitle(
        f"{CURVE_METHOD} on the mini LDM: held-out AUC and TPR@1%FPR vs. training pairs and epochs "
        "(seed 0, 95% bootstrap bands)",
        fontsize=10,
    )
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    return path


# ------------------------------------------------------------------------------------------ main


def run(output: Path, budget: Budget, generator: str) -> dict[str, Any]:
    start = time.perf_counter()
    per_seed: dict[int, dict[str, Any]] = {}
    seconds: dict[int, dict[str, float]] = {}
    first_run: Path | None = None
    demo_point: dict[str, Any] | None = None
    for seed in budget.seeds:
        cfg = replace(budget.demo, generator=generator, seed=seed, methods=budget.methods)
        run_dir = output / f"seed-{seed}"
        result = run_demo(run_dir, cfg, log=lambda _: None)
        intervals = {}
        for method, evaluation in result.evaluations.items():
            intervals |= row_intervals(evaluation, method)
        per_seed[seed] = {"table": result.table, "intervals": intervals}
        seconds[seed] = result.seconds
        if first_run is None:
            first_run = run_dir
            trained = result.detector_dirs[CURVE_METHOD]
            detector = Detector.from_pretrained(trained, device="cpu")
            demo_point = _score_point(run_dir, trained) | {
                "train_pairs": detector.config.training["pairs"]["train"],
                "epochs": detector.config.training["config"]["epochs"],
                "crops_per_image": cfg.train_crops_per_image,
            }
        print(f"seed {seed} done after {time.perf_counter() - start:.0f} s", file=sys.stderr)
    first_cfg = replace(budget.demo, generator=generator, seed=budget.seeds[0])
    curve = learning_curve(first_run, first_cfg, budget, demo_point)
    figure = plot_learning_curve(curve, output / "learning_curve.png")
    first = per_seed[budget.seeds[0]]
    n_real = None
    if first["table"]:
        n_real = len(list((first_run / "data" / "heldout" / "real").glob("*.png")))
    return {
        "benchmark": "mini_ldm_detection",
        "seeds": list(budget.seeds),
        "held_out_reals": n_real,
        "rows": aggregate(per_seed),
        "learning_curve": curve,
        "learning_curve_png": str(figure),
        "seconds_per_stage": seconds,
        "seconds_total": round(time.perf_counter() - start, 1),
        "config": asdict(replace(budget.demo, generator=generator, methods=budget.methods)),
        "budget": {k: v for k, v in asdict(budget).items() if k != "demo"},
        "torch_threads": budget.demo.threads or torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", choices=sorted(BUDGETS), default="demo")
    parser.add_argument("--generator", default="mini")
    parser.add_argument("--seeds", type=int, nargs="+", default=None)
    parser.add_argument("--methods", nargs="+", default=None, help=f"default: {CURVE_METHOD}")
    parser.add_argument("--output", default=None, help="keep the runs here (default: temp)")
    args = parser.parse_args()
    budget = BUDGETS[args.budget]
    if args.seeds:
        budget = replace(budget, seeds=tuple(args.seeds))
    if args.methods:
        if CURVE_METHOD not in args.methods:
            raise SystemExit(
                f"--methods must include {CURVE_METHOD} (the learning curve is {CURVE_METHOD}'s)"
            )
        budget = replace(budget, methods=tuple(args.methods))
    with tempfile.TemporaryDirectory() as tmp:
        output = Path(args.output or tmp)
        output.mkdir(parents=True, exist_ok=True)
        result = run(output, budget, args.generator)
        text = json.dumps(result, indent=2)
        atomic_write_text(output / "benchmark.json", text)
    print(text)


if __name__ == "__main__":
    main()
