"""Attribution benchmark: does the ``ae`` family head say which family made an image?

In miniature with the two shipped generators, the mini LDM (``mini``: SD layout, 4-channel
factor-4 autoencoder) and the flow-matching mini generator (``mini-flow``: SD3 layout,
16-channel factor-4 autoencoder):

1. The training photos (the generators' own training subjects) are reconstructed through both
   autoencoders into one aligned dataset, each reconstruction tagged with its family, as the
   demo builds ``ae``'s data (64 px crops at native and half scale, JPEG-aligned, of the
   training photos and of the shipped train split's crops of other sources' photos); each
   generator also makes training images from the training photos' captions and training
   seeds (as the demo makes ``lare2``'s). ``ae`` trains on both with the demo's recipe and
   learns a family head (real + one class per family + ``other``), its open-set threshold
   calibrated on the validation split's reconstructions and generations, and its novelty
   statistics (class means and shared covariance of the penultimate embedding) on the
   training split. The ``other`` class is Outlier Exposure (``train(..., outliers=...)``,
   ``ldmdetect train --outlier-data``): the training photos reconstructed through two
   auxiliary autoencoders that no test set uses (tiny random ones of other seeds, one SD-shaped
   with 4 latent channels, one SD3-shaped with 16), every reconstruction labelled ``other``.
   The same head without them (``two-family-no-oe``) is trained and asked too, for the
   comparison.
2. For the binary comparison, the same recipe trains one single-family detector per family on
   that family's reconstructions alone. Every detector's thresholds are then set as the demo
   sets ``ae``'s: on the shipped calibration split's photo crops (sources the test photos are
   not), on the mean of the recipe's 20 views per image, which attribution then uses too;
   those crops' reconstructions through both families re-derive the head's open-set
   threshold at the same views (``ldmdetect calibrate`` with an aligned dataset: their 1%
   point of family score, so a known family loses about 1% to "unknown"; the record lists
   the thresholds other points would set, the trade-off reported below), and the crops
   themselves its novelty threshold (1% of them novel). Every operating point is set on
   these calibration data, none on the test rows.
3. Test images, none seen in training: the held-out subjects' photos (128 px crops) and their
   reconstructions through each family's autoencoder and through three autoencoders the head
   never saw (``tiny-random``: a tiny random autoencoder of the auxiliary 4-channel one's
   configuration but another seed; ``tiny-wide``: a random autoencoder of a configuration no
   auxiliary one has, factor 4 as the known families, wider, 8 latent channels, two layers
   per block; ``mini-perturbed``: the mini LDM's autoencoder with its decoder weights
   perturbed by 2% of each tensor's spread, a sibling as SDXL's retrained KL-f8 is to
   SD's), and each generator's images from the demo's unseen prompts and seeds.
4. Reported, through ``evaluate(..., families=..., cross_check=True)`` as users get it:
   attribution accuracy per family (held-out reconstructions, generations) with its
   confusion matrix (an ``unknown`` column, and ``real`` for images judged real and not
   novel), the unseen autoencoders and the held-out reals as rows of their own (the shares
   called unknown, real or a known family), each row's exact (Clopper-Pearson) 95% interval,
   the closed-set accuracy beside the end-to-end one (the most probable known family,
   whatever the verdict: what the literature reports as attribution accuracy; the end-to-end
   figure stays the headline), the trade-off of the family threshold's operating point, and
   the head without Outlier Exposure on the same rows; binary AUC (held-out reals vs. each family's
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
from diffusers import AutoencoderKL

from ldmdetect.attribution import NOVELTY_NAME, TRADE_OFF_QUANTILES
from ldmdetect.detector import Detector
from ldmdetect.engine.attribution_report import accuracy_interval, plot_confusion_matrix
from ldmdetect.engine.calibrate import calibrate_detector
from ldmdetect.engine.demo import DemoConfig, resolve_generator, split_photos
from ldmdetect.engine.demo_photos import photo_sets
from ldmdetect.engine.demo_recipes import demo_train_config
from ldmdetect.engine.evaluate import evaluate
from ldmdetect.engine.evaluate_attribution import FamilyInputs, matrix_from_section
from ldmdetect.engine.reconstruct import (
    ReconstructConfig,
    build_aligned_dataset,
    read_aligned_dataset,
)
from ldmdetect.engine.train import TrainConfig, split_by_source, split_examples, train_detector
from ldmdetect.engine.train_families import family_generations, novelty_statistics, outlier_pairs
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
    demo: DemoConfig = field(default_factory=lambda: DemoConfig(synris=False, other_generator=None))
    heldout_crops: int = 64  # 128 px crops per held-out photo (and its reconstructions)
    # Crops per training photo reconstructed through the auxiliary autoencoders (the
    # outlier class's data; fewer than the families' own, to keep training's cost down).
    outlier_crops: int = 8
    # Crops of the shipped test split's photos (sources neither training nor calibration
    # saw, spread over all of them; 0 = none) asked as a second test set, with their
    # reconstructions: held-out photos of many sources, not two photos' crops.
    source_crops: int = 128
    # Also train, calibrate and ask the head without Outlier Exposure (the comparison).
    baseline_head: bool = True
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
        source_crops=4,
        outlier_crops=2,
        n_boot=200,
        calibration_limit=40,
    ),
}


def pair_sets(work: Path, name: str) -> list[Path]:
    """A training set's aligned datasets under ``work/pairs``: ``name`` (the training photos'
    crops) and ``name-crops`` where the run reconstructed the shipped train-split crops too."""
    return existing_sets(work / "pairs" / name)


def existing_sets(out: Path) -> list[Path]:
    """The aligned datasets :func:`aligned_sets` writes at ``out`` that exist: ``out`` (the
    training photos' crops) and ``out``-crops (the shipped train-split crops')."""
    return [d for d in (out, out.with_name(f"{out.name}-crops")) if d.is_dir()]


def aligned_sets(
    out: Path,
    train_photos: Path,
    crops: Path | None,
    autoencoder: Sequence[tuple[str, str]],
    subfolder: str | None,
    config: ReconstructConfig,
    device: str,
) -> list[Path]:
    """One training set's aligned datasets: ``train_photos`` (``config``'s crops each) at
    ``out`` and, where given, the shipped train-split ``crops`` (one pair each, as the demo
    cuts them) at ``out``-crops, both through ``autoencoder``: :func:`pair_sets`' list."""
    build_aligned_dataset(
        [train_photos],
        out,
        autoencoder=list(autoencoder),
        subfolder=subfolder,
        config=config,
        device=device,
    )
    if crops is not None:
        build_aligned_dataset(
            [crops],
            out.with_name(f"{out.name}-crops"),
            autoencoder=list(autoencoder),
            subfolder=subfolder,
            config=replace(config, crops_per_image=1, seed=config.seed + 2),
            device=device,
        )
    return existing_sets(out)


