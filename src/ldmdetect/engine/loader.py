"""Decode and prepare files in DataLoader workers, turning each failure into a row, not a crash.

Scanning millions of uploads must never stop on one bad file, and decoding is the CPU-bound
part, so every per-file loop in ldmdetect goes through ``load_each``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch.utils.data import DataLoader, Dataset

from ldmdetect.io.images import ImageDecodeError


@dataclass
class LoadResult:
    """What became of one file: a value, or the reason it failed."""

    index: int
    path: str
    value: Any = None
    error: str | None = None


class _EachFile(Dataset):
    def __init__(self, paths: Sequence[str | Path], fn: Callable[[str], Any]) -> None:
        self.paths = [str(p) for p in paths]
        self.fn = fn

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> LoadResult:
        path = self.paths[index]
        try:
            return LoadResult(index, path, self.fn(path))
        except ImageDecodeError as err:
            return LoadResult(index, path, error=err.reason)
        except Exception as err:  # one file's failure of any kind must not end the run
            return LoadResult(index, path, error=f"{type(err).__name__}: {err}")


def default_workers() -> int:
    """Decoding processes to run beside the model: one core is left to the main process."""
    return max(0, min(4, (os.cpu_count() or 1) - 1))


def _single(item: LoadResult) -> LoadResult:
    return item


def load_each(
    paths: Sequence[str | Path],
    fn: Callable[[str], Any],
    *,
    num_workers: int = 0,
    prefetch: int = 8,
) -> Iterator[LoadResult]:
    """Apply ``fn`` to every path (in order), in ``num_workers`` processes when > 0.

    ``prefetch`` is how many files may be ready ahead of the consumer, in all: set it to a
    device batch (or two) so that workers keep decoding while the model runs on the last one.
    ``fn`` must be picklable (a module-level function or a dataclass instance) for workers.
    """
    loader = DataLoader(
        _EachFile(paths, fn),
        batch_size=None,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=_single,
        prefetch_factor=max(2, -(-prefetch // num_workers)) if num_workers > 0 else None,
    )
    yield from loader
