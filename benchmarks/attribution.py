"""Attribution benchmark: does the ``ae`` family head say which family made an image?

In miniature with the two shipped generators, the mini LDM (``mini``: SD layout, 4-channel
factor-4 autoencoder) and the flow-matching mini generator (``mini-flow``: SD3 layout,
16-channel factor-4 autoencoder):

1. The training photos (the generators' own training subjects) are reconstructed through both
   autoencoders into one aligned dataset, each reconstruction tagged with its family, as the
   demo builds ``ae``'s data (64 px crops at native and half scale, JPEG-aligned); each
   generator also makes training images from the training photos' captions and training
   seeds (as the demo makes ``lare2``'s). ``ae`` trains on both with the demo's recipe and
   learns a family head (real + one class per family), its open-set threshold calibrated on
   the validation split's reconstructions and generations, and its novelty statistics
   (class means and shared covariance of the penultimate embedding) on the training split.
2. For the binary comparison, the same recipe trains one single-family detector per family on
   that family's reconstructions alone. Every detector's thresholds are then set as the demo
   sets ``ae``'s: on the shipped calibration split's photo crops (sources the test photos are
   not), on the mean of the recipe's 20 views per image, which attribution then uses too;
   those crops' reconstructions through both families re-derive the head's open-set
   threshold at the same views (``ldmdetect calibrate`` with an aligned dataset), and the
   crops themselves its novelty threshold (1% of them novel).
3. Test images, none seen in training: the held-out subjects' photos (128 px crops) and their
   reconstructions through each family's autoencoder and through two autoencoders the head
   never saw (``tiny-random``: a tiny random autoencoder; ``mini-perturbed``: the mini LDM's
   autoencoder with its decoder weights perturbed by 2% of each tensor's spread, a sibling
   as SDXL's retrained KL-f8 is to SD's), and each generator's images from the demo's
   unseen prompts and seeds.
4. Reported, through ``evaluate(..., families=..., cross_check=True)`` as users get it:
   attribution accuracy per family (held-out reconstructions, generations) with its
   confusion matrix (an ``unknown`` column, and ``real`` for images judged real and not
   novel), the unseen autoencoders and the held-out reals as rows of their own (the shares
   called unknown, real or a known family); binary AUC (held-out reals vs. each family's
   generations and reconstructions, 95% bootstrap intervals) of the two-family detector next
   to each single-family one; and AEROBLADE's nearest autoencoder (both families'
   autoencoders) on the generations, its agreement with the family head.

Decisions use each detector's stored threshold at 1% FPR where its calibration resolved one,
else the raw 0.5 rule (said in the JSON per detector).

    python benchmarks/attribution.py [--seed 0] [--quick] [--threads N]
        [--work runs/attribution] [--output benchmarks/results/attribution-cpu.json]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from cross_family import emit, write_prompted, write_unseen

from ldmdetect.attribution import NOVELTY_NAME
from ldmdetect.detector import Detector
from ldmdetect.engine.attribution_report import plot_confusion_matrix
from ldmdetect.engine.calibrate import calibrate_detector
from ldmdetect.engine.demo import DemoConfig, resolve_generator, split_photos
from ldmdetect.engine.demo_photos import photo_sets
from ldmdetect.engine.demo_recipes import demo_train_config
from ldmdetect.engine.evaluate import evaluate
from ldmdetect.engine.evaluate_attribution import matrix_from_section
from ldmdetect.engine.reconstruct import (
    ReconstructConfig,
    build_aligned_dataset,
    read_aligned_dataset,
)
from ldmdetect.engine.train import (
    TrainConfig,
    family_generations,
    novelty_statistics,
    split_by_source,
    split_examples,
    train_detector,
)
from ldmdetect.generative.autoencoder import load_autoencoder
from ldmdetect.generative.tiny import build_tiny_autoencoder
from ldmdetect.io.samples import write_sample_photos
from ldmdetect.methods.demo_recipe import TRAIN_SEED_OFFSET, training_prompts

PERTURBATION = 0.02  # decoder weights += N(0, (0.02 * the tensor's std)^2)
REPOSITORY = Path(__file__).resolve().parents[1]


def repository_relative(content: Any) -> Any:
    """``content`` with every path inside this repository (the shipped generators) written
    relative to its root, so the JSON reads the same wherever the repository lives."""
    root = f"{REPOSITORY}{os.sep}"
    if isinstance(content, str):
        return content.removeprefix(root)
    if isinstance(content, dict):
        return {k: repository_relative(v) for k, v in content.items()}
    if isinstance(content, list):
        return [repository_relative(v) for v in content]
    return content


@dataclass(frozen=True)
class Budget:
    demo: DemoConfig = field(
        default_factory=lambda: DemoConfig(synris=False, other_generator=None, photo_crops=False)
    )
    heldout_crops: int = 16  # 128 px crops per held-out photo (and its reconstructions)
    n_boot: int = 1000
    # Shipped calibration-split photo crops (other sources than the test's; 0 = all 737)
    # that set every detector's thresholds and the family head's open-set threshold.
    calibration_limit: int = 0


BUDGETS = {
    "cpu": Budget(),
    "quick": Budget(
        demo=DemoConfig(
            synris=False,
            other_generator=None,
            photo_crops=False,
            train_crops_per_image=4,
            generated_images=8,
            generated_train_images=8,
            generation_steps=10,
        ),
        heldout_crops=4,
        n_boot=200,
        calibration_limit=40,
    ),
}


def write_unseen_autoencoders(work: Path, family: str, pipeline: str, seed: int) -> dict[str, Path]:
    """The two autoencoders no detector trains on, saved as autoencoder folders: a tiny random
    one, and ``family``'s (from ``pipeline``) with its decoder weights perturbed."""
    out = {}
    tiny = build_tiny_autoencoder(seed=seed + 7)
    out["tiny-random"] = work / "autoencoders" / "tiny-random"
    tiny.save_pretrained(out["tiny-random"])
    vae = load_autoencoder(pipeline, subfolder="vae", device="cpu")
    generator = torch.Generator().manual_seed(seed + 11)
    with torch.no_grad():
        for parameter in vae.decoder.parameters():
            if parameter.numel() > 1:
                noise = torch.randn(parameter.shape, generator=generator)
                parameter.add_(noise * PERTURBATION * parameter.std())
    out[f"{family}-perturbed"] = work / "autoencoders" / f"{family}-perturbed"
    vae.save_pretrained(out[f"{family}-perturbed"])
    return out