def write_auxiliary_autoencoders(work: Path, seed: int) -> dict[str, Path]:
    """The Outlier Exposure autoencoders the family head's ``other`` class trains on, saved
    as autoencoder folders: tiny random ones of seeds no test set uses, one SD-shaped (4
    latent channels), one SD3-shaped (16 latent channels, shift, no quant convolutions)."""
    out = {}
    models = {
        "aux-tiny-4ch": build_tiny_autoencoder(seed=seed + 101),
        "aux-tiny-16ch": build_tiny_autoencoder(
            seed=seed + 102, latent_channels=16, scaling_factor=1.5305, shift_factor=0.0609
        ),
    }
    for name, model in models.items():
        out[name] = work / "autoencoders" / name
        model.save_pretrained(out[name])
    return out


def build_wide_autoencoder(seed: int) -> AutoencoderKL:
    """A random autoencoder of a configuration no auxiliary one has: three blocks (factor 4,
    as the known families), wider, two layers per block, 8 latent channels."""
    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(16, 32, 32),
        layers_per_block=2,
        latent_channels=8,
        norm_num_groups=8,
        sample_size=64,
    ).eval()


def write_unseen_autoencoders(work: Path, family: str, pipeline: str, seed: int) -> dict[str, Path]:
    """The autoencoders no detector trains on, saved as autoencoder folders: a tiny random
    one (the auxiliary 4-channel configuration, another seed), a random one of another
    configuration, and ``family``'s (from ``pipeline``) with its decoder weights perturbed."""
    out = {}
    tiny = build_tiny_autoencoder(seed=seed + 7)
    out["tiny-random"] = work / "autoencoders" / "tiny-random"
    tiny.save_pretrained(out["tiny-random"])
    out["tiny-wide"] = work / "autoencoders" / "tiny-wide"
    build_wide_autoencoder(seed + 13).save_pretrained(out["tiny-wide"])
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
    outliers: Sequence[Path] = (),
) -> None:
    """Write a trained family head's novelty statistics as ``train_detector`` fits them:
    on the training split it trained on (same seed, same validation share; ``outliers``
    as its ``--outlier-data``), the threshold on the validation split's real crops."""
    detector = Detector.from_pretrained(directory, device=config.device)
    pairs = [p for d in data for p in read_aligned_dataset(d)]
    pairs += outlier_pairs(outliers, detector.families) if outliers else []
    train_pairs, val_pairs = split_by_source(pairs, config.val_fraction, config.seed)
    examples = family_generations(generated, detector.families)
    train_generated, _ = split_examples(examples, config.val_fraction, config.seed)
    novelty = novelty_statistics(detector, train_pairs, train_generated, val_pairs)
    if novelty is not None:
        novelty.save(directory)


