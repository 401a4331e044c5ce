"""SynRIS pair files: each fake next to the real it is paired with (``pairs.csv``).

Written by ``ldmdetect synris`` and read by ``ldmdetect evaluate --pairs``; the format lives
here, below both, so neither stage imports the other for it.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ldmdetect.io.files import atomic_write_text

PAIR_COLUMNS = ("fake", "real", "similarity")


@dataclass
class Pair:
    fake: str
    real: str
    similarity: float  # NaN where the pair was given rather than found


def write_pairs_csv(pairs: Sequence[Pair], path: str | os.PathLike) -> Path:
    """``fake,real,similarity`` rows, written atomically."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(PAIR_COLUMNS)
    for pair in pairs:
        writer.writerow([pair.fake, pair.real, f"{pair.similarity:.6f}"])
    return atomic_write_text(path, buffer.getvalue())


def read_pairs_csv(path: str | os.PathLike) -> list[Pair]:
    """Pairs from a ``pairs.csv``; relative paths are taken relative to the CSV's folder."""
    path = Path(path)
    base = path.parent
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in ("fake", "real") if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: no column(s) {missing}; expected {list(PAIR_COLUMNS)}")
        pairs = []
        for row in reader:
            similarity = row.get("similarity")
            pairs.append(
                Pair(
                    str(base / row["fake"]),
                    str(base / row["real"]),
                    float(similarity) if similarity not in (None, "") else math.nan,
                )
            )
    if not pairs:
        raise ValueError(f"{path}: no pairs")
    return pairs