def write_training_generations(
    pipeline: str, output: Path, cfg: DemoConfig, photos: Sequence[Path]
) -> Path:
    """The generator's training images as the demo makes ``lare2``'s: the captions of the
    training photos' subjects, seeds from ``TRAIN_SEED_OFFSET`` (the test set's prompts are
    ``UNSEEN_PROMPTS`` and its seeds ``SEED_OFFSET``-based: disjoint from both)."""
    return write_prompted(
        pipeline,
        output,
        cfg,
        training_prompts(pipeline, list(photos)),
        TRAIN_SEED_OFFSET,
        cfg.generated_train_images,
    )


def add_novelty(
    directory: Path,
    data: Sequence[Path],
    generated: Sequence[tuple[str, Path]],
    config: TrainConfig,
) -> None:
    """Write a trained family head's novelty statistics as ``train_detector`` fits them:
    on the training split it trained on (same seed, same validation share), the threshold on
    the validation split's real crops."""
    detector = Detector.from_pretrained(directory, device=config.device)
    pairs = [p for d in data for p in read_aligned_dataset(d)]
    train_pairs, val_pairs = split_by_source(pairs, config.val_fraction, config.seed)
    examples = family_generations(generated, detector.families)
    train_generated, _ = split_examples(examples, config.val_fraction, config.seed)
    novelty = novelty_statistics(detector, train_pairs, train_generated, val_pairs)
    if novelty is not None:
        novelty.save(directory)


def decision_fpr(detector: Detector) -> float | None:
    """1% where the detector's calibration resolved that threshold, else None (0.5 rule)."""
    return 0.01 if "fpr_0.01" in detector.config.resolved_fprs() else None