def decision_fpr(detector: Detector) -> float | None:
    """1% where the detector's calibration resolved that threshold, else None (0.5 rule)."""
    return 0.01 if "fpr_0.01" in detector.config.resolved_fprs() else None


def head_summary(head: Detector) -> dict[str, Any]:
    """A family head's open-set settings as the JSON reports them: its classes, the family
    threshold with what it was set on and the trade-off record, its novelty statistics."""
    families = (head.config.calibration or {}).get("families") or {}
    return {
        "classes": list(head.classes),
        "family_threshold": head.config.family_threshold,
        "family_threshold_on": families.get("threshold_on"),
        "family_quantile": families.get("quantile"),
        "novelty": None
        if head.novelty is None
        else {"threshold": head.novelty.threshold, **dict(head.novelty.record)},
    }


def interval(correct: int, n: int) -> list[float] | None:
    """The exact 95% interval on ``correct / n``, rounded; None for an empty row."""
    return [round(x, 4) for x in accuracy_interval(correct, n)] if n else None


def trade_off(
    head: Detector,
    inputs: Mapping[str, FamilyInputs],
    truths: Mapping[str, str],
) -> list[dict[str, Any]]:
    """The family threshold at each operating point its calibration record lists (set on
    the calibration reconstructions, never on these rows), and what it gives on the test
    rows: each known family's accuracy and each unseen autoencoder's share called
    ``unknown``. Reported to weigh the choice, not to make it."""
    points = ((head.config.calibration or {}).get("families") or {}).get("share_quantiles") or {}
    out = []
    for quantile in TRADE_OFF_QUANTILES:
        threshold = points.get(str(quantile))
        if threshold is None:
            continue
        rows = {}
        for label, truth in truths.items():
            if label == "real":
                continue
            found = inputs[label].attribute(head.classes, threshold)
            expected = truth if truth in head.families else "unknown"
            rows[label] = round(sum(f == expected for f in found) / len(found), 4)
        out.append({"quantile": quantile, "threshold": threshold, "right": rows})
    return out


