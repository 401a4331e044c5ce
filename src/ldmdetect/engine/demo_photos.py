"""The demo's real photographs from other sources: the shipped native-resolution crops of
the photo corpus, split by source (``ldmdetect.io.photo_corpus``). ``ae`` also trains on the
train split's crops, every method is calibrated on the calibration split's sources, and the test
split's sources, which no detector saw, show the share of real photos each stored threshold flags
(the demo's second table).
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ldmdetect.detector import Detector
from ldmdetect.engine.flagged import score_and_flag
from ldmdetect.io.perturb import parse_perturbation
from ldmdetect.io.photo_corpus import photo_source, shipped_photo_crops

if TYPE_CHECKING:
    from ldmdetect.engine.demo_config import DemoConfig


def photo_subject(photo: Path) -> str:
    """A photo's subject from its name ("motorcycle_left" and "_right" are one scene): the
    unit the demo holds out, so no crop of a held-out subject is trained on."""
    return photo.stem.split("_")[0]


@dataclass(frozen=True)
class PhotoSet:
    """Shipped photo crops of one split: a folder with one subfolder per source."""

    root: Path
    files: list[Path]
    sources: list[str]


@dataclass
class PhotoSets:
    """The demo's real photographs from other sources, per split (see DemoConfig)."""

    out: Path
    cfg: DemoConfig
    train_count: int

    def calibration(self, costly: bool) -> PhotoSet:
        return self._subset("calibration", costly)

    def test(self, costly: bool) -> PhotoSet:
        return self._subset("test", costly)

    def _subset(self, split: str, costly: bool) -> PhotoSet:
        limit = self.cfg.costly_photo_limit if costly else self.cfg.photo_limit
        files = _spread(shipped_photo_crops(split), limit, self.cfg.seed)
        root = self.out / "photos" / f"{split}-{limit or 'all'}"
        for f in files:  # one folder per source, as calibrate counts sources
            target = root / photo_source(f) / f.name
            if not target.is_file():
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(f, target)
        files = [root / photo_source(f) / f.name for f in files]
        return PhotoSet(root, files, [f.parent.name for f in files])


def _spread(files: list[Path], limit: int, seed: int) -> list[Path]:
    """``limit`` of ``files`` (all when 0 or more), taken in turn from each source so that a
    subset keeps every source, in a seeded order within each."""
    if not limit or limit >= len(files):
        return list(files)
    by_source: dict[str, list[Path]] = {}
    for f in files:
        by_source.setdefault(photo_source(f), []).append(f)
    rng = np.random.default_rng(seed)
    queues = [list(rng.permutation(len(v))) for v in by_source.values()]
    members = list(by_source.values())
    chosen: list[Path] = []
    while len(chosen) < limit:
        for queue, group in zip(queues, members, strict=True):
            if queue and len(chosen) < limit:
                chosen.append(group[queue.pop()])
    return sorted(chosen)


def photo_sets(out: Path, cfg: DemoConfig, splits: dict[str, list[Path]]) -> PhotoSets:
    """Copy the shipped train-split crops ae reconstructs, leaving out crops of the demo's
    held-out photos (the bundled photos are one of the train split's sources)."""
    heldout = {photo_subject(p) for p in splits["heldout"]}
    target = out / "photos" / "train-crops"
    target.mkdir(parents=True, exist_ok=True)
    count = 0
    for f in shipped_photo_crops("train"):
        if photo_subject(f) not in heldout:
            name = f"{photo_source(f)}__{f.name}"
            if not (target / name).is_file():
                shutil.copyfile(f, target / name)
            count += 1
    return PhotoSets(out, cfg, count)


PHOTO_COLUMNS = ("n", "flagged@fpr=0.01", "upper95@fpr=0.01", "flagged@fpr=0.05")


def photo_rows(
    label: str,
    detector: Detector,
    photos: PhotoSet,
    generated: Mapping[str, Sequence[Path]],
    cfg: DemoConfig,
    recompressed: bool = True,
) -> tuple[dict[str, dict[str, float]], dict[str, dict]]:
    """Rows of the demo's second table: the share of the test split's real photo crops (as
    shipped, and recompressed at JPEG q85 unless ``recompressed`` is False) each stored
    threshold flags, beside the share of each set of generated images (by name: "generated",
    the other family's) it flags.

    Every set is scored as ``scan`` scores it, with the views per image the detector's
    thresholds were calibrated with (its default tries), so the shares are what an operator
    meets; the evaluation's 1-try scores would not match thresholds set on N-try scores."""
    fprs = (0.01, 0.05)
    sets: dict[str, dict] = {}
    n_sources = len(set(photos.sources))
    conditions = [("native", None)]
    if recompressed:
        conditions.append(("jpeg:85", parse_perturbation("jpeg:85")))
    for condition, perturbation in conditions:
        counts, _, _ = score_and_flag(
            detector,
            photos.files,
            fprs,
            sources=photos.sources,
            perturbation=perturbation,
            num_workers=cfg.num_workers,
        )
        sets[f"real photos, {n_sources} unseen sources, {condition}"] = counts
    for name, files in generated.items():
        sets[f"{name} (unseen prompts)"], _, _ = score_and_flag(
            detector, list(files), fprs, num_workers=cfg.num_workers
        )
    rows: dict[str, dict[str, float]] = {}
    for name, counts in sets.items():
        one, five = counts.get("fpr_0.01"), counts.get("fpr_0.05")
        if one is None or five is None:
            continue  # unresolved: nothing is applied, so nothing to report
        rows[f"{label} / {name}"] = {
            "n": one.n,
            "flagged@fpr=0.01": one.share,
            "upper95@fpr=0.01": one.upper_95,
            "flagged@fpr=0.05": five.share,
        }
    return rows, {name: {k: v.to_dict() for k, v in c.items()} for name, c in sets.items()}
