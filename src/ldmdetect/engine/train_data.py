"""What training reads: the train/validation splits (by source image, never by crop) and the
datasets of aligned pairs and labelled images, batched for a method."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ldmdetect.engine.reconstruct import AlignedPair
from ldmdetect.engine.train_config import TrainConfig
from ldmdetect.io.images import ImageDecodeError, load_image
from ldmdetect.io.labeled import Example
from ldmdetect.methods.registry import Batch, Method, PrepareImage

# ---------------------------------------------------------------------------------- splitting


def split_by_source(
    pairs: Sequence[AlignedPair], val_fraction: float, seed: int
) -> tuple[list[AlignedPair], list[AlignedPair]]:
    """Train/val split by source image, never by crop: crops of one photo share content."""
    if not pairs:
        return [], []
    train, val = _split_groups(list(pairs), [p.source for p in pairs], val_fraction, seed)
    return train, val


def split_examples(
    examples: Sequence[Example], val_fraction: float, seed: int
) -> tuple[list[Example], list[Example]]:
    """Split by group, separately within each class, so validation holds reals and fakes."""
    if not examples:
        return [], []
    train: list[Example] = []
    val: list[Example] = []
    for label in sorted({e.label for e in examples}):
        members = [e for e in examples if e.label == label]
        t, v = _split_groups(members, [e.group for e in members], val_fraction, seed + label)
        train += t
        val += v
    return train, val


def _split_groups(items: list, groups: list[str], val_fraction: float, seed: int):
    if val_fraction <= 0:
        return items, []
    names = sorted(set(groups))
    if len(names) < 2:
        raise ValueError("a validation split needs examples from at least 2 source images")
    rng = np.random.default_rng(seed)
    n_val = min(len(names) - 1, max(1, round(val_fraction * len(names))))
    val_names = set(rng.permutation(names)[:n_val].tolist())
    train = [x for x, g in zip(items, groups, strict=True) if g not in val_names]
    val = [x for x, g in zip(items, groups, strict=True) if g in val_names]
    return train, val


# ----------------------------------------------------------------------------------- datasets


class PairDataset(Dataset):
    """Aligned pairs -> [(real sample, 0), (reconstruction sample, label), ...], one per
    reconstruction, all augmented alike.

    A reconstruction's label is 1, or with ``families`` (a family head) 1 + the index of its
    family there. The random stream depends on (seed, epoch, index) only; every member of a
    pair replays it.
    """

    def __init__(
        self,
        pairs: Sequence[AlignedPair],
        prepare: PrepareImage,
        seed: int,
        families: Sequence[str] = (),
    ) -> None:
        self.pairs, self.prepare, self.seed, self.epoch = list(pairs), prepare, seed, 0
        self.families = list(families)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> list[tuple[dict, int]] | Skipped:
        pair = self.pairs[index]
        members = [(pair.real, 0)] + [
            (path, 1 + self.families.index(family) if self.families else 1)
            for family, path in pair.reconstructions
        ]
        out = []
        for path, label in members:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            try:
                image = load_image(path)
            except ImageDecodeError as err:  # the pair is unusable without all its members
                return Skipped(str(path), err.reason)
            out.append((self.prepare(image, path=path, rng=rng), label))
        return out


class ExampleDataset(Dataset):
    """Labelled images -> [(sample, label)]; random stream from (seed, epoch, index)."""

    def __init__(self, examples: Sequence[Example], prepare: PrepareImage, seed: int) -> None:
        self.examples, self.prepare, self.seed, self.epoch = list(examples), prepare, seed, 0

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> list[tuple[dict, int]] | Skipped:
        ex = self.examples[index]
        rng = np.random.default_rng([self.seed, self.epoch, index])
        try:
            image = load_image(ex.path)
        except ImageDecodeError as err:
            return Skipped(ex.path, err.reason)
        sample = self.prepare(image, path=ex.path, class_name=ex.class_name, rng=rng)
        return [(sample, ex.label)]


class JoinedDataset(torch.utils.data.ConcatDataset):
    """Several training datasets as one (aligned pairs and family-labelled generations),
    each told the epoch, so every member's random stream still depends on (seed, epoch,
    index) alone."""

    @property
    def epoch(self) -> int:
        return getattr(self.datasets[0], "epoch", 0)

    @epoch.setter
    def epoch(self, value: int) -> None:
        for dataset in self.datasets:
            dataset.epoch = value


@dataclass(frozen=True)
class Skipped:
    """A file that could not be decoded: reported in the training summary, never fatal."""

    path: str
    reason: str


class _Collate:
    """Flatten [(sample, label), ...] lists into one method batch, a label tensor and the
    files skipped in this batch."""

    def __init__(self, method: Method) -> None:
        self.method = method

    def __call__(self, items: list) -> tuple[Batch | None, torch.Tensor, list[Skipped]]:
        skipped = [item for item in items if isinstance(item, Skipped)]
        flat = [pair for item in items if not isinstance(item, Skipped) for pair in item]
        if not flat:
            return None, torch.zeros(0), skipped
        batch = self.method.collate([s for s, _ in flat])
        return batch, torch.tensor([float(y) for _, y in flat]), skipped


def data_loader(dataset: Dataset, method: Method, cfg: TrainConfig, shuffle: bool) -> DataLoader:
    """Batches of ``cfg.batch_size`` items, shuffled from ``cfg.seed`` where asked."""
    return DataLoader(
        dataset,
        batch_size=cfg.batch_size,
        shuffle=shuffle,
        num_workers=cfg.num_workers,
        collate_fn=_Collate(method),
        generator=torch.Generator().manual_seed(cfg.seed),
    )