def attribute_sets(
    head: Detector,
    reals: Path,
    groups: Mapping[str, Mapping[str, tuple[str, Path]]],
    tries: int,
    work: Path,
    *,
    cross_check: bool,
) -> dict[str, Any]:
    """Every group of test sets through ``evaluate`` with ``head``: per set its answers'
    shares, end-to-end accuracy with its exact 95% interval and closed-set accuracy; per
    group the confusion matrix (its PNG under ``work``), the closed-set section and the
    trade-off; AEROBLADE's cross-check on the generations where asked."""
    fpr = decision_fpr(head)
    rows: dict[str, Any] = {}
    matrices: dict[str, Any] = {}
    closed: dict[str, Any] = {}
    points: dict[str, Any] = {}
    checked: dict[str, Any] = {}
    work.mkdir(parents=True, exist_ok=True)
    for kind, sets in groups.items():
        evaluation = evaluate(
            head,
            [reals],
            {label: [folder] for label, (_, folder) in sets.items()},
            tries=(tries,),
            n_boot=0,
            family_fpr=fpr,
            families={label: truth for label, (truth, _) in sets.items()},
            cross_check=cross_check and kind == "generated",
        )
        section = evaluation.attribution
        cm = matrix_from_section(section)
        plot_confusion_matrix(cm, work / f"confusion-{kind}.png")
        matrices[kind] = {"table": cm.to_dict(), "markdown": cm.to_markdown()}
        closed[kind] = section["closed_set"]
        truths = {label: truth for label, (truth, _) in sets.items()} | {"real": "real"}
        points[kind] = trade_off(head, evaluation.family_inputs, truths)
        for label, truth in truths.items():
            found = evaluation.families[label]
            shares = {
                answer: round(sum(x == answer for x in found) / len(found), 4)
                for answer in (*head.families, "unknown", None)
            }
            name = "real (held-out)" if label == "real" else label
            expected = truth if truth in head.families or truth == "real" else "unknown"
            correct = sum(x == (None if expected == "real" else expected) for x in found)
            closed_row = section["closed_set"]["sets"].get(label)
            rows[name] = {
                "true": truth,
                "n": len(found),
                "accuracy": shares.get(truth) if truth in head.families else None,
                # right answers (the family; "unknown" for an unseen autoencoder; judged
                # real for a real), with their exact 95% interval
                "right": round(correct / len(found), 4),
                "right_ci95": interval(correct, len(found)),
                "closed_set_accuracy": None if closed_row is None else closed_row["accuracy"],
                "shares": {("real" if k is None else k): v for k, v in shares.items()},
            }
        if "cross_check" in section:
            checked = section["cross_check"]
    return {
        "rows": rows,
        "confusion": matrices,
        "closed_set": closed,
        "trade_off": points,
        "cross_check": checked,
    }


def binary_aucs(
    detector: Detector,
    test_sets: Sequence[tuple[Path, Mapping[str, list[Path]]]],
    n_boot: int,
) -> dict[str, Any]:
    """The detector's binary AUC (one view) with its 95% bootstrap interval on each fake set
    of ``test_sets`` ((reals, {name: folders}) pairs) against those reals, beside the FPR its
    decisions use: how the family head's score compares with a single-family detector's."""
    out: dict[str, Any] = {"decision_fpr": decision_fpr(detector)}
    for real_set, fake_sets in test_sets:
        evaluation = evaluate(detector, [real_set], fake_sets, tries=(1,), n_boot=n_boot)
        clean = evaluation.conditions()[0]
        out |= {
            test: {
                "auc": round(float(metrics["auc"]), 4),
                "ci95": [round(float(x), 4) for x in clean.intervals["generators"][test]["auc"]],
            }
            for test, metrics in clean.generators.items()
        }
    return out


@dataclass(frozen=True)
class SourceTests:
    """The held-out sources' test set: real crops, their reconstructions per test set (as
    ``attribute_sets`` groups, and as ``evaluate``'s generator sets for the binary table)."""

    reals: Path
    groups: dict[str, dict[str, tuple[str, Path]]]
    binary: dict[str, list[Path]]
    crops: int
    source_names: list[str]


def source_sets(
    work: Path, families: Sequence[str], unseen: Sequence[str]
) -> dict[str, tuple[str, Path]]:
    """The held-out sources' reconstruction sets as ``attribute_sets`` asks them, {label:
    (true family, folder)}, where :func:`write_source_tests` writes them under ``work``."""
    suffix = "(held-out sources)"
    recon = work / "heldout-sources" / "reconstructed"
    unseen_root = work / "heldout-sources-unseen"
    return {f"reconstructed by {f} {suffix}": (f, recon / f) for f in families} | {
        f"reconstructed by {t} (unseen) {suffix}": (t, unseen_root / t / "reconstructed")
        for t in unseen
    }


