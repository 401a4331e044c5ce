"""Labelled training images: real and generated folders, or the GenImage layout.

Most detectors train on real vs. generated images (``ae`` also trains on aligned pairs). Each
example carries a group, the unit a train/validation split keeps together, and a class name
where the layout gives one (it fills the prompt template of generator-conditioned features).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ldmdetect.io.datasets import resolve_sources
from ldmdetect.io.prompts import genimage_class

REAL, FAKE = 0, 1
GENIMAGE_FOLDERS = {"nature": REAL, "ai": FAKE}


@dataclass(frozen=True)
class Example:
    path: str
    label: int  # 0 real, 1 generated
    group: str  # examples sharing a group never straddle the train/validation split
    class_name: str | None = None


def read_labeled(
    real: Sequence[str | os.PathLike], fake: Sequence[str | os.PathLike]
) -> list[Example]:
    """Examples from real and generated folders or CSV manifests; each image is its own group."""
    examples = []
    for label, sources in ((REAL, real), (FAKE, fake)):
        for source in sources:
            for path in resolve_sources(source):
                examples.append(Example(str(path), label, str(path), genimage_class(path)))
    return examples


def read_genimage(root: str | os.PathLike, split: str = "train") -> list[Example]:
    """``<generator>/<split>/{nature,ai}`` under ``root`` (or ``<split>/...`` in ``root``).

    GenImage names files by ImageNet class (``n01440764_*.JPEG``, ``000_*.png``), so the
    class name comes from the file name.
    """
    root = Path(root)
    generators = (
        [root] if (root / split).is_dir() else sorted(p for p in root.iterdir() if p.is_dir())
    )
    examples = []
    for generator in generators:
        for folder, label in GENIMAGE_FOLDERS.items():
            directory = generator / split / folder
            if directory.is_dir():
                for path in resolve_sources(directory):
                    examples.append(Example(str(path), label, str(path), genimage_class(path)))
    if not examples:
        raise ValueError(f"{root}: no GenImage-layout images (<generator>/{split}/{{nature,ai}})")
    return examples
