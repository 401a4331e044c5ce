"""``ae``'s evidence map: occlusion of the classifier's "not real" logit, tiled over the image.

Why occlusion over the classifier, and not the other candidates:

- ae scans with its classifier alone, no autoencoder. A residual against the most likely
  family's reconstruction would load an autoencoder per family at explain time, which the
  method exists not to need, and would show where that autoencoder changes the image, not
  what the detector read.
- Gradient x input costs one backward pass where occlusion costs a forward pass per patch,
  but it is a local linearisation: on the high-frequency trace a decoder leaves, per-pixel
  gradients of a ReLU network flip sign from pixel to pixel, and summed over a region they are
  a first-order guess of what removing it would do. Occlusion measures exactly that, it runs
  under ``torch.inference_mode`` like the rest of ``Detector.explain``, and its batched
  forward passes give the same numbers on every run (GPU backward passes need not).

The map: the image is tiled with the detector's crop size (the last tile in each row and
column flush with the edge, overlaps averaged), so a large image gets a map over all of it. In
each tile a square of ``PATCH`` x ``PATCH`` cells of a ``GRID`` x ``GRID`` grid slides by one
cell (49 passes for 8 and 2) and is filled with the tile's mean colour. A cell's drop is the
mean fall of the "not real" logit (the logit itself for one output; log(1 - P(real)) -
log P(real) for K classes) over the squares that cover it. The tile's map is its drops scaled
from 0 (no drop, or the lowest drop where some are negative: regions whose removal makes the
tile look more generated) to the tile's score, 1 - P(real), at the highest drop. Brightness
says how sure the detector is of the tile, the spread where in it the evidence lies: a real
tile stays dark however its drops fall, a uniformly generated one is bright all over, and a
generated tile where no occlusion lowers the score still shows where it lowers it least rather
than going black. Values in [0, 1], 1 = most evidence of generation, as every method's map.

Cost: 1 + (GRID - PATCH + 1)^2 classifier passes per tile; 50 for a 256 px crop.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch import nn

from ldmdetect.config import DetectorConfig
from ldmdetect.io.crops import Box, ensure_min_size
from ldmdetect.methods.registry import Batch, Explanation, Sample

#: Cells per tile side, and the occluding square's side in cells (it slides by one cell).
GRID = 8
PATCH = 2
#: Classifier inputs per forward pass.
CHUNK = 64

# A batch of uint8 crops (N, 3, S, S) -> the classifier's logits (N, K), K >= 1.
Classify = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class WholeImage:
    """Image -> the whole image (upscaled to the crop size where smaller) as a uint8 (H, W, 3)
    array: what the map is tiled over. An array, not a tensor, so that images of different
    sizes collate into a list; only the explain hook's samples carry it."""

    size: int

    def __call__(self, image: Image.Image, rng: np.random.Generator | None = None) -> Sample:
        image = ensure_min_size(image.convert("RGB"), self.size)
        return {"whole": np.array(image, dtype=np.uint8, copy=True)}


def _starts(length: int, size: int) -> list[int]:
    starts = list(range(0, length - size + 1, size))
    if starts[-1] + size < length:
        starts.append(length - size)  # flush with the edge, overlapping its neighbour
    return starts


def tile_boxes(width: int, height: int, size: int) -> list[Box]:
    """Boxes of side ``size`` covering the whole image, row by row."""
    if width < size or height < size:
        raise ValueError(f"image {width}x{height} is smaller than the tile size {size}")
    return [
        (left, top, left + size, top + size)
        for top in _starts(height, size)
        for left in _starts(width, size)
    ]


def not_real_logit(logits: torch.Tensor) -> torch.Tensor:
    """Logits (N, K) -> (N,) whose sigmoid is 1 - P(real): the logit itself for one output
    (P(generated)), logsumexp of the other classes minus the real one's for K classes."""
    logits = logits.double()
    if logits.shape[-1] == 1:
        return logits[..., 0]
    return torch.logsumexp(logits[..., 1:], dim=-1) - logits[..., 0]


