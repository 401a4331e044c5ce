"""Attribution with the family head's training seeds read as one: the heads a finished
``benchmarks/attribution.py`` run and its ``benchmarks/attribution_seed.py`` seeds trained,
combined by ``ldmdetect ensemble`` (their mean probability), calibrated on the run's
calibration crops and asked on the run's test sets exactly as each seed's head is.

Why: the single head's 1% threshold, set on the calibration crops, moved from 0.403 (seed 0)
to 0.709 (seed 1), and with it a third of the held-out reconstructions' answers. An ensemble
is what a user can do about a training run's chance; this measures how much of the swing it
takes out, and at what level. Nothing here is chosen on a test row: the members are every
trained seed of the head in the work directory (or those named), and every operating point is
set on the calibration crops as for a single head.

Heads trained on larger views (``benchmarks/attribution_views.py``) combine alike, named with
``--member``; they are asked at one view per image, as each of them is.

    python benchmarks/attribution_ensemble.py --work runs/attribution [--no-outliers]
        [--member DIR ...] [--threads 1] [--output benchmarks/results/attribution-ensemble-cpu.json]
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from attribution import BUDGETS, Budget, repository_relative
from attribution_seed import ask, parse_run_args, run_parser
from attribution_views import views_for
from cross_family import emit

from ldmdetect.config import DetectorConfig
from ldmdetect.engine.ensemble import ensemble_detectors


def trained_heads(work: Path, *, outliers: bool = True) -> list[Path]:
    """Every trained seed of the head in a run's directory: the run's own (seed 0) and each
    ``head-seed<N>`` an ``attribution_seed.py`` run left, in seed order."""
    name = "two-family" if outliers else "two-family-no-oe"
    suffix = "" if outliers else "-no-oe"

    def seed_of(path: Path) -> int:
        return int(path.parent.name.removeprefix("head-seed").removesuffix(suffix))

    seeds = [
        p / "trained"
        for p in work.glob(f"head-seed*{suffix}")
        if (p / "trained" / "config.json").is_file()
        and p.name.removeprefix("head-seed").removesuffix(suffix).isdigit()
    ]
    return [work / "detectors-trained" / name, *sorted(seeds, key=seed_of)]


def member_size(members: Sequence[Path]) -> int:
    """The members' crop side (``ensemble_detectors`` refuses members that differ)."""
    return DetectorConfig.load(members[0]).input_size


def run(
    work: Path, members: Sequence[Path], out: Path, budget: Budget = BUDGETS["cpu"]
) -> dict[str, Any]:
    """Combine ``members``, calibrate on the run's calibration crops at the views their
    crop size takes (``attribution_views.views_for``: the recipe's for the run's heads, one
    for heads trained on the test crops' whole side), ask; the JSON's content."""
    start = time.perf_counter()
    tries = views_for(member_size(members), budget)
    ensemble_detectors(
        members, out / "calibrated", reals=[work / "calibration"], tries=tries, device="cpu"
    )
    return {
        "benchmark": "attribution, the family head's training seeds as one ensemble",
        "work": str(work),
        "members": [str(m) for m in members],
        "views_per_image": tries,
        **ask(work, out / "calibrated", out, tries, budget.n_boot),
        "seconds_total": round(time.perf_counter() - start, 1),
        "torch_threads": torch.get_num_threads(),
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = run_parser(__doc__.splitlines()[0])
    parser.add_argument(
        "--member",
        type=Path,
        action="append",
        default=None,
        help="a trained head to combine (repeatable; default: every trained seed in --work)",
    )
    args = parse_run_args(parser, argv)
    members = args.member or trained_heads(args.work, outliers=not args.no_outliers)
    if len(members) < 2:
        parser.error(
            f"{args.work}: one trained head; train another seed first "
            "(benchmarks/attribution_seed.py --seed 1)"
        )
    size = member_size(members)
    out = args.work / (
        f"ensemble{len(members)}"
        + ("-no-oe" if args.no_outliers else "")
        + ("" if size == BUDGETS["cpu"].demo.input_size else f"-views{size}")
    )
    result = run(args.work, members, out)
    return emit(repository_relative(result), args.output)


if __name__ == "__main__":
    main()
