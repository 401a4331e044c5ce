"""How much of the attribution benchmark's result is the training run: the Outlier Exposure
head (or, with ``--no-outliers``, the head without it) retrained with another training seed on
a finished run's data, calibrated and asked as ``benchmarks/attribution.py`` asks it (same
calibration crops, views and test rows).

Needs the work directory of a full ``benchmarks/attribution.py --work DIR`` run. The seed
moves the head's initial weights and batch order only; the data, splits and thresholds'
calibration data are the run's.

    python benchmarks/attribution_seed.py --work runs/attribution --seed 1 [--no-outliers]
        [--threads 1] [--output benchmarks/results/attribution-seed1-cpu.json]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from attribution import (
    BUDGETS,
    Budget,
    attribute_sets,
    head_summary,
    pair_sets,
    repository_relative,
    source_sets,
)
from cross_family import emit

from ldmdetect.detector import Detector
from ldmdetect.engine.calibrate import calibrate_detector
from ldmdetect.engine.demo_recipes import demo_train_config
from ldmdetect.engine.train import train_detector


def run(
    work: Path, seed: int, budget: Budget = BUDGETS["cpu"], *, outliers: bool = True
) -> dict[str, Any]:
    """Train, calibrate and ask the head (``budget``: the run's; ``outliers``: with Outlier
    Exposure); returns the JSON's content."""
    start = time.perf_counter()
    cfg = replace(budget.demo, seed=0)
    config = replace(demo_train_config(cfg, "ae"), seed=seed)
    families = [p.name for p in sorted((work / "generated-train").iterdir())]
    out = work / (f"head-seed{seed}" + ("" if outliers else "-no-oe"))
    if not (out / "trained" / "config.json").is_file():
        train_detector(
            pair_sets(work, "both"),
            out / "trained",
            config,
            generated=[(f, work / "generated-train" / f) for f in families],
            outliers=pair_sets(work, "outliers") if outliers else (),
        )
    tries = cfg.recipe("ae").calibration_tries
    calibrate_detector(
        out / "trained", [work / "calibration"], out / "calibrated", tries=tries, device="cpu"
    )
    return {
        "benchmark": "attribution, another training seed of the family head",
        "outlier_exposure": outliers,
        "work": str(work),
        "train_seed": seed,
        **ask(work, out / "calibrated", out, tries),
        "seconds_total": round(time.perf_counter() - start, 1),
        "torch_threads": torch.get_num_threads(),
    }


def ask(work: Path, calibrated: Path, out: Path, tries: int) -> dict[str, Any]:
    """The calibrated head at ``calibrated`` asked on the run's test sets as
    ``benchmarks/attribution.py`` asks its head (the held-out photos' rows, then the held-out
    sources' where the run made them); figures go under ``out``."""
    head = Detector.from_pretrained(calibrated, device="cpu")
    families = [p.name for p in sorted((work / "generated-train").iterdir())]
    unseen = sorted(p.name for p in (work / "heldout-unseen").iterdir())
    recon = work / "heldout" / "reconstructed"
    groups = {
        "reconstructed": {f"reconstructed by {f}": (f, recon / f) for f in families}
        | {
            f"reconstructed by {t} (unseen)": (t, work / "heldout-unseen" / t / "reconstructed")
            for t in unseen
        }
    }
    asked = attribute_sets(head, work / "heldout" / "real", groups, tries, out, cross_check=False)
    on_sources = None
    if (work / "heldout-sources").is_dir():  # the run's held-out sources, asked alike
        unseen_sources = sorted(p.name for p in (work / "heldout-sources-unseen").iterdir())
        group = source_sets(work, families, unseen_sources)
        on_sources = attribute_sets(
            head,
            work / "heldout-sources" / "real",
            {"held-out-sources": group},
            tries,
            out / "sources",
            cross_check=False,
        )["rows"]
    return {
        **head_summary(head),
        "thresholds": head.config.thresholds,
        "attribution": asked["rows"],
        "confusion": asked["confusion"],
        "closed_set": asked["closed_set"],
        "held_out_sources": on_sources,
    }


def run_parser(description: str) -> argparse.ArgumentParser:
    """The options of every script that asks a finished run's heads again."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--work", type=Path, required=True, help="a finished run's directory")
    parser.add_argument(
        "--no-outliers", action="store_true", help="the head without Outlier Exposure"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--output", type=Path, default=None, help="write the JSON here too")
    return parser


def parse_run_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> Any:
    """``parser``'s arguments, torch's threads set, the work directory checked."""
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if not (args.work / "heldout-unseen").is_dir():
        parser.error(f"{args.work}: not the work directory of a finished attribution run")
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = run_parser(__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1, help="the head's training seed")
    args = parse_run_args(parser, argv)
    result = run(args.work, args.seed, outliers=not args.no_outliers)
    return emit(repository_relative(result), args.output)


if __name__ == "__main__":
    main()
