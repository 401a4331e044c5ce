"""What flows through a method's steps: one image's *sample*, a *batch* of them, and the few
verbs every method applies to them (collate, pick rows, move to a device, cut each view's
window from a per-image map). Apart from the registry so that the method interface reads on
its own."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from ldmdetect.config import DetectorConfig

# One image's model input: tensors with a leading views dimension (T, ...) for per-view data
# (crops), or per-image tensors (a resized whole image); plus the "prompt" string and, where
# a feature step reads it (see ``Method.needs_content_id``), the "id" string.
Sample = dict[str, Any]
Batch = dict[str, Any]
# picklable: (decoded RGB image, rng or None) -> sample. rng None = inference (deterministic).
Transform = Callable[[Image.Image, "np.random.Generator | None"], Sample]


def collate_samples(samples: Sequence[Sample]) -> Batch:
    batch: Batch = {}
    for key in samples[0]:
        values = [s[key] for s in samples]
        batch[key] = torch.stack(values) if isinstance(values[0], torch.Tensor) else values
    return batch


def subset(batch: Batch, indices: Sequence[int]) -> Batch:
    """The rows ``indices`` of a batch (tensors indexed, lists picked)."""
    index = torch.as_tensor(list(indices), dtype=torch.long)
    return {
        k: v[index.to(v.device)] if isinstance(v, torch.Tensor) else [v[i] for i in indices]
        for k, v in batch.items()
    }


def batch_to(batch: Batch, device: torch.device) -> Batch:
    """Move a batch's tensors to ``device`` (non-blocking); strings stay as they are."""
    return {
        k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v
        for k, v in batch.items()
    }


def view_windows(maps: torch.Tensor, batch: Batch, side: int, *, factor: int = 1) -> torch.Tensor:
    """Every view's window of per-image maps: (B, C, H, W) -> (B * T, C, side, side), image-major.

    A map computed once per image (a DIRE map, decoded inversions, LaRE's error on the latent
    grid) is cut and flipped exactly as the batch's crops were, from the views' ``offsets``
    (pixels) and ``flips``; ``factor`` puts pixel offsets on a coarser grid (the VAE's 8).
    """
    windows = []
    for i in range(maps.shape[0]):
        for (y, x), flip in zip(batch["offsets"][i].tolist(), batch["flips"][i], strict=True):
            top, left = y // factor, x // factor
            window = maps[i, :, top : top + side, left : left + side]
            windows.append(window.flip(-1) if flip else window)
    return torch.stack(windows)


def view_sampling(config: DetectorConfig, tries: int, train: bool) -> dict[str, Any]:
    """The :class:`~ldmdetect.io.crops.AlignedViewSampling` fields of a transform that
    :meth:`Method.transform` makes with ``tries`` and ``train``: ``tries`` views seeded by
    the config's ``try_seed`` at inference, one random view in training."""
    return {"tries": tries, "try_seed": config.try_seed, "train": train}


__all__ = [
    "Batch",
    "Sample",
    "Transform",
    "batch_to",
    "collate_samples",
    "subset",
    "view_sampling",
    "view_windows",
]