def run(
    work: Path,
    budget: Budget,
    seed: int,
    log: Callable[[str], None] | None = None,
    generators: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Everything above; returns the JSON's content. ``generators``: {family: --generator
    value} (default: the two shipped ones)."""
    log = log or (lambda message: print(message, file=sys.stderr))
    start = time.perf_counter()
    cfg = replace(budget.demo, seed=seed)
    names = dict(generators or {"mini": "mini", "mini-flow": "mini-flow"})
    pipelines = {}
    heldout: tuple[str, ...] = ()
    for family, name in names.items():
        pipelines[family], own = resolve_generator(name, work, seed)
        heldout = heldout or own
    photos = write_sample_photos(work / "photos")
    splits = split_photos(photos, cfg.heldout_subjects or heldout, cfg.heldout_count, seed)
    seconds: dict[str, float] = {}
    clock = [time.perf_counter()]

    def step(name: str) -> None:
        now = time.perf_counter()
        seconds[name] = round(now - clock[0], 1)
        clock[0] = now

    # 1-2. Training data: every training crop through both autoencoders, and alone.
    log(f"reconstruct {len(splits['train'])} training photos through {', '.join(names)}")
    pair_config = ReconstructConfig(
        crop_size=cfg.input_size,
        crops_per_image=cfg.train_crops_per_image,
        seed=seed,
        scales=cfg.pair_scales,
        align_jpeg=cfg.align_jpeg,
    )
    train_photos = work / "photos-train"
    train_photos.mkdir(parents=True, exist_ok=True)
    for photo in splits["train"]:
        (train_photos / photo.name).write_bytes(photo.read_bytes())
    both = work / "pairs" / "both"
    build_aligned_dataset(
        [train_photos],
        both,
        autoencoder=[(family, pipelines[family]) for family in names],
        subfolder="vae",
        config=pair_config,
        device=cfg.device,
    )
    single = {}
    for family in names:
        single[family] = work / "pairs" / family
        build_aligned_dataset(
            [train_photos],
            single[family],
            autoencoder=[(family, pipelines[family])],
            subfolder="vae",
            config=pair_config,
            device=cfg.device,
        )
    step("reconstruct_train")

    # The family head also learns each family from its generator's own images (training
    # captions and seeds); the single-family detectors keep the demo's data.
    log(f"each generator's {cfg.generated_train_images} training images from training captions")
    train_generated = {
        family: write_training_generations(
            pipelines[family], work / "generated-train" / family, cfg, splits["train"]
        )
        for family in names
    }
    step("generate_train")

    train_config = demo_train_config(cfg, "ae")
    data = {"two-family": [both]} | {family: [single[family]] for family in names}
    extra = {"two-family": list(train_generated.items())}
    trained = work / "detectors-trained"
    for name, sets in data.items():
        if (trained / name / "config.json").is_file():  # a resumed run keeps its training
            log(f"kept the trained ae detector '{name}'")
            continue
        log(f"train ae '{name}' on {', '.join(str(d.name) for d in sets)}")
        train_detector(sets, trained / name, train_config, generated=extra.get(name, ()))
    if not (trained / "two-family" / NOVELTY_NAME).is_file():
        # A head trained before its novelty statistics (a resumed run): fit them as
        # training does, on the same splits.
        log("fit the family head's novelty statistics on its training split")
        add_novelty(trained / "two-family", [both], extra["two-family"], train_config)
    step("train")

    # Thresholds as the demo sets ae's: on other sources' photos (the shipped calibration
    # split), with the recipe's views per image; their reconstructions through both families
    # re-derive the family head's open-set threshold at those views.
    tries = cfg.recipe("ae").calibration_tries
    calibration_photos = photo_sets(
        work, replace(cfg, photo_limit=budget.calibration_limit), splits
    ).calibration(costly=False)
    calibration = work / "calibration"
    log(f"reconstruct {len(calibration_photos.files)} calibration crops through both families")
    build_aligned_dataset(
        [calibration_photos.root],
        calibration,
        autoencoder=[(family, pipelines[family]) for family in names],
        subfolder="vae",
        config=ReconstructConfig(crop_size=cfg.eval_size, crops_per_image=1, seed=seed + 3),
        device=cfg.device,
    )
    detectors = {name: work / "detectors" / name for name in data}
    for name in data:
        if (detectors[name] / "config.json").is_file():  # a resumed run keeps its calibration
            log(f"kept the calibrated ae detector '{name}'")
            continue
        log(f"calibrate '{name}' on the calibration crops, {tries} views each")
        calibrate_detector(
            trained / name, [calibration], detectors[name], tries=tries, device=cfg.device
        )
    step("calibrate")

    # 3. Test images.
    log("held-out crops through both families' autoencoders and two unseen ones")
    first = next(iter(names))
    unseen = write_unseen_autoencoders(work, first, pipelines[first], seed)
    heldout_photos = work / "photos-heldout"
    heldout_photos.mkdir(parents=True, exist_ok=True)
    for photo in splits["heldout"]:
        (heldout_photos / photo.name).write_bytes(photo.read_bytes())
    heldout_dir = work / "heldout"
    sources: list[tuple[str, Any]] = [(f, pipelines[f]) for f in names]
    build_aligned_dataset(
        [heldout_photos],
        heldout_dir,
        autoencoder=sources,
        subfolder="vae",
        config=ReconstructConfig(
            crop_size=cfg.eval_size, crops_per_image=budget.heldout_crops, seed=seed + 1
        ),
        device=cfg.device,
    )
    for tag, folder in unseen.items():
        build_aligned_dataset(
            [heldout_photos],
            work / "heldout-unseen" / tag,
            autoencoder=[(tag, str(folder))],
            config=ReconstructConfig(
                crop_size=cfg.eval_size, crops_per_image=budget.heldout_crops, seed=seed + 1
            ),
            device=cfg.device,
        )
    reals = heldout_dir / "real"
    recon = {f: heldout_dir / "reconstructed" / f for f in names}
    # one autoencoder: the dataset keeps the single-family layout, reconstructed/<pair>.png
    recon_unseen = {t: work / "heldout-unseen" / t / "reconstructed" for t in unseen}
    log(f"each generator's {cfg.generated_images} images from the unseen prompts")
    generated = {f: write_unseen(pipelines[f], work / "generated" / f, cfg) for f in names}
    step("test_images")

    # 4. Attribution with the family head, through `evaluate` as users get it: the held-out
    # reconstructions and the unseen autoencoders' in one matrix (a family the head does not
    # know is right when called "unknown"), the generations in another with AEROBLADE's
    # cross-check; decisions at the views the thresholds were calibrated for.
    head = Detector.from_pretrained(detectors["two-family"], device=cfg.device)
    fpr = decision_fpr(head)
    groups = {
        "reconstructed": {f"reconstructed by {f}": (f, d) for f, d in recon.items()}
        | {f"reconstructed by {t} (unseen)": (t, d) for t, d in recon_unseen.items()},
        "generated": {f"generated by {f}": (f, d) for f, d in generated.items()},
    }
    attribution_rows: dict[str, Any] = {}
    matrices: dict[str, Any] = {}
    cross_check: dict[str, Any] = {}
    for kind, sets in groups.items():
        evaluation = evaluate(
            head,
            [reals],
            {label: [folder] for label, (_, folder) in sets.items()},
            tries=(tries,),
            n_boot=0,
            family_fpr=fpr,
            families={label: truth for label, (truth, _) in sets.items()},
            cross_check=kind == "generated",
        )
        section = evaluation.result["attribution"]
        cm = matrix_from_section(section)
        plot_confusion_matrix(cm, work / f"confusion-{kind}.png")
        matrices[kind] = {"table": cm.to_dict(), "markdown": cm.to_markdown()}
        truths = {label: truth for label, (truth, _) in sets.items()} | {"real": "real"}
        for label, truth in truths.items():
            found = evaluation.families[label]
            shares = {
                answer: round(sum(x == answer for x in found) / len(found), 4)
                for answer in (*head.families, "unknown", None)
            }
            name = "real (held-out)" if label == "real" else label
            attribution_rows[name] = {
                "true": truth,
                "n": len(found),
                "accuracy": shares.get(truth) if truth in head.families else None,
                "shares": {("real" if k is None else k): v for k, v in shares.items()},
            }
        if "cross_check" in section:
            cross_check = section["cross_check"]
    step("attribute")

    # Binary: the family head's score against each single-family detector's.
    binary: dict[str, Any] = {}
    tests = {f"generated by {f}": [d] for f, d in generated.items()}
    tests |= {f"reconstructed by {f}": [d] for f, d in recon.items()}
    for name, directory in detectors.items():
        detector = Detector.from_pretrained(directory, device=cfg.device)
        evaluation = evaluate(detector, [reals], tests, tries=(1,), n_boot=budget.n_boot)
        clean = evaluation.conditions()[0]
        binary[name] = {
            test: {
                "auc": round(float(metrics["auc"]), 4),
                "ci95": [round(float(x), 4) for x in clean.intervals["generators"][test]["auc"]],
            }
            for test, metrics in clean.generators.items()
        } | {"decision_fpr": decision_fpr(detector)}
    step("binary")

    return {
        "benchmark": "attribution",
        "families": {f: pipelines[f] for f in names},
        "unseen_autoencoders": {t: str(p) for t, p in unseen.items()},
        # The family head's extra training data: each generator's images per family.
        "training_generations": {f: cfg.generated_train_images for f in train_generated},
        "perturbation": PERTURBATION,
        "family_threshold": head.config.family_threshold,
        "novelty": None
        if head.novelty is None
        else {"threshold": head.novelty.threshold, **dict(head.novelty.record)},
        "views_per_image": tries,
        "calibration_crops": len(calibration_photos.files),
        "decision_fpr": fpr,
        "attribution": attribution_rows,
        "confusion": matrices,
        "binary_auc": binary,
        "aeroblade_cross_check": cross_check,
        "seconds": seconds,
        "seconds_total": round(time.perf_counter() - start, 1),
        "config": {k: v for k, v in asdict(cfg).items() if k != "method_settings"}
        | {"ae_recipe": asdict(cfg.recipe("ae")), "heldout_crops": budget.heldout_crops},
        "seed": seed,
        "n_boot": budget.n_boot,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="a smoke run on fewer images")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--work", type=Path, default=None, help="keep the run here (default: temp)")
    parser.add_argument("--output", type=Path, default=None, help="write the JSON here too")
    args = parser.parse_args(argv)
    budget = BUDGETS["quick" if args.quick else "cpu"]
    budget = replace(budget, demo=replace(budget.demo, device=args.device))
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        result = run(work, budget, args.seed)
    return emit(repository_relative(result), args.output)


if __name__ == "__main__":
    main()