def write_source_tests(
    work: Path,
    cfg: DemoConfig,
    splits: Mapping[str, list[Path]],
    crops: int,
    families: Sequence[tuple[str, Any]],
    unseen: Mapping[str, Path],
    seed: int,
) -> SourceTests:
    """``crops`` crops of the shipped test split's photos (taken in turn from each source:
    sources neither the detectors' training nor their calibration saw), one 128 px crop
    each, through every family's autoencoder and the random unseen ones (the perturbed
    sibling is asked on the held-out photos alone)."""
    photos = photo_sets(work, replace(cfg, photo_limit=crops), splits).test(costly=False)
    dataset = work / "heldout-sources"
    config = ReconstructConfig(crop_size=cfg.eval_size, crops_per_image=1, seed=seed + 5)
    build_aligned_dataset(
        [photos.root],
        dataset,
        autoencoder=list(families),
        subfolder="vae",
        config=config,
        device=cfg.device,
    )
    randoms = {t: d for t, d in unseen.items() if not t.endswith("-perturbed")}
    for tag, folder in randoms.items():
        build_aligned_dataset(
            [photos.root],
            work / "heldout-sources-unseen" / tag,
            autoencoder=[(tag, str(folder))],
            config=config,
            device=cfg.device,
        )
    known = [f for f, _ in families]
    group = source_sets(work, known, list(randoms))
    return SourceTests(
        reals=dataset / "real",
        groups={"held-out-sources": group},
        binary={label: [d] for label, (truth, d) in group.items() if truth in known},
        crops=len(photos.files),
        source_names=sorted(set(photos.sources)),
    )


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

    # 1-2. Training data: every training crop through both autoencoders, and alone; with
    # the demo's photo_crops, the shipped train split's crops of other sources' photos too,
    # as the demo trains ae (real content from more sources than the generators' subjects).
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
    crops = None
    if cfg.photo_crops:
        crops = work / "photos" / "train-crops"
        log(f"and {photo_sets(work, cfg, splits).train_count} shipped train-split crops")

    def aligned(
        name: str, autoencoder: list[tuple[str, str]], subfolder: str | None, per_photo: int
    ) -> list[Path]:
        return aligned_sets(
            work / "pairs" / name,
            train_photos,
            crops,
            autoencoder,
            subfolder,
            replace(pair_config, crops_per_image=per_photo),
            cfg.device,
        )

    both = aligned("both", [(f, pipelines[f]) for f in names], "vae", cfg.train_crops_per_image)
    single = {f: aligned(f, [(f, pipelines[f])], "vae", cfg.train_crops_per_image) for f in names}
    # The outlier class's data: the same photos through the auxiliary autoencoders.
    auxiliary = write_auxiliary_autoencoders(work, seed)
    outliers = aligned(
        "outliers", [(t, str(d)) for t, d in auxiliary.items()], None, budget.outlier_crops
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
    heads = ["two-family"] + (["two-family-no-oe"] if budget.baseline_head else [])
    data = {head: both for head in heads} | {family: single[family] for family in names}
    extra = {head: list(train_generated.items()) for head in heads}
    exposed = {"two-family": outliers}
    trained = work / "detectors-trained"
    for name, sets in data.items():
        if (trained / name / "config.json").is_file():  # a resumed run keeps its training
            log(f"kept the trained ae detector '{name}'")
            continue
        used = [*sets, *exposed.get(name, [])]
        log(f"train ae '{name}' on {', '.join(str(d.name) for d in used)}")
        train_detector(
            sets,
            trained / name,
            train_config,
            generated=extra.get(name, ()),
            outliers=exposed.get(name, ()),
        )
    for head in heads:
        if not (trained / head / NOVELTY_NAME).is_file():
            # A head trained before its novelty statistics (a resumed run): fit them as
            # training does, on the same splits.
            log(f"fit the novelty statistics of '{head}' on its training split")
            add_novelty(trained / head, both, extra[head], train_config, exposed.get(head, []))
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
    log("held-out crops through both families' autoencoders and three unseen ones")
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
    sources_test = None
    if budget.source_crops:
        sources_test = write_source_tests(
            work, cfg, splits, budget.source_crops, sources, unseen, seed
        )
    log(f"each generator's {cfg.generated_images} images from the unseen prompts")
    generated = {f: write_unseen(pipelines[f], work / "generated" / f, cfg) for f in names}
    step("test_images")

    # 4. Attribution with the family head, through `evaluate` as users get it: the held-out
    # reconstructions and the unseen autoencoders' in one matrix (a family the head does not
    # know is right when called "unknown"), the generations in another with AEROBLADE's
    # cross-check; decisions at the views the thresholds were calibrated for.
    groups = {
        "reconstructed": {f"reconstructed by {f}": (f, d) for f, d in recon.items()}
        | {f"reconstructed by {t} (unseen)": (t, d) for t, d in recon_unseen.items()},
        "generated": {f"generated by {f}": (f, d) for f, d in generated.items()},
    }
    head = Detector.from_pretrained(detectors["two-family"], device=cfg.device)
    fpr = decision_fpr(head)
    asked = attribute_sets(head, reals, groups, tries, work, cross_check=True)
    on_sources = None
    if sources_test is not None:
        log("the held-out sources' crops and their reconstructions")
        on_sources = attribute_sets(
            head,
            sources_test.reals,
            sources_test.groups,
            tries,
            work / "sources",
            cross_check=False,
        )
    baseline = None
    if "two-family-no-oe" in detectors:
        log("the same rows through the head without Outlier Exposure")
        other = Detector.from_pretrained(detectors["two-family-no-oe"], device=cfg.device)
        baseline = attribute_sets(
            other, reals, groups, tries, work / "no-oe", cross_check=False
        ) | head_summary(other)
        baseline.pop("cross_check", None)
        if sources_test is not None:
            baseline["held_out_sources"] = attribute_sets(
                other,
                sources_test.reals,
                sources_test.groups,
                tries,
                work / "no-oe" / "sources",
                cross_check=False,
            )["rows"]
    step("attribute")

    # Binary: the family head's score against each single-family detector's.
    binary: dict[str, Any] = {}
    tests = {f"generated by {f}": [d] for f, d in generated.items()}
    tests |= {f"reconstructed by {f}": [d] for f, d in recon.items()}
    test_sets = [(reals, tests)]
    if sources_test is not None:  # the held-out sources' reconstructions vs. their reals
        test_sets.append((sources_test.reals, sources_test.binary))
    for name, directory in detectors.items():
        detector = Detector.from_pretrained(directory, device=cfg.device)
        binary[name] = binary_aucs(detector, test_sets, budget.n_boot)
    step("binary")

    return {
        "benchmark": "attribution",
        "families": {f: pipelines[f] for f in names},
        "unseen_autoencoders": {t: str(p) for t, p in unseen.items()},
        # The family head's extra training data: each generator's images per family.
        "training_generations": {f: cfg.generated_train_images for f in train_generated},
        "perturbation": PERTURBATION,
        "auxiliary_autoencoders": {t: str(p) for t, p in auxiliary.items()},
        "outlier_pairs": sum(len(read_aligned_dataset(d)) for d in outliers),
        "training_pairs": {
            name: sum(len(read_aligned_dataset(d)) for d in sets) for name, sets in data.items()
        },
        **head_summary(head),
        "views_per_image": tries,
        "calibration_crops": len(calibration_photos.files),
        "decision_fpr": fpr,
        "attribution": asked["rows"],
        "confusion": asked["confusion"],
        "closed_set": asked["closed_set"],
        "trade_off": asked["trade_off"],
        "held_out_sources": None
        if on_sources is None
        else {
            "crops": sources_test.crops,
            "sources": sources_test.source_names,
            "attribution": on_sources["rows"],
            "confusion": on_sources["confusion"],
            "closed_set": on_sources["closed_set"],
        },
        "without_outlier_exposure": baseline,
        "binary_auc": binary,
        "cross_check": asked["cross_check"],
        "seconds": seconds,
        "seconds_total": round(time.perf_counter() - start, 1),
        "config": {k: v for k, v in asdict(cfg).items() if k != "method_settings"}
        | {
            "ae_recipe": asdict(cfg.recipe("ae")),
            "heldout_crops": budget.heldout_crops,
            "source_crops": budget.source_crops,
            "outlier_crops": budget.outlier_crops,
        },
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