def _edges(size: int) -> list[int]:
    return [round(i * size / GRID) for i in range(GRID + 1)]


def occluded(tile: torch.Tensor) -> torch.Tensor:
    """A uint8 tile (3, S, S) -> (1 + P, 3, S, S) float: the tile, then one copy per position
    of the occluding square (row by row), filled with the tile's mean colour."""
    size = tile.shape[-1]
    edges = _edges(size)
    fill = tile.float().mean(dim=(1, 2))[:, None, None]
    copies = [tile.float()]
    for i in range(GRID - PATCH + 1):
        for j in range(GRID - PATCH + 1):
            copy = tile.float().clone()
            copy[:, edges[i] : edges[i + PATCH], edges[j] : edges[j + PATCH]] = fill
            copies.append(copy)
    return torch.stack(copies)


def tile_map(logit: torch.Tensor, drops: torch.Tensor, size: int) -> torch.Tensor:
    """The tile's "not real" logit () and its occlusion drops (P,) -> its (S, S) map."""
    positions = GRID - PATCH + 1
    drops = drops.reshape(positions, positions)
    total = drops.new_zeros(GRID, GRID)
    count = drops.new_zeros(GRID, GRID)
    for di in range(PATCH):
        for dj in range(PATCH):
            total[di : di + positions, dj : dj + positions] += drops
            count[di : di + positions, dj : dj + positions] += 1
    cells = total / count
    # Shares from 0 at the lowest drop or at no drop, whichever is lower, to 1 at the highest
    # (see the module docstring).
    low = cells.min().clamp_max(0)
    spread = cells.max() - low
    share = (cells - low) / spread if spread > 0 else torch.zeros_like(cells)
    cells = torch.sigmoid(logit) * share
    edges = _edges(size)
    sides = torch.diff(torch.tensor(edges))
    rows = cells.repeat_interleave(sides.to(cells.device), dim=0)
    return rows.repeat_interleave(sides.to(cells.device), dim=1).clamp(0, 1)


def occlusion_map(whole: np.ndarray, size: int, classify: Classify) -> np.ndarray:
    """An (H, W, 3) uint8 image -> its (H, W) float32 evidence map in [0, 1] (see the module
    docstring), from ``classify`` (uint8-valued crops (N, 3, S, S) -> logits (N, K))."""
    height, width = whole.shape[:2]
    pixels = torch.from_numpy(np.ascontiguousarray(whole)).permute(2, 0, 1)
    total = torch.zeros(height, width, dtype=torch.float64)
    count = torch.zeros(height, width, dtype=torch.float64)
    for left, top, right, bottom in tile_boxes(width, height, size):
        views = occluded(pixels[:, top:bottom, left:right])
        logits = torch.cat(
            [not_real_logit(classify(views[i : i + CHUNK])) for i in range(0, len(views), CHUNK)]
        ).cpu()
        total[top:bottom, left:right] += tile_map(logits[0], logits[0] - logits[1:], size)
        count[top:bottom, left:right] += 1
    return (total / count).float().numpy()


def explain_batch(
    model: nn.Module,
    batch: Batch,
    config: DetectorConfig,
    classify: Callable[[nn.Module, torch.Tensor, DetectorConfig], torch.Tensor],
) -> list[Explanation]:
    """One :class:`Explanation` per image of a batch from :class:`WholeImage`: the occlusion
    map over the whole image (its box: all of it, as upscaled to the crop size if smaller).
    ``classify(model, crops (1, N, 3, S, S), config)`` -> logits (1, N, K)."""
    device = next(model.parameters()).device
    size = config.input_size

    def run(views: torch.Tensor) -> torch.Tensor:
        logits = classify(model, views.to(device)[None], config)[0]
        return logits.reshape(len(views), -1)

    out = []
    for whole in batch["whole"]:
        evidence = occlusion_map(whole, size, run)
        height, width = evidence.shape
        out.append(Explanation(evidence=evidence, box=(0, 0, width, height)))
    return out
