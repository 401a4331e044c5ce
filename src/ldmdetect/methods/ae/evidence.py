"""``ae``'s evidence map: what each region of the image adds to the classifier's "not real"
logit, to first order (gradient x input against the tile's mean colour), tiled over the image.

Why this, and not the other candidates:

- ae scans with its classifier alone, no autoencoder. A residual against the most likely
  family's reconstruction would load an autoencoder per family at explain time, which the
  method exists not to need, and would show where that autoencoder changes the image, not
  what the detector read.
- Occlusion (fill a square with the tile's mean colour, see how far the logit falls) measures
  a region's part exactly, but costs a forward pass per square. Gradient x (input - mean
  colour), summed over a cell, is the first-order estimate of that same fall (the Taylor
  expansion of the logit between the tile and the tile with the cell filled), from one
  forward and one backward pass per tile. Measured with the default EfficientNetV2-B0 at
  256 px on one CPU thread, a 512 px image (4 tiles): 27 s for occlusion (a 2-cell square
  sliding by one cell on an 8 x 8 grid: 49 passes a tile), 0.6 s for this; a 1024 px image
  takes 2.5 s, short enough for the service to draw the map while a person waits. Summing
  over a cell averages out the per-pixel gradient's sign flips on a decoder's
  high-frequency trace; on the tests' half-photo, half-reconstruction crops both maps put
  the evidence on the reconstructed half, occlusion by a wider margin. It is deterministic
  on the CPU (GPU backward kernels may differ at rounding level between runs).

The map: the image is tiled with the detector's crop size (the last tile in each row and
column flush with the edge, overlaps averaged), so a large image gets a map over all of it.
Each tile is cut into a ``GRID`` x ``GRID`` grid of cells; a cell's contribution is the sum
over its pixels and channels of d(logit)/d(pixel) x (pixel - the tile's mean colour), where
the logit is the "not real" one (the logit itself for one output; log(1 - P(real)) -
log P(real) for K classes). The tile's map is its contributions scaled from 0 (none, or the
lowest where some are negative: regions that make the tile look real) to the tile's score,
1 - P(real), at the highest. Brightness says how sure the detector is of the tile, the spread
where in it the evidence lies: a real tile stays dark however its contributions fall, a
uniformly generated one is bright all over, and a generated tile whose cells all pull towards
"real" still shows which pull least rather than going black. Values in [0, 1], 1 = most
evidence of generation, as every method's map.

The model runs with gradients only for this: ``Detector.explain`` runs in inference mode,
which the map leaves for the backward pass (the weights are not changed).
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

#: Cells per tile side: 32 px cells on a 256 px tile (finer cells sum fewer gradients, and
#: the map gets noisier: on the tests' 64 px tiles, 16 cells a side halve the margin by which
#: the map tells a reconstructed half from a photo's).
GRID = 8
#: Tiles per forward and backward pass (the backward keeps every activation: a bound on memory).
CHUNK = 8

# Float crops (N, 3, S, S) with uint8 values -> the classifier's logits (N, K), K >= 1.
Logits = Callable[[torch.Tensor], torch.Tensor]


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


def _cells(size: int) -> torch.Tensor:
    """The cell (0 to ``GRID`` - 1, fewer on tiles under ``GRID`` px) of each pixel along a
    tile side of ``size``: ``GRID`` runs of near-equal length."""
    grid = min(GRID, size)
    return torch.arange(size) * grid // size


def cell_sums(values: torch.Tensor) -> torch.Tensor:
    """(N, S, S) -> (N, G, G): the sum over each cell (G = ``GRID``, or S if smaller)."""
    cells = _cells(values.shape[-1]).to(values.device)
    grid = int(cells[-1]) + 1
    rows = values.new_zeros(len(values), grid, values.shape[-1]).index_add_(1, cells, values)
    return rows.new_zeros(len(values), grid, grid).index_add_(2, cells, rows)


def contributions(tiles: torch.Tensor, logits_of: Logits) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8-valued tiles (N, 3, S, S) -> their "not real" logits (N,) and each cell's
    first-order contribution to it against the tile's mean colour (N, G, G), G as in
    :func:`cell_sums`."""
    with torch.inference_mode(False), torch.enable_grad():
        pixels = tiles.float().clone().requires_grad_(True)
        logit = not_real_logit(logits_of(pixels))
        (gradient,) = torch.autograd.grad(logit.sum(), pixels)
    pixels = pixels.detach()
    fill = pixels.mean(dim=(2, 3), keepdim=True)
    per_pixel = (gradient * (pixels - fill)).sum(dim=1).double()
    return logit.detach().cpu(), cell_sums(per_pixel).cpu()


def tile_map(logit: torch.Tensor, cells: torch.Tensor, size: int) -> torch.Tensor:
    """A tile's "not real" logit () and its cells' contributions (G, G) -> its (S, S)
    map (the scale: the module docstring)."""
    low = cells.min().clamp_max(0)
    spread = cells.max() - low
    share = (cells - low) / spread if spread > 0 else torch.zeros_like(cells)
    cells = torch.sigmoid(logit) * share
    index = _cells(size)
    return cells[index][:, index].clamp(0, 1)


def evidence_over(whole: np.ndarray, size: int, logits_of: Logits) -> np.ndarray:
    """An (H, W, 3) uint8 image -> its (H, W) float32 evidence map in [0, 1] (see the module
    docstring); ``logits_of``: uint8-valued float crops (N, 3, S, S) -> logits (N, K)."""
    height, width = whole.shape[:2]
    pixels = torch.from_numpy(np.ascontiguousarray(whole)).permute(2, 0, 1)
    boxes = tile_boxes(width, height, size)
    total = torch.zeros(height, width, dtype=torch.float64)
    count = torch.zeros(height, width, dtype=torch.float64)
    for first in range(0, len(boxes), CHUNK):
        chunk = boxes[first : first + CHUNK]
        tiles = torch.stack([pixels[:, t:b, left:r] for left, t, r, b in chunk])
        logits, cells = contributions(tiles, logits_of)
        for (left, top, right, bottom), logit, tile_cells in zip(chunk, logits, cells, strict=True):
            total[top:bottom, left:right] += tile_map(logit, tile_cells, size)
            count[top:bottom, left:right] += 1
    return (total / count).float().numpy()


def explain_batch(
    model: nn.Module,
    batch: Batch,
    config: DetectorConfig,
    classify: Callable[[nn.Module, torch.Tensor, DetectorConfig], torch.Tensor],
) -> list[Explanation]:
    """One :class:`Explanation` per image of a batch from :class:`WholeImage`: the map over
    the whole image (its box: all of it, as upscaled to the crop size if smaller).
    ``classify(model, crops (1, N, 3, S, S), config)`` -> logits (1, N, ...)."""
    device = next(model.parameters()).device

    def logits_of(tiles: torch.Tensor) -> torch.Tensor:
        logits = classify(model, tiles.to(device)[None], config)[0]
        return logits.reshape(len(tiles), -1)

    out = []
    for whole in batch["whole"]:
        evidence = evidence_over(whole, config.input_size, logits_of)
        height, width = evidence.shape
        out.append(Explanation(evidence=evidence, box=(0, 0, width, height)))
    return out
